//! What the index is built from: one analysed video at a time.

use serde::{Deserialize, Serialize};

use crate::analysis::KeyframeRecord;
use crate::time::MediaTime;

/// A scene of a video with its caption, as input to the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneCaption {
    /// Where the scene starts.
    pub start: MediaTime,
    /// Where it ends.
    pub end: MediaTime,
    /// What the captioner said about its keyframe (empty when not captioned).
    pub caption: String,
}

impl SceneCaption {
    /// The scenes of an analysis document's keyframes.
    pub fn from_keyframes(keyframes: &[KeyframeRecord]) -> Vec<SceneCaption> {
        keyframes
            .iter()
            .map(|keyframe| SceneCaption {
                start: MediaTime::from_seconds(keyframe.scene.start_s),
                end: MediaTime::from_seconds(keyframe.scene.end_s),
                caption: keyframe.caption.clone().unwrap_or_default(),
            })
            .collect()
    }
}

/// One analysed video, as input to the index.
#[derive(Debug, Clone, Copy)]
pub struct VideoInput<'a> {
    /// How results name the video (its path, as a rule).
    pub video: &'a str,
    /// The video's duration; the last frame's range ends here.
    pub duration: MediaTime,
    /// Each sampled frame's time, increasing.
    pub times: &'a [MediaTime],
    /// Each sampled frame's embedding, `[frames, dim]` row-major.
    pub embeddings: &'a [f32],
    /// The video's scenes and their captions.
    pub scenes: &'a [SceneCaption],
}
