//! The analysis document: what `keyscribe run` learns about one video, in the stable JSON
//! schema `keyscribe.analysis/1`. Subtitles, reports, summaries and search are views of it.
//!
//! The sampled frames' embeddings and change scores live beside the document in a
//! safetensors file (see [`EmbeddingsRecord`]), so that search and the report's timeline
//! never decode the video again.

use std::path::{Component, Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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
    /// For one segment of a live watch: where it sits in the session and what was dropped;
    /// absent for a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveRecord>,
}

/// One segment of a live watch (`keyscribe watch`): times in its document count from the
/// start of the session, on the wall clock across reconnections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveRecord {
    /// When the session started (RFC 3339, UTC): time 0 of every time in the document.
    pub session_started: String,
    /// The segment's number in the session, from 0.
    pub segment: usize,
    /// Where the segment starts, in seconds of the session.
    pub start_s: f64,
    /// Where it ends, in seconds of the session.
    pub end_s: f64,
    /// Sampled frames dropped in the segment because embedding could not keep up.
    pub dropped_frames: u64,
    /// Keyframes left without a caption in the segment because captioning could not keep
    /// up.
    pub dropped_captions: u64,
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

/// A model as recorded in the document: which model, and which weights exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRecord {
    /// Display name, e.g. `MobileCLIP2-S0`.
    pub name: String,
    /// Where the weights came from: `hf://REPO@REVISION` or a local directory.
    pub source: String,
    /// The Hub commit the weights were read at; absent for a local directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// SHA-256 of the weights file (of the shards' hashes for a sharded checkpoint), hex;
    /// absent in documents written before keyscribe recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
    /// The licence of the weights (e.g. `Apache-2.0`, `apple-amlr`), when known: always for
    /// a model from the Hub, for a local directory when its weights are a manifest's pinned
    /// ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence: Option<String>,
}

impl ModelRecord {
    /// Whether embeddings made by `other` can be compared with ones made by this model:
    /// the same weights when both records know theirs, else the same name.
    pub fn same_model(&self, other: &ModelRecord) -> bool {
        match (&self.weights_sha256, &other.weights_sha256) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => self.name == other.name,
        }
    }
}

impl std::fmt::Display for ModelRecord {
    /// `NAME (weights sha256 0123456789ab, from SOURCE)`, for messages that name a model.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (", self.name)?;
        if let Some(sha256) = &self.weights_sha256 {
            let short: String = sha256.chars().take(12).collect();
            write!(f, "weights sha256 {short}, ")?;
        }
        write!(f, "from {})", self.source)
    }
}

/// Where a loaded model's weights came from and which they are: a [`ModelRecord`] without
/// the name, which the loaded model itself gives.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSource {
    /// `hf://REPO@REVISION` or a local directory.
    pub location: String,
    /// The Hub commit, when the weights came from the Hub's cache.
    pub revision: Option<String>,
    /// SHA-256 of the weights, when known.
    pub weights_sha256: Option<String>,
    /// The licence of the weights, when known (see [`ModelRecord::licence`]).
    pub licence: Option<String>,
}

impl ModelSource {
    /// The document's record of the model called `name` loaded from here.
    pub fn record(&self, name: &str) -> ModelRecord {
        ModelRecord {
            name: name.to_string(),
            source: self.location.clone(),
            revision: self.revision.clone(),
            weights_sha256: self.weights_sha256.clone(),
            licence: self.licence.clone(),
        }
    }
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
/// and `change` (`[frames]` f32, the selector's change score at each frame). The document
/// and its sidecar are a pair: the sidecar's name carries a hash of its content, and the
/// document records that hash with the frame count and dimension, so that a reader never
/// takes another run's embeddings for this document's (see [`Analysis::save_with_frames`]
/// and [`Analysis::load_frames`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRecord {
    /// The sidecar's file name, in the document's directory (a plain name: no directory).
    pub path: String,
    /// Number of sampled frames.
    pub frames: usize,
    /// Embedding dimension.
    pub dim: usize,
    /// SHA-256 of the sidecar's bytes, hex; absent in documents written before keyscribe
    /// recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
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
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file could not be written (a full disk, a read-only directory, ...).
    #[error("cannot write {}: {source}", path.display())]
    Write {
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
    /// The embeddings sidecar's contents are not the tensors keyscribe writes.
    #[error("{}: not a keyscribe embeddings file ({problem})", path.display())]
    BadSidecar {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The frames handed over to be stored do not fit together (a caller's mistake).
    #[error("{}: cannot store the embeddings ({problem})", document.display())]
    FramesInconsistent {
        /// The document they were meant for.
        document: PathBuf,
        /// What does not fit.
        problem: String,
    },
    /// The document records no embeddings sidecar.
    #[error("{}: the analysis has no embeddings file", document.display())]
    NoSidecar {
        /// The document.
        document: PathBuf,
    },
    /// The document names its sidecar with a path instead of a file name beside it.
    #[error(
        "{}: the embeddings file must be a file name beside the document, not `{path}`",
        document.display()
    )]
    SidecarOutside {
        /// The document.
        document: PathBuf,
        /// The path it records.
        path: String,
    },
    /// The sidecar is not the one the document was written with.
    #[error("{} does not belong to {}: {problem}", sidecar.display(), document.display())]
    SidecarMismatch {
        /// The document.
        document: PathBuf,
        /// The sidecar it names.
        sidecar: PathBuf,
        /// How they disagree.
        problem: String,
    },
}

impl Analysis {
    /// Reads an analysis document, checking its schema.
    pub fn load(path: &Path) -> Result<Analysis, AnalysisError> {
        let text = std::fs::read_to_string(path).map_err(|source| AnalysisError::Read {
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

    /// Writes the document as pretty JSON, atomically. The embeddings record is written as
    /// it is: use [`Analysis::save_with_frames`] to write new embeddings.
    pub fn save(&self, path: &Path) -> Result<(), AnalysisError> {
        self.save_using(path, atomic::write)
    }

    /// [`Analysis::save`] with the writer of the bytes as a parameter.
    fn save_using(
        &self,
        path: &Path,
        write: impl FnOnce(&Path, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), AnalysisError> {
        let json = serde_json::to_vec_pretty(self).expect("an analysis always serialises");
        write(path, &json).map_err(|source| AnalysisError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the document at `document` with `frames` as its embeddings sidecar, so that
    /// a reader always finds a matching pair, whenever the writing stops.
    ///
    /// The sidecar is written first, under a name of its own
    /// (`STEM.embeddings.HASH.safetensors`, HASH from its content), so it never replaces
    /// the sidecar the existing document names; then the document, recording the name,
    /// frame count, dimension and SHA-256; then the document's previous sidecar is removed.
    /// A failure before the document is replaced leaves the old pair as it was. The
    /// sidecar gets the mode of the document it replaces, so the pair is readable by the
    /// same people.
    pub fn save_with_frames(
        &mut self,
        frames: &FrameEmbeddings,
        document: &Path,
    ) -> Result<(), AnalysisError> {
        self.save_pair(frames, document, atomic::write)
    }

    /// [`Analysis::save_with_frames`] with the writer of the document's bytes as a
    /// parameter, so that tests can make the second write fail.
    fn save_pair(
        &mut self,
        frames: &FrameEmbeddings,
        document: &Path,
        write_document: impl FnOnce(&Path, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), AnalysisError> {
        let bytes = frames.to_safetensors(document)?;
        let sha256 = format!("{:x}", Sha256::digest(&bytes));
        let stem = sidecar_stem(document);
        let name = format!("{stem}{}.safetensors", &sha256[..16]);
        let sidecar = document.with_file_name(&name);
        let previous = Analysis::load(document)
            .ok()
            .and_then(|old| old.embeddings)
            .map(|record| record.path)
            .filter(|old| old != &name && old.starts_with(&stem) && is_plain_file_name(old));
        let sidecar_existed = sidecar.exists();
        let document_permissions = std::fs::metadata(document)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|metadata| metadata.permissions());
        let written = atomic::write(&sidecar, &bytes).and_then(|()| {
            document_permissions.map_or(Ok(()), |permissions| {
                std::fs::set_permissions(&sidecar, permissions)
            })
        });
        if let Err(source) = written {
            if !sidecar_existed {
                let _ = std::fs::remove_file(&sidecar);
            }
            return Err(AnalysisError::Write {
                path: sidecar,
                source,
            });
        }
        let record = EmbeddingsRecord {
            path: name,
            frames: frames.len(),
            dim: frames.dim,
            sha256: Some(sha256),
        };
        let replaced = self.embeddings.replace(record);
        if let Err(error) = self.save_using(document, write_document) {
            self.embeddings = replaced;
            if !sidecar_existed {
                let _ = std::fs::remove_file(&sidecar);
            }
            return Err(error);
        }
        if let Some(previous) = previous {
            // The new pair is in place; the old sidecar is now nobody's.
            let _ = std::fs::remove_file(document.with_file_name(previous));
        }
        Ok(())
    }

    /// The sidecar's path: the recorded file name in the document's directory. A record
    /// that names a path elsewhere (`../x`, `/etc/passwd`, `dir/x`) is refused.
    pub fn embeddings_path(&self, document: &Path) -> Result<PathBuf, AnalysisError> {
        let record = self
            .embeddings
            .as_ref()
            .ok_or_else(|| AnalysisError::NoSidecar {
                document: document.to_path_buf(),
            })?;
        if !is_plain_file_name(&record.path) {
            return Err(AnalysisError::SidecarOutside {
                document: document.to_path_buf(),
                path: record.path.clone(),
            });
        }
        Ok(document.with_file_name(&record.path))
    }

    /// Reads the embeddings sidecar of the document at `document` and checks that it is the
    /// one the document was written with: its SHA-256 (when recorded), frame count and
    /// dimension.
    pub fn load_frames(&self, document: &Path) -> Result<FrameEmbeddings, AnalysisError> {
        let sidecar = self.embeddings_path(document)?;
        let record = self
            .embeddings
            .as_ref()
            .expect("embeddings_path found the record");
        let mismatch = |problem: String| AnalysisError::SidecarMismatch {
            document: document.to_path_buf(),
            sidecar: sidecar.clone(),
            problem,
        };
        let bytes = std::fs::read(&sidecar).map_err(|source| AnalysisError::Read {
            path: sidecar.clone(),
            source,
        })?;
        let frames = FrameEmbeddings::from_safetensors(&bytes, &sidecar)?;
        if (frames.len(), frames.dim) != (record.frames, record.dim) {
            return Err(mismatch(format!(
                "it holds {} frames of {}-d embeddings, the document records {} frames of {}-d",
                frames.len(),
                frames.dim,
                record.frames,
                record.dim
            )));
        }
        if let Some(recorded) = &record.sha256 {
            let found = format!("{:x}", Sha256::digest(&bytes));
            if &found != recorded {
                return Err(mismatch(format!(
                    "its SHA-256 is {found}, the document records {recorded}"
                )));
            }
        }
        Ok(frames)
    }
}

/// `STEM.embeddings.` for a document `STEM.json`: how every sidecar of that document starts.
fn sidecar_stem(document: &Path) -> String {
    let stem = document
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "analysis".to_string());
    format!("{stem}.embeddings.")
}

/// Whether `name` is one file name, naming a file in the directory it is resolved in.
fn is_plain_file_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(part)), None) if part == name
    )
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

    /// The sidecar's bytes in the safetensors format; `document` names the analysis in
    /// the unlikely error.
    fn to_safetensors(&self, document: &Path) -> Result<Vec<u8>, AnalysisError> {
        let frames = self.len();
        if self.change.len() != frames || self.embeddings.len() != frames * self.dim {
            return Err(AnalysisError::FramesInconsistent {
                document: document.to_path_buf(),
                problem: format!(
                    "{frames} times, {} change scores and {} values for {}-d embeddings",
                    self.change.len(),
                    self.embeddings.len(),
                    self.dim
                ),
            });
        }
        let tensors: Vec<(&str, Tensor)> = [
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
        .map(|(name, tensor)| tensor.map(|tensor| (name, tensor)))
        .collect::<Result<_, _>>()
        .map_err(|error| AnalysisError::FramesInconsistent {
            document: document.to_path_buf(),
            problem: error.to_string(),
        })?;
        safetensors::serialize(tensors, None).map_err(|error| AnalysisError::FramesInconsistent {
            document: document.to_path_buf(),
            problem: error.to_string(),
        })
    }

    /// Reads the bytes of a sidecar written by [`Analysis::save_with_frames`]; `path`
    /// names it in errors.
    fn from_safetensors(bytes: &[u8], path: &Path) -> Result<FrameEmbeddings, AnalysisError> {
        let bad = |problem: String| AnalysisError::BadSidecar {
            path: path.to_path_buf(),
            problem,
        };
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
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

    use crate::output::tests::analysis;

    fn frames(count: usize, dim: usize, seed: f32) -> FrameEmbeddings {
        FrameEmbeddings {
            time_s: (0..count).map(|i| i as f64 * 0.5).collect(),
            change: (0..count).map(|i| i as f32 * 0.1).collect(),
            embeddings: (0..count * dim).map(|i| i as f32 + seed).collect(),
            dim,
            threshold: Some(0.25),
        }
    }

    /// Names of the files in `dir`, sorted.
    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_document_and_its_sidecar_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let document = dir.path().join("a.json");
        let mut written = analysis([Some("x"), None, Some("y")]);
        let stored = frames(3, 2, 0.0);
        written.save_with_frames(&stored, &document).unwrap();
        let loaded = Analysis::load(&document).unwrap();
        assert_eq!(loaded, written);
        let record = loaded.embeddings.as_ref().unwrap();
        assert_eq!((record.frames, record.dim), (3, 2));
        let bytes = std::fs::read(loaded.embeddings_path(&document).unwrap()).unwrap();
        assert_eq!(
            record.sha256.as_deref(),
            Some(format!("{:x}", Sha256::digest(&bytes)).as_str())
        );
        assert!(record.path.starts_with("a.embeddings."), "{}", record.path);
        let frames = loaded.load_frames(&document).unwrap();
        assert_eq!(frames, stored);
        assert_eq!(frames.row(2), &[4.0, 5.0]);
    }

    #[test]
    fn replacing_the_pair_removes_the_old_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let document = dir.path().join("a.json");
        let mut first = analysis([None, None, None]);
        first
            .save_with_frames(&frames(3, 2, 0.0), &document)
            .unwrap();
        let old_sidecar = first.embeddings_path(&document).unwrap();
        let mut second = analysis([Some("x"), None, None]);
        second
            .save_with_frames(&frames(4, 2, 1.0), &document)
            .unwrap();
        assert!(!old_sidecar.exists());
        let loaded = Analysis::load(&document).unwrap();
        assert_eq!(loaded.load_frames(&document).unwrap(), frames(4, 2, 1.0));
        assert_eq!(names_in(dir.path()).len(), 2, "{:?}", names_in(dir.path()));
        // The same frames again: the same sidecar, kept.
        second
            .save_with_frames(&frames(4, 2, 1.0), &document)
            .unwrap();
        assert_eq!(loaded.load_frames(&document).unwrap(), frames(4, 2, 1.0));
        assert_eq!(names_in(dir.path()).len(), 2);
    }

    #[test]
    fn a_failed_document_write_leaves_the_old_pair_readable() {
        let dir = tempfile::tempdir().unwrap();
        let document = dir.path().join("a.json");
        let mut old = analysis([Some("old"), None, None]);
        old.save_with_frames(&frames(3, 2, 0.0), &document).unwrap();
        let before = names_in(dir.path());

        // The disk fills after the new sidecar is written: the document's bytes go to
        // /dev/full.
        let mut new = analysis([Some("new"), None, None]);
        let error = new
            .save_pair(&frames(5, 4, 9.0), &document, |_, bytes| {
                atomic::write(Path::new("/dev/full"), bytes)
            })
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("cannot write {}", document.display()))
                && message.contains("No space left on device"),
            "{message}"
        );
        let loaded = Analysis::load(&document).unwrap();
        assert_eq!(loaded, old);
        assert_eq!(loaded.load_frames(&document).unwrap(), frames(3, 2, 0.0));
        assert_eq!(names_in(dir.path()), before, "the new sidecar is removed");
        assert_eq!(new.embeddings, None, "the failed record is not kept");
    }

    #[test]
    fn a_full_disk_while_writing_the_sidecar_is_a_write_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let document = dir.path().join("a.json");
        let stored = frames(3, 2, 0.0);
        let bytes = stored.to_safetensors(&document).unwrap();
        let hash = format!("{:x}", Sha256::digest(&bytes));
        let sidecar = dir
            .path()
            .join(format!("a.embeddings.{}.safetensors", &hash[..16]));
        std::os::unix::fs::symlink("/dev/full", &sidecar).unwrap();
        let error = analysis([None, None, None])
            .save_with_frames(&stored, &document)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            format!(
                "cannot write {}: No space left on device (os error 28)",
                sidecar.display()
            )
        );
        assert!(!document.exists());
    }

    #[test]
    fn a_sidecar_from_another_run_is_refused_naming_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let document = dir.path().join("a.json");
        let mut written = analysis([None, None, None]);
        written
            .save_with_frames(&frames(3, 2, 0.0), &document)
            .unwrap();
        let sidecar = written.embeddings_path(&document).unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        let other_document = other_dir.path().join("b.json");
        for (other, problem) in [
            (frames(4, 2, 0.0), "4 frames"),
            (frames(3, 4, 0.0), "4-d"),
            (frames(3, 2, 7.0), "SHA-256"),
        ] {
            let mut another = analysis([None, None, None]);
            another.save_with_frames(&other, &other_document).unwrap();
            std::fs::copy(another.embeddings_path(&other_document).unwrap(), &sidecar).unwrap();
            let error = written.load_frames(&document).unwrap_err().to_string();
            assert!(
                error.contains(&sidecar.display().to_string())
                    && error.contains(&document.display().to_string())
                    && error.contains("does not belong to")
                    && error.contains(problem),
                "{error}"
            );
        }
        // Without a recorded hash (a document from before it was recorded), frames and
        // dimension are still checked.
        written.embeddings.as_mut().unwrap().sha256 = None;
        let mut another = analysis([None, None, None]);
        another
            .save_with_frames(&frames(4, 2, 0.0), &other_document)
            .unwrap();
        std::fs::copy(another.embeddings_path(&other_document).unwrap(), &sidecar).unwrap();
        let error = written.load_frames(&document).unwrap_err().to_string();
        assert!(error.contains("4 frames"), "{error}");
    }

    #[test]
    fn a_sidecar_outside_the_documents_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let document = dir.path().join("lib/a.json");
        std::fs::create_dir(dir.path().join("lib")).unwrap();
        let mut written = analysis([None, None, None]);
        written
            .save_with_frames(&frames(3, 2, 0.0), &document)
            .unwrap();
        // A readable copy one level up, where `../` would find it.
        std::fs::copy(
            written.embeddings_path(&document).unwrap(),
            dir.path().join("x"),
        )
        .unwrap();
        for path in ["../x", "/etc/passwd", "sub/x", "..", ".", "", "./x"] {
            let mut forged = written.clone();
            forged.embeddings.as_mut().unwrap().path = path.to_string();
            let error = forged.load_frames(&document).unwrap_err().to_string();
            assert!(
                error.contains("must be a file name beside the document")
                    && error.contains(&format!("`{path}`")),
                "{path}: {error}"
            );
        }
    }

    #[test]
    fn documents_written_before_identities_were_recorded_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let document = dir.path().join("old.json");
        let mut value = serde_json::to_value(analysis([None, None, None])).unwrap();
        value["models"]["embedder"] =
            serde_json::json!({"name": "MobileCLIP2-S0", "source": "/models/s0"});
        value["embeddings"] = serde_json::json!(
            {"path": "old.embeddings.safetensors", "frames": 3, "dim": 2}
        );
        std::fs::write(&document, serde_json::to_vec(&value).unwrap()).unwrap();
        let old = frames(3, 2, 0.0);
        std::fs::write(
            dir.path().join("old.embeddings.safetensors"),
            old.to_safetensors(&document).unwrap(),
        )
        .unwrap();
        let loaded = Analysis::load(&document).unwrap();
        assert_eq!(loaded.models.embedder.weights_sha256, None);
        assert_eq!(loaded.models.embedder.revision, None);
        assert_eq!(loaded.load_frames(&document).unwrap(), old);
        // Writing it again replaces the unhashed sidecar with a hashed one.
        let mut rewritten = loaded.clone();
        rewritten.save_with_frames(&old, &document).unwrap();
        assert_eq!(names_in(dir.path()).len(), 2, "{:?}", names_in(dir.path()));
        assert!(!dir.path().join("old.embeddings.safetensors").exists());
    }

    #[test]
    fn models_are_the_same_when_their_weights_are() {
        let record = |name: &str, sha256: Option<&str>| ModelRecord {
            name: name.into(),
            source: "/models/x".into(),
            revision: None,
            weights_sha256: sha256.map(str::to_string),
            licence: None,
        };
        assert!(record("A", Some("1")).same_model(&record("B", Some("1"))));
        assert!(!record("A", Some("1")).same_model(&record("A", Some("2"))));
        assert!(record("A", None).same_model(&record("A", Some("2"))));
        assert!(!record("A", None).same_model(&record("B", Some("1"))));
        assert_eq!(
            record("A", Some("0123456789abcdef")).to_string(),
            "A (weights sha256 0123456789ab, from /models/x)"
        );
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
