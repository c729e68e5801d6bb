//! `keyscribe batch --manifest FILE --out DIR`: one shard of a video library, for Ray tasks,
//! Kubernetes Indexed Jobs and Slurm arrays (the shard comes from the flags or the engine's
//! variables).

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use keyscribe::batch::manifest::{Manifest, Shard, ShardSource};
use keyscribe::batch::{run_shard, BatchError, BatchJob, ShardProgress, ShardReport, VideoOutcome};
use keyscribe::pipeline::StopSignal;

use super::args::{CaptionFlags, ModelArgs, PipelineArgs, SelectionFlags};
use super::print;
use super::terminal::printable;

/// Arguments of `keyscribe batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The videos: a text file of paths (one per line), or a CSV or Parquet file with a
    /// `path` column.
    #[arg(long, value_name = "FILE")]
    manifest: PathBuf,
    /// Where every shard writes its tables (`part-NNNNN-of-MMMMM.parquet`,
    /// `frames-NNNNN.parquet`), completion markers (`_done/`), failures (`_failed/`) and
    /// analyses (`analyses/`); shared by all shards.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// This worker's shard, from 0 (default: `SLURM_ARRAY_TASK_ID`, else
    /// `JOB_COMPLETION_INDEX`, else the whole manifest).
    #[arg(long, value_name = "I")]
    shard_index: Option<usize>,
    /// How many shards the manifest is split into (default: `SLURM_ARRAY_TASK_COUNT`, else
    /// 1); needed with `JOB_COMPLETION_INDEX`.
    #[arg(long, value_name = "N")]
    num_shards: Option<usize>,
    /// Try again the videos an earlier run recorded as failed.
    #[arg(long)]
    retry_failed: bool,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    caption: CaptionFlags,
    #[command(flatten)]
    selection: SelectionFlags,
    #[command(flatten)]
    models: ModelArgs,
    /// Print the shard's summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bars and no line per video (failures and the summary still show).
    #[arg(long, short)]
    quiet: bool,
}

/// The shard's summary as `--json` prints it.
#[derive(Serialize)]
struct SummaryRecord<'a> {
    shard_index: usize,
    num_shards: usize,
    videos: usize,
    analysed: usize,
    already_done: usize,
    from_cache: usize,
    failed: Vec<FailureRecord<'a>>,
    part: String,
    keyframe_rows: usize,
    frames: String,
    frame_rows: usize,
    video_hours: f64,
    elapsed_s: f64,
}

/// One failed video in the summary.
#[derive(Serialize)]
struct FailureRecord<'a> {
    path: &'a str,
    error: &'a str,
}

/// Runs the shard, prints one line per video and a summary; exits with 3 when the shard
/// finished but any of its videos failed, now or before (1 is left for errors that stop
/// the shard: bad arguments, the models, the output directory).
pub fn run(args: BatchArgs) -> anyhow::Result<()> {
    let mut overrides = args.caption.overrides();
    overrides.extend(args.selection.overrides()?);
    overrides.extend(args.models.captioner.overrides());
    let config = args.pipeline.load(overrides)?;
    let (shard, source) = Shard::resolve(args.shard_index, args.num_shards, |name| {
        std::env::var(name).ok()
    })?;
    let manifest = Manifest::read(&args.manifest)?;
    let dirs = args.models.dirs();
    let quiet = args.quiet;
    if !quiet {
        let from = match source {
            ShardSource::Flags => "",
            ShardSource::SlurmArray => " (from the Slurm array)",
            ShardSource::KubernetesIndexedJob => " (from the Kubernetes Indexed Job)",
            ShardSource::Whole => "",
        };
        print::note(format_args!(
            "shard {} of {}{from}: {} of the manifest's {} videos",
            shard.index,
            shard.count,
            manifest.shard(shard).len(),
            manifest.paths.len()
        ));
    }
    let job = BatchJob {
        manifest: &manifest,
        shard,
        out: &args.out,
        config: &config,
        dirs: &dirs,
        retry_failed: args.retry_failed,
        signal: StopSignal::with_interrupt(),
        quiet,
    };
    let report =
        run_shard(&job, &mut |progress| show_progress(progress, quiet)).map_err(into_anyhow)?;
    if args.json {
        print::json_pretty(&summary_record(&report, shard))?;
    }
    print::note(format_args!(
        "{} analysed, {} already done, {} from the cache, {} failed; {} keyframes in {}, {} \
         frames in {}",
        report.analysed,
        report.already_done,
        report.from_cache,
        report.failed.len(),
        report.keyframe_rows,
        printable(&report.part.display().to_string()),
        report.frame_rows,
        printable(&report.frames.display().to_string()),
    ));
    if !report.failed.is_empty() {
        return Err(VideosFailed {
            failed: report.failed.len(),
            videos: report.videos,
            out: printable(&args.out.display().to_string()).into_owned(),
        }
        .into());
    }
    Ok(())
}

/// The shard finished, but some of its videos failed (exit code
/// [`VideosFailed::EXIT_CODE`], so that an engine can tell it from a worker that died).
#[derive(Debug, thiserror::Error)]
#[error(
    "{failed} of the shard's {videos} videos failed (listed above and in {out}/_failed/); run \
     again with --retry-failed to try them again"
)]
pub struct VideosFailed {
    failed: usize,
    videos: usize,
    out: String,
}

impl VideosFailed {
    /// The exit code of a finished shard with failed videos.
    pub const EXIT_CODE: u8 = 3;
}

/// One line per video: failures always, the rest unless quiet.
fn show_progress(progress: &ShardProgress<'_>, quiet: bool) {
    let status = match progress.outcome {
        VideoOutcome::Analysed => "analysed".to_string(),
        VideoOutcome::AlreadyDone => "already done".to_string(),
        VideoOutcome::FromCache => "taken from the analysis cache".to_string(),
        VideoOutcome::Failed(error) => format!("failed: {error}"),
        VideoOutcome::FailedBefore(error) => {
            format!("failed before (not retried without --retry-failed): {error}")
        }
    };
    let failed = matches!(
        progress.outcome,
        VideoOutcome::Failed(_) | VideoOutcome::FailedBefore(_)
    );
    if quiet && !failed {
        return;
    }
    print::note(format_args!(
        "[{}/{}] {}: {}  ({:.2} h of video in {:.0} s, {:.1} h of video per hour)",
        progress.done,
        progress.total,
        printable(progress.path),
        printable(&status),
        progress.video_seconds / 3600.0,
        progress.elapsed.as_secs_f64(),
        progress.speed(),
    ));
}

/// The summary `--json` prints.
fn summary_record(report: &ShardReport, shard: Shard) -> SummaryRecord<'_> {
    SummaryRecord {
        shard_index: shard.index,
        num_shards: shard.count,
        videos: report.videos,
        analysed: report.analysed,
        already_done: report.already_done,
        from_cache: report.from_cache,
        failed: report
            .failed
            .iter()
            .map(|(path, error)| FailureRecord { path, error })
            .collect(),
        part: report.part.display().to_string(),
        keyframe_rows: report.keyframe_rows,
        frames: report.frames.display().to_string(),
        frame_rows: report.frame_rows,
        video_hours: report.video_seconds / 3600.0,
        elapsed_s: report.elapsed.as_secs_f64(),
    }
}

/// A batch error, with a pipeline error kept as itself so that Ctrl-C is reported as an
/// interruption (exit 130).
pub fn into_anyhow(error: BatchError) -> anyhow::Error {
    match error {
        BatchError::Pipeline(error) => (*error).into(),
        other => other.into(),
    }
}
