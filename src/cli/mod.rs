//! Command-line interface: one file per subcommand, flags shared by several commands
//! declared once in `args`. Results go to stdout, messages for people to stderr; errors are
//! one line naming the input and the problem; `-` is stdin or stdout.

mod analysis_input;
mod args;
mod batch;
mod cache;
mod describe;
mod embed;
mod export;
mod frames;
mod index;
mod io;
mod models;
mod pipelines;
mod print;
mod probe;
mod report;
mod run;
mod search;
mod split;
mod summarize;
mod terminal;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use keyscribe::pipeline::PipelineError;

/// Video keyframe analysis: MobileCLIP2 keyframes, FastVLM captions, timestamped output.
#[derive(Debug, Parser)]
#[command(name = "keyscribe", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what FFmpeg sees in a video: duration, size, rate, rotation, start time.
    Probe(probe::ProbeArgs),
    /// Write sampled frames (or the codec key frames) as JPEG files named by their timecode,
    /// with index.json.
    Frames(frames::FramesArgs),
    /// List, download or check the models (MobileCLIP2 embedders, FastVLM captioners).
    Models(models::ModelsArgs),
    /// Write an analysis as subtitles (SRT, WebVTT), chapters (WebVTT, ffmetadata), tables
    /// (JSON, JSON Lines, CSV, scene CSV), editors' timelines (EDL, OTIO, FCPXML) or pictures.
    Export(export::ExportArgs),
    /// Write an analysis as one self-contained HTML page: thumbnails, captions, a timeline of
    /// scene changes, summary and chapters, and a filter box.
    Report(report::ReportArgs),
    /// Analyse a video: MobileCLIP2 keyframes where the picture changes, a FastVLM caption
    /// for each, written as a timestamped analysis document.
    Run(run::RunArgs),
    /// Select keyframes only (no captions): the analysis document without descriptions.
    Keyframes(run::RunArgs),
    /// Find the scenes that match a text in a video, an analysis, or a library.
    Search(search::SearchArgs),
    /// Analyse every video in a folder into a searchable library (resumable), or make a
    /// library from the tables of `keyscribe batch`.
    Index(index::IndexArgs),
    /// Analyse one shard of a manifest of videos into Parquet tables (for Ray, Kubernetes
    /// Indexed Jobs and Slurm arrays); resumable, failures recorded per video.
    Batch(batch::BatchArgs),
    /// Write a summary paragraph and titled chapters of a video or an analysis with the
    /// captioner's language model, stored in the analysis.
    Summarize(summarize::SummarizeArgs),
    /// Describe images with the captioner (loaded once), streamed as they are generated.
    Describe(describe::DescribeArgs),
    /// Print the embedder's vectors for images or texts (L2-normalised).
    Embed(embed::EmbedArgs),
    /// List the built-in pipelines or print one's TOML.
    Pipelines(pipelines::PipelinesArgs),
    /// Show, list or clear the cache of analyses (model weights are not kept there).
    Cache(cache::CacheArgs),
    /// Cut a video at its analysis's scene boundaries into one file per scene.
    Split(split::SplitArgs),
    /// Caption a live stream (network URL, capture device or stdin) as it happens: a JSON
    /// line per keyframe, rotating analysis documents.
    Watch(watch::WatchArgs),
}

/// Runs the command line and maps the outcome to an exit code: 0 success (also when the
/// reader of stdout closed it early), 1 failure, 2 bad usage (clap), 3 a batch shard that
/// finished with failed videos, 130 interrupted.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A forced instruction set the CPU lacks (or a misspelt one) stops every command here,
    // before a kernel could run, rather than on an illegal instruction.
    if let Err(error) = keyscribe::kernels::Isa::configured() {
        return print_error(&error.into());
    }
    let result = match cli.command {
        Command::Probe(args) => probe::run(args),
        Command::Frames(args) => frames::run(args),
        Command::Models(args) => models::run(args),
        Command::Export(args) => export::run(args),
        Command::Report(args) => report::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Run(args) => run::run(args, true),
        Command::Keyframes(args) => run::run(args, false),
        Command::Search(args) => search::run(args),
        Command::Index(args) => index::run(args),
        Command::Batch(args) => batch::run(args),
        Command::Summarize(args) => summarize::run(args),
        Command::Describe(args) => describe::run(args),
        Command::Pipelines(args) => pipelines::run(args),
        Command::Cache(args) => cache::run(args),
        Command::Split(args) => split::run(args),
        Command::Watch(args) => watch::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stopped early (`| head`) is a normal end.
        Err(error) if print::is_closed_stdout(&error) => ExitCode::SUCCESS,
        Err(error) => print_error(&error),
    }
}

/// Prints an error as one line (its context chain joined) and picks the exit code.
fn print_error(error: &anyhow::Error) -> ExitCode {
    let interrupted = error
        .chain()
        .any(|cause| matches!(cause.downcast_ref(), Some(PipelineError::Interrupted)));
    if interrupted {
        print::note("keyscribe: interrupted");
        return ExitCode::from(130);
    }
    if error.downcast_ref::<batch::VideosFailed>().is_some() {
        print::note(format_args!("keyscribe: {error}"));
        return ExitCode::from(batch::VideosFailed::EXIT_CODE);
    }
    print::note(format_args!("keyscribe: error: {}", one_line(error)));
    ExitCode::FAILURE
}

/// The error's chain of causes joined with `: `, leaving out causes whose text an outer
/// message already includes (typed errors often print their source themselves). Only a
/// cause's first line counts: candle's errors carry a backtrace after theirs.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let full = cause.to_string();
        let text = full.lines().next().unwrap_or_default();
        if line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}
