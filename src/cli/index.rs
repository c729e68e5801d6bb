//! `keyscribe index DIR`: analyse every video in a folder into a searchable library.

use std::path::PathBuf;

use clap::Args;

use keyscribe::pipeline::{index_folder, StopSignal};

use super::args::{ModelArgs, PipelineArgs};

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

/// Analyses the folder and reports what was done.
pub fn run(args: IndexArgs) -> anyhow::Result<()> {
    if !args.dir.is_dir() {
        anyhow::bail!("{}: not a directory", args.dir.display());
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
                eprintln!("[{}/{}] {}: {status}", position + 1, total, video.display());
            }
        },
    )?;
    for (video, reason) in &report.failed {
        eprintln!("keyscribe: warning: skipped {}: {reason}", video.display());
    }
    eprintln!(
        "{} analysed, {} already analysed, {} failed; index: {}",
        report.analysed.len(),
        report.skipped.len(),
        report.failed.len(),
        report.index.display()
    );
    Ok(())
}
