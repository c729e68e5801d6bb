//! The analysis document: what `keyscribe run` learns about one video, in the stable JSON
//! schema `keyscribe.analysis/1`. Subtitles, reports, summaries and search are views of it.
//!
//! The sampled frames' embeddings and change scores live beside the document in a
//! safetensors file (see [`EmbeddingsRecord`]), so that search and the report's timeline
//! never decode the video again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::atomic;
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
    /// Spans of the video whose frames could not be decoded (damaged data), in time order;
    /// absent when there were none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decode_gaps: Vec<DecodeGapRecord>,
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

/// A span of the video whose frames could not be decoded: nothing in it was analysed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeGapRecord {
    /// Start of the span, in seconds.
    pub start_s: f64,
    /// End of the span, in seconds.
    pub end_s: f64,
    /// Why there are no frames, e.g. `48 frames could not be decoded (damaged data)`.
    pub reason: String,
}

/// What can go wrong reading or writing an analysis or its sidecar.
#[derive(Debug, Error)]
pub enum AnalysisError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not an analysis document of this schema.
    #[error("{}: not a keyscribe analysis ({problem})", path.display())]
    NotAnAnalysis {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The embeddings sidecar is missing tensors or inconsistent.
    #[error("{}: bad embeddings file ({problem})", path.display())]
    BadSidecar {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl Analysis {
    /// Reads an analysis document, checking its schema.
    pub fn load(path: &Path) -> Result<Analysis, AnalysisError> {
        let text = std::fs::read_to_string(path).map_err(|source| AnalysisError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let not_analysis = |problem: String| AnalysisError::NotAnAnalysis {
            path: path.to_path_buf(),
            problem,
        };
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|error| not_analysis(format!("invalid JSON: {error}")))?;
        match value.get("schema").and_then(|schema| schema.as_str()) {
            Some(SCHEMA) => {}
            Some(other) => {
                return Err(not_analysis(format!(
                    "schema `{other}`, expected `{SCHEMA}`"
                )))
            }
            None => return Err(not_analysis("no `schema` field".into())),
        }
        serde_json::from_value(value).map_err(|error| not_analysis(error.to_string()))
    }

    /// Writes the document as pretty JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<(), AnalysisError> {
        let json = serde_json::to_vec_pretty(self).expect("an analysis always serialises");
        atomic::write(path, &json).map_err(|source| AnalysisError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The sidecar's path, resolved against the directory of the document at `document`.
    pub fn embeddings_path(&self, document: &Path) -> Option<PathBuf> {
        let record = self.embeddings.as_ref()?;
        let base = document.parent().unwrap_or(Path::new("."));
        Some(base.join(&record.path))
    }
}

/// The per-frame data stored beside an analysis: every sampled frame's time, change score
/// and embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameEmbeddings {
    /// Frame times in seconds, increasing.
    pub time_s: Vec<f64>,
    /// The selector's change score at each frame.
    pub change: Vec<f32>,
    /// Row-major `[frames, dim]` L2-normalised embeddings.
    pub embeddings: Vec<f32>,
    /// Embedding dimension.
    pub dim: usize,
    /// The change threshold the selector used, when it was one number for the whole video.
    pub threshold: Option<f32>,
}

impl FrameEmbeddings {
    /// Number of frames.
    pub fn len(&self) -> usize {
        self.time_s.len()
    }

    /// Whether there are no frames.
    pub fn is_empty(&self) -> bool {
        self.time_s.is_empty()
    }

    /// The embedding of frame `index`.
    pub fn row(&self, index: usize) -> &[f32] {
        &self.embeddings[index * self.dim..(index + 1) * self.dim]
    }

    /// Writes the sidecar as safetensors, atomically.
    pub fn save(&self, path: &Path) -> Result<(), AnalysisError> {
        let bad = |problem: String| AnalysisError::BadSidecar {
            path: path.to_path_buf(),
            problem,
        };
        let frames = self.len();
        let tensors: HashMap<String, Tensor> = [
            (
                "time_s",
                Tensor::from_slice(&self.time_s, frames, &Device::Cpu),
            ),
            (
                "change",
                Tensor::from_slice(&self.change, frames, &Device::Cpu),
            ),
            (
                "embeddings",
                Tensor::from_slice(&self.embeddings, (frames, self.dim), &Device::Cpu),
            ),
        ]
        .into_iter()
        .chain(self.threshold.map(|threshold| {
            (
                "threshold",
                Tensor::from_slice(&[threshold], 1, &Device::Cpu),
            )
        }))
        .map(|(name, tensor)| tensor.map(|tensor| (name.to_string(), tensor)))
        .collect::<Result<_, _>>()
        .map_err(|error| bad(error.to_string()))?;
        let temporary = atomic::temporary_path(path);
        candle_core::safetensors::save(&tensors, &temporary)
            .map_err(|error| bad(error.to_string()))?;
        std::fs::rename(&temporary, path).map_err(|source| {
            let _ = std::fs::remove_file(&temporary);
            AnalysisError::Io {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Reads a sidecar written by [`FrameEmbeddings::save`].
    pub fn load(path: &Path) -> Result<FrameEmbeddings, AnalysisError> {
        let bad = |problem: String| AnalysisError::BadSidecar {
            path: path.to_path_buf(),
            problem,
        };
        if !path.is_file() {
            return Err(AnalysisError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|error| bad(error.to_string()))?;
        let get = |name: &str, dtype: DType| {
            tensors
                .get(name)
                .ok_or_else(|| bad(format!("no `{name}` tensor")))
                .and_then(|tensor| {
                    tensor
                        .to_dtype(dtype)
                        .map_err(|error| bad(error.to_string()))
                })
        };
        let embeddings = get("embeddings", DType::F32)?;
        let (frames, dim) = embeddings.dims2().map_err(|error| bad(error.to_string()))?;
        let time_s: Vec<f64> = get("time_s", DType::F64)?
            .to_vec1()
            .map_err(|error| bad(error.to_string()))?;
        let change: Vec<f32> = get("change", DType::F32)?
            .to_vec1()
            .map_err(|error| bad(error.to_string()))?;
        if time_s.len() != frames || change.len() != frames {
            return Err(bad(format!(
                "{frames} embeddings but {} times and {} change scores",
                time_s.len(),
                change.len()
            )));
        }
        let embeddings = embeddings
            .flatten_all()
            .and_then(|flat| flat.to_vec1())
            .map_err(|error| bad(error.to_string()))?;
        let threshold = match tensors.get("threshold") {
            Some(tensor) => Some(
                tensor
                    .to_dtype(DType::F32)
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(|error| bad(error.to_string()))?
                    .first()
                    .copied()
                    .ok_or_else(|| bad("empty `threshold` tensor".into()))?,
            ),
            None => None,
        };
        Ok(FrameEmbeddings {
            time_s,
            change,
            embeddings,
            dim,
            threshold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.embeddings.safetensors");
        let frames = FrameEmbeddings {
            time_s: vec![0.0, 0.5, 1.0],
            change: vec![0.0, 0.1, 0.7],
            embeddings: (0..6).map(|i| i as f32).collect(),
            dim: 2,
            threshold: Some(0.25),
        };
        frames.save(&path).unwrap();
        let loaded = FrameEmbeddings::load(&path).unwrap();
        assert_eq!(loaded, frames);
        assert_eq!(loaded.row(2), &[4.0, 5.0]);
    }

    #[test]
    fn loading_checks_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        std::fs::write(&path, r#"{"schema": "other/1"}"#).unwrap();
        let error = Analysis::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("not a keyscribe analysis") && error.contains("other/1"),
            "{error}"
        );
        std::fs::write(&path, "not json").unwrap();
        assert!(Analysis::load(&path)
            .unwrap_err()
            .to_string()
            .contains("invalid JSON"));
    }
}
