//! The HTML report: one self-contained file with the keyframes' pictures, timecodes and
//! captions, a timeline of the change score, the summary and chapters, and a filter box that
//! searches the captions offline.
//!
//! The file loads nothing: pictures are `data:` URIs, the style sheet and script are inline,
//! and a Content-Security-Policy allows only those (by hash), so even text that slipped past
//! escaping could not run a script or fetch anything. Nothing slips past escaping by
//! construction: the page is built in a [`markup::Html`] buffer that takes text only as
//! [`Escaped`], which only escaping makes (see [`markup`]).
//!
//! Every time in the report is written `HH:MM:SS.mmm`, as in the analysis document and
//! WebVTT; lengths of time are durations (`4 s`, `12 min 34 s`).
//!
//! The filter box matches every word typed against each caption (and timecode), hides the
//! other keyframes, their chapters' headings when emptied, and dims their timeline markers.
//! A link can open the report filtered: `report.html?q=red+car`.

mod format;
pub mod markup;
mod page;
mod timeline;

pub use markup::Escaped;

use crate::analysis::{Analysis, FrameEmbeddings};
use markup::Html;

const STYLE: &str = include_str!("report.css");
const SCRIPT: &str = include_str!("report.js");

/// What the report shows besides the analysis; the caller fetches it (the report never
/// opens the video or the sidecar itself).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportInputs {
    /// One encoded picture (JPEG, PNG or WebP) per keyframe, in keyframe order; `None` (or a
    /// missing entry) shows a placeholder.
    pub thumbnails: Vec<Option<Vec<u8>>>,
    /// The change score of every sampled frame, for the timeline plot.
    pub timeline: Option<Timeline>,
}

/// The selector's change score over time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// Frame times in seconds, increasing.
    pub time_s: Vec<f64>,
    /// The change score at each time.
    pub change: Vec<f32>,
    /// The score above which a new scene starts, drawn as a line when known.
    pub threshold: Option<f32>,
}

impl Timeline {
    /// The timeline stored in an analysis's embeddings sidecar.
    pub fn from_frames(frames: &FrameEmbeddings) -> Timeline {
        Timeline {
            time_s: frames.time_s.clone(),
            change: frames.change.clone(),
            threshold: frames.threshold,
        }
    }
}

/// Renders the report as one HTML document.
pub fn render(analysis: &Analysis, inputs: &ReportInputs) -> String {
    let mut html = Html::with_capacity(
        64 * 1024
            + inputs
                .thumbnails
                .iter()
                .flatten()
                .map(|bytes| bytes.len() * 4 / 3 + 64)
                .sum::<usize>(),
    );
    page::write_head(&mut html, analysis);
    page::write_masthead(&mut html, analysis);
    html.markup("<main class=\"wrap\">\n");
    page::write_overview(&mut html, analysis);
    timeline::write_timeline(&mut html, analysis, inputs.timeline.as_ref());
    page::write_keyframes(&mut html, analysis, &inputs.thumbnails);
    html.markup("</main>\n");
    page::write_footer(&mut html, analysis);
    page::write_end(&mut html);
    html.into_string()
}

#[cfg(test)]
mod tests {
    use super::format::csp_hash;
    use super::*;
    use crate::output::tests::analysis;

    fn report(captions: [Option<&str>; 3]) -> String {
        render(&analysis(captions), &ReportInputs::default())
    }

    #[test]
    fn model_text_is_escaped_everywhere() {
        let attack = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>";
        let mut analysis = analysis([Some(attack), None, None]);
        analysis.summary = Some(attack.into());
        analysis.chapters[0].title = attack.into();
        analysis.video.path = format!("/videos/{attack}.mp4");
        analysis.models.embedder.name = attack.into();
        let html = render(&analysis, &ReportInputs::default());
        let body = &html[html.find("<body>").unwrap()..];
        let body = &body[..body.rfind("<script>").unwrap()];
        assert!(!body.contains("<script"), "an injected script tag survived");
        assert!(!body.contains("<img src=x"), "an injected image survived");
        assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img"));
        assert_eq!(html.matches("<script>").count(), 1);
    }

    #[test]
    fn the_page_loads_nothing_from_outside() {
        let html = render(
            &analysis([Some("a"), Some("b"), Some("c")]),
            &ReportInputs {
                thumbnails: vec![Some(b"\xff\xd8\xff".to_vec())],
                timeline: None,
            },
        );
        for (at, _) in html.match_indices(" src=\"") {
            assert!(
                html[at + 6..].starts_with("data:"),
                "{}",
                &html[at..at + 40]
            );
        }
        for (at, _) in html.match_indices(" href=\"") {
            assert!(html[at + 7..].starts_with('#'), "{}", &html[at..at + 40]);
        }
        for pattern in [
            "http:", "https:", "url(", "@import", "<link", "<iframe", "fetch(",
        ] {
            assert!(!html.contains(pattern), "found `{pattern}` in the report");
        }
        assert!(html.contains("default-src 'none'"));
    }

    #[test]
    fn the_policy_hashes_the_inline_style_and_script() {
        let html = report([Some("a"), None, None]);
        assert!(html.contains(&format!("style-src '{}'", csp_hash(STYLE).as_str())));
        assert!(html.contains(&format!("script-src '{}'", csp_hash(SCRIPT).as_str())));
        assert!(html.contains(&format!("<style>{STYLE}</style>")));
        assert!(html.contains(&format!("<script>{SCRIPT}</script>")));
    }

    #[test]
    fn one_card_per_keyframe_with_anchored_timecodes() {
        let mut analysis = analysis([Some("first"), None, Some("third")]);
        let inputs = ReportInputs {
            thumbnails: vec![Some(b"\xff\xd8\xffjpeg".to_vec()), None],
            timeline: None,
        };
        analysis.keyframes[2].time_s = 3725.5;
        let html = render(&analysis, &inputs);
        assert_eq!(html.matches("<li class=\"card\"").count(), 3);
        assert_eq!(
            html.matches("<img src=\"data:image/jpeg;base64,").count(),
            1
        );
        assert_eq!(html.matches("class=\"thumb missing\"").count(), 2);
        assert!(html.contains("id=\"k1\""));
        assert!(html.contains("<a class=\"tc\" href=\"#k3\">01:02:05.500</a>"));
        assert!(html.contains("<p class=\"caption none\">No caption</p>"));
        assert_eq!(html.matches("class=\"chapter-break\"").count(), 2);
        assert!(
            html.find("id=\"chapter-2\"").unwrap() > html.find("id=\"k2\"").unwrap()
                && html.find("id=\"chapter-2\"").unwrap() < html.find("id=\"k3\"").unwrap(),
            "chapter 2 opens before keyframe 3, whose scene starts it"
        );
    }

    #[test]
    fn the_timeline_draws_curve_threshold_and_markers() {
        let analysis = analysis([Some("a"), Some("b"), Some("c")]);
        let inputs = ReportInputs {
            thumbnails: Vec::new(),
            timeline: Some(Timeline {
                time_s: (0..24).map(|frame| frame as f64 * 0.5).collect(),
                change: (0..24).map(|frame| (frame % 8) as f32 * 0.05).collect(),
                threshold: Some(0.3),
            }),
        };
        let html = render(&analysis, &inputs);
        assert_eq!(html.matches("<path class=\"curve\"").count(), 1);
        assert!(html.contains("<li class=\"threshold-key\">threshold 0.3</li>"));
        assert_eq!(html.matches("<a class=\"marker\"").count(), 3);
        // The axis labels are timecodes; the last one ends at the plot's edge.
        assert!(html.contains("text-anchor=\"middle\">00:00:02.000</text>"));
        assert!(html.contains("text-anchor=\"end\">00:00:12.000</text>"));
        assert!(!html.contains("No per-frame change scores"));
        let without = report([Some("a"), Some("b"), Some("c")]);
        assert!(!without.contains("class=\"curve\""));
        assert!(without.contains("No per-frame change scores"));
    }

    #[test]
    fn the_timeline_comes_from_the_sidecar_frames() {
        let frames = FrameEmbeddings {
            time_s: vec![0.0, 0.5],
            change: vec![0.0, 0.4],
            embeddings: vec![1.0, 0.0, 0.0, 1.0],
            dim: 2,
            threshold: Some(0.3),
        };
        let timeline = Timeline::from_frames(&frames);
        assert_eq!(timeline.time_s, frames.time_s);
        assert_eq!(timeline.change, frames.change);
        assert_eq!(timeline.threshold, Some(0.3));
    }

    /// Whether `text[start..]` begins with `HH:MM:SS.mmm`.
    fn timecode_at(text: &str, start: Option<usize>) -> bool {
        start
            .and_then(|start| text.as_bytes().get(start..start + 12))
            .is_some_and(|candidate| {
                candidate
                    .iter()
                    .enumerate()
                    .all(|(index, &byte)| match index {
                        2 | 5 => byte == b':',
                        8 => byte == b'.',
                        _ => byte.is_ascii_digit(),
                    })
            })
    }

    #[test]
    fn every_time_has_one_format() {
        let mut analysis = analysis([Some("a"), Some("b"), Some("c")]);
        analysis.keyframes[2].time_s = 3725.5;
        analysis.keyframes[2].scene.end_s = 3800.0;
        analysis.video.duration_s = 3800.0;
        analysis.timings.total_s = 754.0;
        let html = render(
            &analysis,
            &ReportInputs {
                thumbnails: vec![Some(b"\xff\xd8\xff".to_vec())],
                timeline: Some(Timeline {
                    time_s: vec![0.0, 1900.0],
                    change: vec![0.1, 0.2],
                    threshold: Some(0.3),
                }),
            },
        );
        let body = &html[html.find("<body>").unwrap()..html.rfind("<script>").unwrap()];
        let bytes = body.as_bytes();
        // Every digit-colon-digit in the page belongs to an `HH:MM:SS.mmm` timecode.
        let colons: Vec<usize> = (1..bytes.len() - 1)
            .filter(|&at| {
                bytes[at] == b':'
                    && bytes[at - 1].is_ascii_digit()
                    && bytes[at + 1].is_ascii_digit()
            })
            .collect();
        assert!(colons.len() > 40, "{}", colons.len());
        for at in colons {
            assert!(
                timecode_at(body, at.checked_sub(2)) || timecode_at(body, at.checked_sub(5)),
                "not HH:MM:SS.mmm: {:?}",
                &body[at.saturating_sub(12)..(at + 12).min(body.len())]
            );
        }
        assert!(
            body.contains("<b>1 h 03 min</b> long"),
            "durations are not clock times"
        );
        assert!(body.contains("Analysed in 12 min 34 s"));
        assert!(body.contains("<span class=\"badge time\">01:02:05.500</span>"));
    }
}
