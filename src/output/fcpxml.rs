//! Final Cut Pro XML (`.fcpxml`, version 1.9): the video as an asset, and a project whose
//! sequence holds one `asset-clip` per scene on its spine, each with a marker at the
//! keyframe (`value` the caption on one line, `note` the caption as written).
//!
//! Times are rational seconds in frames of the video (`120/30s`, `1001/30000s` per frame at
//! 29.97), the form Final Cut Pro writes. The asset's `media-rep` points at the video with a
//! `file://` URL when the analysis holds an absolute path (a relative path stays relative:
//! Final Cut Pro needs it absolute, which `keyscribe export` arranges when the video is found).

use super::scenes::{media_url, SceneList};
use super::{file_name, one_line};
use crate::analysis::Analysis;
use crate::time::FrameRate;

/// The scenes of `analysis` as an FCPXML 1.9 document (`\n` line ends).
pub fn render(analysis: &Analysis, scenes: &SceneList) -> String {
    let rate = scenes.rate;
    let time = |frames: u64| rational_time(rate, frames);
    let name = file_name(&analysis.video.path);
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    let total = time(scenes.total_frames);
    let video = &analysis.video;
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE fcpxml>\n<fcpxml version=\"1.9\">\n",
    );
    out.push_str("  <resources>\n");
    out.push_str(&format!(
        "    <format id=\"r1\" frameDuration=\"{}\" width=\"{}\" height=\"{}\"/>\n",
        time(1),
        video.width,
        video.height
    ));
    out.push_str(&format!(
        "    <asset id=\"r2\" name=\"{}\" start=\"0s\" duration=\"{total}\" hasVideo=\"1\" format=\"r1\" videoSources=\"1\">\n",
        attribute(stem)
    ));
    out.push_str(&format!(
        "      <media-rep kind=\"original-media\" src=\"{}\"/>\n    </asset>\n  </resources>\n",
        attribute(&media_url(&video.path))
    ));
    out.push_str(&format!(
        "  <library>\n    <event name=\"keyscribe\">\n      <project name=\"{}\">\n        \
         <sequence format=\"r1\" duration=\"{total}\" tcStart=\"0s\" tcFormat=\"NDF\">\n          <spine>\n",
        attribute(stem)
    ));
    for scene in &scenes.scenes {
        let start = time(scene.start_frame);
        out.push_str(&format!(
            "            <asset-clip ref=\"r2\" name=\"Scene {:03}\" offset=\"{start}\" start=\"{start}\" duration=\"{}\" format=\"r1\" tcFormat=\"NDF\">\n",
            scene.number,
            time(scene.frames())
        ));
        let note = analysis.keyframes[scene.keyframe]
            .caption
            .as_deref()
            .map(str::trim)
            .unwrap_or_default();
        out.push_str(&format!(
            "              <marker start=\"{}\" duration=\"{}\" value=\"{}\" note=\"{}\"/>\n            </asset-clip>\n",
            time(scene.keyframe_frame),
            time(1),
            attribute(scene.caption.as_deref().unwrap_or_default()),
            attribute(note),
        ));
    }
    out.push_str(
        "          </spine>\n        </sequence>\n      </project>\n    </event>\n  </library>\n</fcpxml>\n",
    );
    out
}

/// `frames` frames at `rate` as FCPXML time: `0s`, or `N/Ds` with the frame duration's
/// denominator (`120/30s`, `3003/30000s`).
pub fn rational_time(rate: FrameRate, frames: u64) -> String {
    if frames == 0 {
        return "0s".to_string();
    }
    format!(
        "{}/{}s",
        frames * u64::from(rate.denominator()),
        rate.numerator()
    )
}

/// Text for a double-quoted XML attribute: one line (XML would turn line breaks into spaces
/// anyway), invisible characters dropped (most control characters are not allowed in XML at
/// all), markup characters as references.
fn attribute(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in one_line(text).chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            // Not characters in XML 1.0.
            '\u{FFFE}' | '\u{FFFF}' => escaped.push('\u{FFFD}'),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::scenes::scene_list;
    use crate::output::tests::analysis;

    #[test]
    fn rational_times_count_frames() {
        let thirty = FrameRate::from_fps(30.0).unwrap();
        assert_eq!(rational_time(thirty, 0), "0s");
        assert_eq!(rational_time(thirty, 120), "120/30s");
        let ntsc = FrameRate::from_fps(29.97).unwrap();
        assert_eq!(rational_time(ntsc, 1), "1001/30000s");
        assert_eq!(rational_time(ntsc, 3), "3003/30000s");
    }

    #[test]
    fn one_asset_clip_per_scene_with_a_marker() {
        let mut analysis = analysis([Some("Tom & \"Jerry\" <b>\nrun"), None, Some("c\u{1}")]);
        analysis.video.path = "/v/My clip.mp4".into();
        let xml = render(&analysis, &scene_list(&analysis).unwrap());
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE fcpxml>\n<fcpxml version=\"1.9\">\n"));
        assert_eq!(xml.matches("<asset-clip ").count(), 3);
        assert_eq!(xml.matches("<marker ").count(), 3);
        assert!(xml
            .contains("<format id=\"r1\" frameDuration=\"1/25s\" width=\"640\" height=\"360\"/>"));
        assert!(xml.contains("src=\"file:///v/My%20clip.mp4\""));
        assert!(xml.contains(
            "<asset-clip ref=\"r2\" name=\"Scene 002\" offset=\"100/25s\" start=\"100/25s\" duration=\"113/25s\""
        ));
        assert!(xml.contains(
            "<marker start=\"38/25s\" duration=\"1/25s\" value=\"Tom &amp; &quot;Jerry&quot; &lt;b&gt; run\" \
             note=\"Tom &amp; &quot;Jerry&quot; &lt;b&gt; run\"/>"
        ));
        assert!(
            xml.contains("value=\"c\""),
            "control characters are dropped"
        );
        assert!(xml.contains("<sequence format=\"r1\" duration=\"300/25s\""));
        // Every element opened is closed, in order.
        let mut open: Vec<&str> = Vec::new();
        for tag in xml
            .split('<')
            .skip(1)
            .map(|rest| &rest[..rest.find('>').unwrap()])
        {
            if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
                continue;
            }
            let name = tag.split_whitespace().next().unwrap();
            match name.strip_prefix('/') {
                Some(closing) => assert_eq!(open.pop(), Some(closing)),
                None => open.push(name),
            }
        }
        assert!(open.is_empty(), "{open:?}");
    }
}
