//! The staged pipeline: stages on threads, bounded channels between them, one stop signal,
//! and progress by media time.

mod config;
mod frames;
mod job;
mod library;
mod live;
mod progress;
mod report;
mod run;
mod stages;

use std::path::PathBuf;

use thiserror::Error;

pub use config::{
    built_in_pipeline, built_in_pipelines, BuiltInPipeline, CaptionSettings, ConfigError,
    DecodeSettings, EmbedSettings, Override, OverrideValue, PipelineConfig,
};
pub use frames::{write_frames, FramesIndex, WrittenFrame};
pub use job::{
    analyse_video, analyse_video_reporting, cache_key, cached_or_analysed, load_captioner,
    load_embedder, load_embedder_recorded_in, load_models, load_recorded_embedder, load_summarizer,
    locate_captioner, locate_embedder, store_analysis, verify_model, video_sha256, AnalysisRequest,
    ModelDirs, Obtained,
};
pub use library::{
    analyse_in_turn, find_analyses, find_videos, index_folder, library_document, open_index,
    regular_file_sha256, FileProblem, FolderScan, IndexReport, INDEX_FILE, LIBRARY_DIR,
};
pub use live::{watch, LiveEvent, LiveKeyframe, WatchReport, WatchSettings};
pub use progress::Progress;
pub use report::{encode_jpeg, keyframe_thumbnails, report_inputs, THUMBNAIL_WIDTH};
pub use run::{analyse, AnalysisJob, AnalysisOutput, Models, RunEvent};
pub use stages::{StageHandle, Stages, StopSignal};

use crate::analysis::AnalysisError;
use crate::models::store::StoreError;
use crate::models::ModelError;
use crate::search::SearchError;
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
    /// A model's weights could not be found or downloaded.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An analysis document or its sidecar could not be read or written.
    #[error(transparent)]
    Analysis(#[from] AnalysisError),
    /// A search index could not be built, read or queried.
    #[error(transparent)]
    Search(#[from] SearchError),
    /// An output file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Output {
        /// The output path.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Embeddings would be compared with ones of another model.
    #[error(
        "{}: analysed with the embedder {recorded}, but the query would be embedded with \
         {used}; pass --embedder with the model the analysis used",
        document.display()
    )]
    EmbedderMismatch {
        /// The analysis document.
        document: PathBuf,
        /// The embedder it records.
        recorded: String,
        /// The embedder that would embed the query.
        used: String,
    },
    /// The embedder an analysis records is not on this machine.
    #[error(
        "{}: analysed with the embedder {recorded}, which is not on this machine{reason}; \
         pass --embedder DIR with that model",
        document.display()
    )]
    RecordedEmbedderMissing {
        /// The analysis document.
        document: PathBuf,
        /// The embedder it records.
        recorded: String,
        /// What was tried, as `" (...)"`, or empty.
        reason: String,
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
