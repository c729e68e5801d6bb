//! The analysis as editors count it: scenes in whole frames, for the formats that number
//! frames (EDL, OpenTimelineIO, FCPXML, the scene CSV) and for cutting the video.
//!
//! A scene runs from its start to the next scene's start, the last to the end of the video
//! (the same spans as the captions, [`super::caption_spans`]), with both ends moved to the
//! nearest frame start. A scene shorter than half a frame rounds to no frames and is left out,
//! so the scenes that remain tile the video frame by frame and are numbered 1, 2, ... in order.

use super::{caption_spans, one_line, video_end_s};
use crate::analysis::Analysis;
use crate::time::{FrameRate, MediaTime};

/// One scene in frames.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneClip {
    /// Position among the scenes that have frames, from 1.
    pub number: usize,
    /// The `index` of the scene's keyframe in the analysis.
    pub keyframe: usize,
    /// The scene's first frame.
    pub start_frame: u64,
    /// The frame after the scene's last frame.
    pub end_frame: u64,
    /// The keyframe's frame, inside the scene.
    pub keyframe_frame: u64,
    /// The keyframe's caption on one line; `None` when it has none or it is blank.
    pub caption: Option<String>,
}

impl SceneClip {
    /// How many frames the scene holds (at least one).
    pub fn frames(&self) -> u64 {
        self.end_frame - self.start_frame
    }
}

/// The scenes of a video in frames.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneList {
    /// The video's frame rate.
    pub rate: FrameRate,
    /// Frames in the whole video (the end of the last scene at least).
    pub total_frames: u64,
    /// The scenes, in time order.
    pub scenes: Vec<SceneClip>,
}

impl SceneList {
    /// When frame `frame` starts.
    pub fn time(&self, frame: u64) -> MediaTime {
        self.rate.frame_time(frame)
    }
}

/// The scenes of `analysis` in frames; `None` when the analysis records no usable frame rate.
pub fn scene_list(analysis: &Analysis) -> Option<SceneList> {
    let rate = FrameRate::from_fps(analysis.video.fps)?;
    let mut scenes = Vec::with_capacity(analysis.keyframes.len());
    for (keyframe, span) in analysis.keyframes.iter().zip(caption_spans(analysis)) {
        let start_frame = rate.frame_at(span.start);
        let end_frame = rate.frame_at(span.end);
        if end_frame <= start_frame {
            continue;
        }
        let caption = keyframe
            .caption
            .as_deref()
            .map(one_line)
            .filter(|caption| !caption.is_empty());
        scenes.push(SceneClip {
            number: scenes.len() + 1,
            keyframe: keyframe.index,
            start_frame,
            end_frame,
            keyframe_frame: rate
                .frame_at(keyframe.time())
                .clamp(start_frame, end_frame - 1),
            caption,
        });
    }
    let video_frames = rate.frame_at(MediaTime::from_seconds(video_end_s(analysis)));
    let total_frames = scenes
        .last()
        .map_or(video_frames, |last| video_frames.max(last.end_frame));
    Some(SceneList {
        rate,
        total_frames,
        scenes,
    })
}

/// A URL for the video at `path` as the analysis records it: `file://` and the
/// percent-encoded path for an absolute path, the percent-encoded path alone (a relative URL)
/// otherwise. Backslashes of Windows paths become slashes.
pub fn media_url(path: &str) -> String {
    let path = path.replace('\\', "/");
    let mut url = String::with_capacity(path.len() + 8);
    if path.starts_with('/') {
        url.push_str("file://");
    } else if path.as_bytes().get(1) == Some(&b':') {
        // A Windows drive letter: file:///C:/videos/a.mp4
        url.push_str("file:///");
    }
    for byte in path.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' | b':' => {
                url.push(char::from(byte));
            }
            other => url.push_str(&format!("%{other:02X}")),
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::analysis;

    #[test]
    fn scenes_are_whole_frames_that_tile_the_video() {
        let mut analysis = analysis([Some(" first\nscene "), None, Some("third")]);
        // 25 fps: 4.0 s is frame 100, 8.5 s frame 212.5, which rounds to 213 (half up).
        let list = scene_list(&analysis).unwrap();
        assert_eq!(list.rate.to_string(), "25/1");
        assert_eq!(list.total_frames, 300);
        let frames: Vec<(usize, u64, u64, u64)> = list
            .scenes
            .iter()
            .map(|scene| {
                (
                    scene.number,
                    scene.start_frame,
                    scene.end_frame,
                    scene.keyframe_frame,
                )
            })
            .collect();
        assert_eq!(
            frames,
            [(1, 0, 100, 38), (2, 100, 213, 150), (3, 213, 300, 256)]
        );
        assert_eq!(list.scenes[0].caption.as_deref(), Some("first scene"));
        assert_eq!(list.scenes[1].caption, None);

        // A scene shorter than a frame is left out and the rest renumbered.
        analysis.keyframes[1].scene.start_s = 8.5;
        analysis.keyframes[1].time_s = 8.5;
        let list = scene_list(&analysis).unwrap();
        let numbers: Vec<(usize, usize)> = list
            .scenes
            .iter()
            .map(|scene| (scene.number, scene.keyframe))
            .collect();
        assert_eq!(numbers, [(1, 0), (2, 2)]);
        assert_eq!(
            (list.scenes[0].end_frame, list.scenes[1].start_frame),
            (213, 213)
        );
    }

    #[test]
    fn a_keyframe_outside_its_scene_is_kept_inside() {
        let mut analysis = analysis([Some("a"), Some("b"), Some("c")]);
        analysis.keyframes[0].time_s = 7.0;
        let list = scene_list(&analysis).unwrap();
        assert_eq!(list.scenes[0].keyframe_frame, 99);
    }

    #[test]
    fn no_frame_rate_no_scene_list() {
        let mut analysis = analysis([Some("a"), Some("b"), Some("c")]);
        analysis.video.fps = 0.0;
        assert_eq!(scene_list(&analysis), None);
    }

    #[test]
    fn media_urls() {
        assert_eq!(
            media_url("/videos/My clip #1.mp4"),
            "file:///videos/My%20clip%20%231.mp4"
        );
        assert_eq!(media_url("samples/scenes.mp4"), "samples/scenes.mp4");
        assert_eq!(media_url("C:\\v\\ä.mp4"), "file:///C:/v/%C3%A4.mp4");
    }
}
