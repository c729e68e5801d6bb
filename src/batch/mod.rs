//! `keyscribe batch`: one shard of a video library, analysed by one worker process into
//! Parquet, the way Ray, Kubernetes Indexed Jobs and Slurm arrays run work.
//!
//! A worker reads the manifest, keeps the videos of its shard (see [`manifest`]), loads the
//! models once and analyses each video as `run` does. What it makes is durable per video
//! before it is counted: the analysis document and its embeddings sidecar in
//! `OUT/analyses/`, then a completion marker `OUT/_done/SHA256.json`. A video that cannot be
//! read or analysed gets `OUT/_failed/KEY.json` (KEY is its SHA-256, or the SHA-256 of its
//! path when the file cannot be read) and the shard goes on. At the end the shard's tables
//! are written from every finished video of the shard ([`tables`]), atomically. A retried or
//! repeated shard skips finished videos and writes the same tables again, byte for byte.
//! A video this machine's analysis cache holds (analysed by `run` with the same settings)
//! is taken from there instead of being analysed again.

pub mod library;
pub mod manifest;
pub mod tables;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::analysis::{Analysis, FrameEmbeddings};
use crate::atomic;
use crate::cache::{hex, AnalysisCache};
use crate::pipeline::{
    analyse_in_turn, cache_key, load_embedder, regular_file_sha256, AnalysisRequest, ModelDirs,
    Models, PipelineConfig, PipelineError, StopSignal,
};
use manifest::{Manifest, Shard};
use tables::VideoRows;

/// Completion markers, one per finished video.
pub const DONE_DIR: &str = "_done";
/// Failure records, one per video that could not be analysed.
pub const FAILED_DIR: &str = "_failed";
/// Analysis documents and sidecars, one pair per finished video.
pub const ANALYSES_DIR: &str = "analyses";

/// What can stop a batch.
#[derive(Debug, Error)]
pub enum BatchError {
    /// The manifest cannot be used.
    #[error("manifest {}: {problem}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The shard index or count cannot be used.
    #[error("{0}")]
    Shard(String),
    /// A table could not be made from the analyses.
    #[error("{0}")]
    Table(String),
    /// A table is not one `keyscribe batch` wrote, or is damaged.
    #[error("{}: {problem}", path.display())]
    BadTable {
        /// The table file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The models, the pipeline or Ctrl-C stopped every video (boxed: it is large).
    #[error(transparent)]
    Pipeline(Box<PipelineError>),
}

impl From<PipelineError> for BatchError {
    fn from(error: PipelineError) -> Self {
        BatchError::Pipeline(Box::new(error))
    }
}

/// The completion marker of a finished video (`_done/SHA256.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneMarker {
    /// The video's path as the manifest that first finished it spelled it.
    pub path: String,
    /// SHA-256 of the video's content.
    pub video_sha256: String,
    /// SHA-256 of the pipeline settings it was analysed with.
    pub settings_sha256: String,
    /// The video's duration in seconds.
    pub duration_s: f64,
    /// Rows it adds to the keyframe table.
    pub keyframes: usize,
    /// Rows it adds to the frame table.
    pub frames: usize,
    /// Its analysis document, relative to the output directory.
    pub analysis: String,
}

/// The record of a video that could not be analysed (`_failed/KEY.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedMarker {
    /// The video's path as the manifest spells it.
    pub path: String,
    /// SHA-256 of its content, when it could be read.
    pub video_sha256: Option<String>,
    /// What went wrong, in one line.
    pub error: String,
}

/// One shard's work.
pub struct BatchJob<'a> {
    /// The whole manifest (the shard is taken from it).
    pub manifest: &'a Manifest,
    /// Which shard this worker runs.
    pub shard: Shard,
    /// Where the tables, markers and analyses go (shared by all shards).
    pub out: &'a Path,
    /// The pipeline, as for `run`.
    pub config: &'a PipelineConfig,
    /// Model directories given on the command line.
    pub dirs: &'a ModelDirs,
    /// Try again the videos recorded as failed (else they are skipped and still count as
    /// failed).
    pub retry_failed: bool,
    /// Ctrl-C.
    pub signal: StopSignal,
    /// No progress bars while a video is analysed.
    pub quiet: bool,
}

/// What happened to one video of the shard.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoOutcome {
    /// Analysed now.
    Analysed,
    /// Found in this machine's analysis cache (made by `run`, `index` or `search` with the
    /// same settings) and stored with the batch's analyses: nothing was decoded.
    FromCache,
    /// Finished by an earlier run with the same settings: nothing was done.
    AlreadyDone,
    /// Could not be analysed now.
    Failed(String),
    /// Recorded as failed by an earlier run and not tried again (no `--retry-failed`).
    FailedBefore(String),
}

/// Progress of the shard after one video.
#[derive(Debug, Clone)]
pub struct ShardProgress<'a> {
    /// Videos of the shard handled so far, this one included.
    pub done: usize,
    /// Videos in the shard.
    pub total: usize,
    /// The video, as the manifest spells it.
    pub path: &'a str,
    /// What happened to it.
    pub outcome: &'a VideoOutcome,
    /// Seconds of video analysed by this process so far.
    pub video_seconds: f64,
    /// Time since the shard started.
    pub elapsed: Duration,
}

impl ShardProgress<'_> {
    /// Hours of video analysed per hour of wall time so far.
    pub fn speed(&self) -> f64 {
        self.video_seconds / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What a shard did.
#[derive(Debug, Clone, Default)]
pub struct ShardReport {
    /// Videos in the shard.
    pub videos: usize,
    /// Videos analysed now.
    pub analysed: usize,
    /// Videos finished by earlier runs.
    pub already_done: usize,
    /// Videos taken from this machine's analysis cache.
    pub from_cache: usize,
    /// Videos that failed, now or before, with their errors.
    pub failed: Vec<(String, String)>,
    /// The keyframe table and its rows.
    pub part: PathBuf,
    /// Rows of the keyframe table.
    pub keyframe_rows: usize,
    /// The frame table.
    pub frames: PathBuf,
    /// Rows of the frame table.
    pub frame_rows: usize,
    /// Seconds of video analysed now.
    pub video_seconds: f64,
    /// Wall time of the shard.
    pub elapsed: Duration,
}

/// SHA-256 (hex) of the settings an analysis is made with, captions on or off.
pub fn settings_sha256(config: &PipelineConfig) -> String {
    let mut settings = config.to_json();
    if !config.caption.enabled {
        settings["caption"] = serde_json::Value::Null;
    }
    hex(&Sha256::digest(
        crate::cache::canonical_json(&settings).as_bytes(),
    ))
}

/// Runs one shard: analyses the videos not finished yet, records failures, and writes the
/// shard's tables. `on_video` is told the progress after each video. Returns an error only
/// for what stops every video (the models, the output directory, Ctrl-C); videos that fail
/// are in the report.
pub fn run_shard(
    job: &BatchJob<'_>,
    on_video: &mut dyn FnMut(&ShardProgress<'_>),
) -> Result<ShardReport, BatchError> {
    let started = Instant::now();
    let paths = job.manifest.shard(job.shard);
    let outputs = OutputDir::create(job.out)?;
    let settings = settings_sha256(job.config);
    let mut report = ShardReport {
        videos: paths.len(),
        part: job
            .out
            .join(tables::part_name(job.shard.index, job.shard.count)),
        frames: job.out.join(tables::frames_name(job.shard.index)),
        ..ShardReport::default()
    };
    let mut finished: Vec<(&str, Analysis, FrameEmbeddings)> = Vec::new();
    let mut models: Option<Models> = None;
    for (position, &path) in paths.iter().enumerate() {
        job.signal.check()?;
        let outcome = match outputs.video(job, path, &settings, &mut models)? {
            Ok((outcome, analysis, frames)) => {
                match outcome {
                    VideoOutcome::Analysed => {
                        report.analysed += 1;
                        report.video_seconds += analysis.video.duration_s;
                    }
                    VideoOutcome::FromCache => report.from_cache += 1,
                    _ => report.already_done += 1,
                }
                finished.push((path, analysis, frames));
                outcome
            }
            Err(failure) => {
                report
                    .failed
                    .push((path.to_string(), failure.error.clone()));
                if failure.before {
                    VideoOutcome::FailedBefore(failure.error)
                } else {
                    VideoOutcome::Failed(failure.error)
                }
            }
        };
        on_video(&ShardProgress {
            done: position + 1,
            total: paths.len(),
            path,
            outcome: &outcome,
            video_seconds: report.video_seconds,
            elapsed: started.elapsed(),
        });
    }
    let dim = match finished.first() {
        Some((_, _, frames)) => frames.dim,
        // An empty table still says how long its embeddings are, so that the shards'
        // tables read as one dataset.
        None => match &models {
            Some(models) => models.embedder.dim(),
            None => load_embedder(job.config, job.dirs)?.0.dim(),
        },
    };
    let rows: Vec<VideoRows<'_>> = finished
        .iter()
        .map(|(path, analysis, frames)| VideoRows {
            path,
            analysis,
            frames,
            settings_sha256: &settings,
        })
        .collect();
    report.keyframe_rows = tables::write_keyframes(&report.part, &rows, dim)?;
    report.frame_rows = tables::write_frames(&report.frames, &rows, dim)?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The result of one video: finished (now or before) with its analysis, or failed.
type VideoResult = Result<(VideoOutcome, Analysis, FrameEmbeddings), Failure>;

/// Why a video has no rows.
struct Failure {
    /// The error, in one line.
    error: String,
    /// Recorded by an earlier run and not tried again.
    before: bool,
}

/// The output directory of a batch.
struct OutputDir {
    root: PathBuf,
}

impl OutputDir {
    /// Creates the directory and its marker and analysis folders.
    fn create(root: &Path) -> Result<Self, BatchError> {
        for dir in [
            root.to_path_buf(),
            root.join(DONE_DIR),
            root.join(FAILED_DIR),
            root.join(ANALYSES_DIR),
        ] {
            std::fs::create_dir_all(&dir).map_err(|source| BatchError::Write {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(OutputDir {
            root: root.to_path_buf(),
        })
    }

    /// Finishes one video: found done, skipped as failed before, analysed now, or failed
    /// now (recorded).
    fn video(
        &self,
        job: &BatchJob<'_>,
        path: &str,
        settings: &str,
        models: &mut Option<Models>,
    ) -> Result<VideoResult, BatchError> {
        if path.contains("://") {
            return self.fail(
                path,
                None,
                "is a URL; `keyscribe batch` reads local files and mounted shares".to_string(),
            );
        }
        let video = Path::new(path);
        let sha256 = match regular_file_sha256(video, &job.signal) {
            Ok(sha256) => sha256,
            Err(PipelineError::Interrupted) => return Err(PipelineError::Interrupted.into()),
            Err(error) => return self.fail(path, None, error.to_string()),
        };
        if let Some((analysis, frames)) = self.done(&sha256, settings) {
            return Ok(Ok((VideoOutcome::AlreadyDone, analysis, frames)));
        }
        let failed_marker = self.failed_path(&sha256);
        if !job.retry_failed {
            if let Some(before) = read_json::<FailedMarker>(&failed_marker) {
                return Ok(Err(Failure {
                    error: before.error,
                    before: true,
                }));
            }
        }
        let document = self.analysis_path(&sha256);
        if let Some((analysis, frames)) = self.cached_analysis(job, path, &sha256, &document) {
            self.finish(path, &sha256, settings, &analysis, &frames)?;
            return Ok(Ok((VideoOutcome::FromCache, analysis, frames)));
        }
        let request = AnalysisRequest {
            config: job.config,
            signal: job.signal.clone(),
            quiet: job.quiet,
        };
        let captions = job.config.caption.enabled;
        match analyse_in_turn(
            video,
            sha256.clone(),
            request,
            job.dirs,
            captions,
            models,
            &document,
        )? {
            Ok((analysis, frames)) => {
                self.finish(path, &sha256, settings, &analysis, &frames)?;
                Ok(Ok((VideoOutcome::Analysed, analysis, frames)))
            }
            Err(problem) => self.fail(path, Some(sha256), problem.message),
        }
    }

    /// Writes the completion marker of a video whose analysis is stored, and removes any
    /// record of an earlier failure.
    fn finish(
        &self,
        path: &str,
        sha256: &str,
        settings: &str,
        analysis: &Analysis,
        frames: &FrameEmbeddings,
    ) -> Result<(), BatchError> {
        let marker = DoneMarker {
            path: path.to_string(),
            video_sha256: sha256.to_string(),
            settings_sha256: settings.to_string(),
            duration_s: analysis.video.duration_s,
            keyframes: analysis.keyframes.len(),
            frames: frames.len(),
            analysis: format!("{ANALYSES_DIR}/{sha256}.analysis.json"),
        };
        write_json(&self.done_path(sha256), &marker)?;
        let _ = std::fs::remove_file(self.failed_path(sha256));
        Ok(())
    }

    /// The analysis of this content with these settings from this machine's analysis
    /// cache, stored at `document` under the manifest's name for the video.
    fn cached_analysis(
        &self,
        job: &BatchJob<'_>,
        path: &str,
        sha256: &str,
        document: &Path,
    ) -> Option<(Analysis, FrameEmbeddings)> {
        let key = cache_key(sha256, job.config, job.config.caption.enabled);
        let cached = AnalysisCache::from_env().lookup(&key)?;
        let mut analysis = Analysis::load(&cached).ok()?;
        let frames = analysis.load_frames(&cached).ok()?;
        analysis.video.path = path.to_string();
        analysis.save_with_frames(&frames, document).ok()?;
        Some((analysis, frames))
    }

    /// The analysis of a video finished with these settings, when its marker and its
    /// document (with sidecar) are there.
    fn done(&self, sha256: &str, settings: &str) -> Option<(Analysis, FrameEmbeddings)> {
        let marker: DoneMarker = read_json(&self.done_path(sha256))?;
        if marker.settings_sha256 != settings {
            return None;
        }
        let document = self.root.join(&marker.analysis);
        let analysis = Analysis::load(&document).ok()?;
        let frames = analysis.load_frames(&document).ok()?;
        Some((analysis, frames))
    }

    /// Records a failure and returns it as the video's outcome.
    fn fail(
        &self,
        path: &str,
        sha256: Option<String>,
        error: String,
    ) -> Result<VideoResult, BatchError> {
        let key = sha256
            .clone()
            .unwrap_or_else(|| hex(&Sha256::digest(path.as_bytes())));
        let marker = FailedMarker {
            path: path.to_string(),
            video_sha256: sha256,
            error: error.clone(),
        };
        write_json(&self.failed_path(&key), &marker)?;
        Ok(Err(Failure {
            error,
            before: false,
        }))
    }

    fn done_path(&self, sha256: &str) -> PathBuf {
        self.root.join(DONE_DIR).join(format!("{sha256}.json"))
    }

    fn failed_path(&self, key: &str) -> PathBuf {
        self.root.join(FAILED_DIR).join(format!("{key}.json"))
    }

    fn analysis_path(&self, sha256: &str) -> PathBuf {
        self.root
            .join(ANALYSES_DIR)
            .join(format!("{sha256}.analysis.json"))
    }
}

/// A marker, when it is there and readable.
fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes a marker atomically.
fn write_json(path: &Path, value: &impl Serialize) -> Result<(), BatchError> {
    let mut text = serde_json::to_string_pretty(value).expect("markers serialise");
    text.push('\n');
    atomic::write(path, text.as_bytes()).map_err(|source| BatchError::Write {
        path: path.to_path_buf(),
        source,
    })
}
