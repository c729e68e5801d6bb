//! `keyscribe index DIR`: analyse every video in a folder into a searchable library.

use std::path::PathBuf;

use clap::Args;

use keyscribe::pipeline::{index_folder, StopSignal};

use super::args::{ModelArgs, PipelineArgs};

use super::print;
use super::terminal::printable;

/// Arguments of `keyscribe index`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// The folder of videos (searched recursively). Analyses and the index go to
    /// DIR/keyscribe-library/; videos already analysed with the same settings are skipped.
    dir: PathBuf,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    models: ModelArgs,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

/// Analyses the folder and reports what was done: every entry left out or failed on its own
/// line, then a summary line. Fails (exit 1) when any entry failed; the others are indexed.
pub fn run(args: IndexArgs) -> anyhow::Result<()> {
    if !args.dir.is_dir() {
        anyhow::bail!(
            "{}: not a directory",
            printable(&args.dir.display().to_string())
        );
    }
    let config = args.pipeline.load(args.models.captioner.overrides())?;
    let dirs = args.models.dirs();
    let quiet = args.quiet;
    let report = index_folder(
        &args.dir,
        &config,
        &dirs,
        &StopSignal::with_interrupt(),
        quiet,
        &mut |position, total, video, skipped| {
            if !quiet {
                let status = if skipped {
                    "already analysed"
                } else {
                    "analysing"
                };
                let video = video.display().to_string();
                print::note(format_args!(
                    "[{}/{}] {}: {status}",
                    position + 1,
                    total,
                    printable(&video)
                ));
            }
        },
    )?;
    for problem in &report.ignored {
        print::note(format_args!(
            "keyscribe: ignored {}",
            printable(&problem.message)
        ));
    }
    for problem in &report.failed {
        print::note(format_args!(
            "keyscribe: failed: {}",
            printable(&problem.message)
        ));
    }
    print::note(format_args!(
        "{} analysed, {} already analysed, {} ignored, {} failed; index: {}",
        report.analysed.len(),
        report.skipped.len(),
        report.ignored.len(),
        report.failed.len(),
        printable(&report.index.display().to_string())
    ));
    if !report.failed.is_empty() {
        anyhow::bail!(
            "{} of the folder's entries could not be indexed (listed above); the others are",
            report.failed.len()
        );
    }
    Ok(())
}
