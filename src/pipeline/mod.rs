//! The staged pipeline: stages on threads, bounded channels between them, one stop signal,
//! and progress by media time.

mod config;
mod frames;
mod progress;
mod report;
mod stages;

use std::path::PathBuf;

use thiserror::Error;

pub use config::{CaptionSettings, ConfigError, DecodeSettings, EmbedSettings, PipelineConfig};
pub use frames::{write_frames, FramesIndex, WrittenFrame};
pub use progress::Progress;
pub use report::{encode_jpeg, keyframe_thumbnails, report_inputs, THUMBNAIL_WIDTH};
pub use stages::{Stages, StopSignal};

use crate::models::ModelError;
use crate::video::VideoError;

/// What can stop a pipeline run.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// The video could not be read.
    #[error(transparent)]
    Video(#[from] VideoError),
    /// A model could not be loaded or run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// An output file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Output {
        /// The output path.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A stage failed for a reason of its own.
    #[error("{stage}: {message}")]
    Failed {
        /// The stage's name.
        stage: String,
        /// What went wrong.
        message: String,
    },
    /// A stage panicked (a bug); the run was stopped.
    #[error("internal error: the {stage} stage crashed")]
    StagePanicked {
        /// The stage's name.
        stage: String,
    },
    /// The user pressed Ctrl-C.
    #[error("interrupted")]
    Interrupted,
    /// Another stage failed or finished early, so this one stopped.
    #[error("stopped because another stage stopped")]
    Stopped,
}
