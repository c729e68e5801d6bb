//! The analysis document: what `keyscribe run` learns about one video, in the stable JSON
//! schema `keyscribe.analysis/1`. Subtitles, reports, summaries and search are views of it.
//!
//! The sampled frames' embeddings and change scores live beside the document in a
//! safetensors file (see [`EmbeddingsRecord`]), so that search and the report's timeline
//! never decode the video again.

use serde::{Deserialize, Serialize};

use crate::time::MediaTime;

/// The schema identifier written into every document.
pub const SCHEMA: &str = "keyscribe.analysis/1";

/// One analysed video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The video that was analysed.
    pub video: VideoRecord,
    /// The models that made the embeddings and captions.
    pub models: ModelsRecord,
    /// The effective pipeline settings, as a JSON object.
    pub pipeline: serde_json::Value,
    /// The chosen keyframes in time order, one per scene.
    pub keyframes: Vec<KeyframeRecord>,
    /// A short paragraph about the whole video, once summarised.
    pub summary: Option<String>,
    /// Chapters of the video, once summarised, in time order.
    #[serde(default)]
    pub chapters: Vec<Chapter>,
    /// Where the sampled frames' embeddings are stored.
    pub embeddings: Option<EmbeddingsRecord>,
    /// Wall time spent in each stage.
    pub timings: Timings,
}

/// The analysed file and what FFmpeg reported about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoRecord {
    /// The path as given on the command line.
    pub path: String,
    /// SHA-256 of the file's bytes, hex; identifies the content for caching.
    pub sha256: String,
    /// Duration in seconds.
    pub duration_s: f64,
    /// Display width in pixels (after rotation).
    pub width: u32,
    /// Display height in pixels (after rotation).
    pub height: u32,
    /// Average frame rate.
    pub fps: f64,
}

/// A model as recorded in the document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRecord {
    /// Display name, e.g. `MobileCLIP2-S0`.
    pub name: String,
    /// Where the weights came from: a Hub repository or a local directory.
    pub source: String,
}

/// The embedder and the captioner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsRecord {
    /// The image/text embedding model (MobileCLIP2).
    pub embedder: ModelRecord,
    /// The captioning model (FastVLM); absent when only keyframes were selected.
    pub captioner: Option<ModelRecord>,
}

/// One keyframe: the representative frame of one scene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyframeRecord {
    /// Position among the keyframes, from 0.
    pub index: usize,
    /// When the frame is shown, in seconds from the start.
    pub time_s: f64,
    /// The same time as `HH:MM:SS.mmm`.
    pub timecode: String,
    /// The scene this keyframe represents.
    pub scene: SceneSpan,
    /// How far the scene's opening moved away from the previous scene (cosine distance).
    pub change: f32,
    /// The captioner's description; absent when captioning was not run.
    pub caption: Option<String>,
}

impl KeyframeRecord {
    /// The keyframe's time.
    pub fn time(&self) -> MediaTime {
        MediaTime::from_seconds(self.time_s)
    }
}

/// A time range of the video, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneSpan {
    /// Start of the scene.
    pub start_s: f64,
    /// End of the scene (the next scene's start, or the end of the video).
    pub end_s: f64,
}

/// A chapter of the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chapter {
    /// A short title.
    pub title: String,
    /// Where the chapter starts, in seconds.
    pub start_s: f64,
    /// The same time as `HH:MM:SS.mmm`.
    pub timecode: String,
}

/// The sidecar safetensors file with one row per sampled frame.
///
/// It holds `embeddings` (`[frames, dim]` f32, L2-normalised), `time_s` (`[frames]` f64)
/// and `change` (`[frames]` f32, the selector's change score at each frame).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRecord {
    /// Path of the sidecar, relative to the document's directory.
    pub path: String,
    /// Number of sampled frames.
    pub frames: usize,
    /// Embedding dimension.
    pub dim: usize,
}

/// Wall time per stage, in seconds. Stages overlap, so the parts can exceed the total.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timings {
    /// Decoding, sampling and scaling.
    pub decode_s: f64,
    /// MobileCLIP2 image embeddings.
    pub embed_s: f64,
    /// Keyframe selection.
    pub select_s: f64,
    /// FastVLM captions.
    pub caption_s: f64,
    /// The whole run, start to finish.
    pub total_s: f64,
}
