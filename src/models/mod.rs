//! Neural networks in candle: the embedders (MobileCLIP2, SigLIP2) and captioners (FastVLM,
//! SmolVLM), behind one boundary per role ([`roles`]).
//!
//! One file per model family; shared building blocks live once. Nothing here depends on the
//! stages above. Every model loads through
//! [`weights::Checkpoint`], which refuses files that do not match the architecture.

pub mod checkpoint;
pub mod clip_text;
pub mod clip_tokenizer;
pub mod fastvit;
pub mod fastvlm;
pub mod generation;
pub mod mobileclip;
pub mod preprocess;
pub mod qwen2;
pub mod qwen2_tokenizer;
pub mod roles;
pub mod siglip;
pub mod smolvlm;
pub mod store;
pub mod weights;

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde_json::Value;
use thiserror::Error;

/// The device the captioner runs on: the first CUDA GPU when keyscribe is built with the
/// `cuda` feature and one is present, else the CPU.
pub fn captioner_device() -> Device {
    Device::cuda_if_available(0).unwrap_or(Device::Cpu)
}

/// What can go wrong while loading or running a model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A model file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A model file exists but its contents are unusable.
    #[error("{}: {problem}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The architecture needs a tensor the checkpoint does not hold.
    #[error("{}: tensor `{name}` is missing{}", path.display(), expected_shape(expected))]
    MissingTensor {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor's name in the file.
        name: String,
        /// The shape the architecture expects, when known.
        expected: Option<Vec<usize>>,
    },
    /// A tensor exists with a different shape than the architecture expects.
    #[error("{}: tensor `{name}` has shape {found:?}, expected {expected:?}", path.display())]
    ShapeMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor's name in the file.
        name: String,
        /// The shape the architecture expects.
        expected: Vec<usize>,
        /// The shape stored in the file.
        found: Vec<usize>,
    },
    /// The checkpoint holds tensors the architecture does not use.
    #[error(
        "{}: {count} tensors are not used by the architecture (e.g. {}); the file does not match the configuration",
        path.display(),
        names.join(", ")
    )]
    UnusedTensors {
        /// The checkpoint file.
        path: PathBuf,
        /// How many tensors went unused.
        count: usize,
        /// The first few of them.
        names: Vec<String>,
    },
    /// A configuration file is missing a field or holds a value the code cannot use.
    #[error("{}: {problem}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A checkpoint directory lacks files its layout needs.
    #[error("{}: missing {} (the files of {layout})", dir.display(), files.join(", "))]
    MissingFiles {
        /// The directory.
        dir: PathBuf,
        /// What is missing, alternatives written `a or b + c`.
        files: Vec<String>,
        /// The layout whose files were expected.
        layout: String,
    },
    /// A checkpoint directory holds another kind of model than the one asked for.
    #[error("{}: {found}, not {wanted}", dir.display())]
    WrongModel {
        /// The directory.
        dir: PathBuf,
        /// What it holds.
        found: String,
        /// What was asked for.
        wanted: String,
    },
    /// A tensor holds NaN or infinite values: the weights are damaged.
    #[error("{}: tensor `{name}` holds {count} NaN or infinite values", path.display())]
    NonFinite {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor's name in the file.
        name: String,
        /// How many of its values are not finite.
        count: usize,
    },
    /// A picture given to a model is outside the size limits of [`crate::picture`].
    #[error(transparent)]
    Picture(#[from] crate::picture::PictureSizeError),
    /// A tensor operation failed (loading or running); wrapped loader errors keep their
    /// message, backtraces are left out.
    #[error("{}", first_line(&.0.to_string()))]
    Candle(#[from] candle_core::Error),
}

/// A configuration file's JSON, or `None` when the file does not exist; unreadable or
/// malformed files are errors naming them.
pub(crate) fn read_json(path: &Path) -> Result<Option<Value>, ModelError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|error| ModelError::BadFile {
                path: path.to_path_buf(),
                problem: format!("not valid JSON ({error})"),
            }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ModelError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn expected_shape(expected: &Option<Vec<usize>>) -> String {
    match expected {
        Some(shape) => format!(" (expected shape {shape:?})"),
        None => String::new(),
    }
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().to_string()
}
