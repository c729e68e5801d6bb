//! `keyscribe index DIR`: analyse every video in a folder into a searchable library.

use std::path::PathBuf;

use clap::Args;

use keyscribe::pipeline::{index_folder, ModelDirs, PipelineConfig, StopSignal};

use super::print;

/// Arguments of `keyscribe index`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// The folder of videos (searched recursively). Analyses and the index go to
    /// DIR/keyscribe-library/; videos already analysed with the same settings are skipped.
    dir: PathBuf,
    /// A pipeline file, or the name of a built-in one.
    #[arg(long, short, default_value = "default")]
    pipeline: String,
    /// A local MobileCLIP2 checkpoint directory.
    #[arg(long, value_name = "DIR")]
    embedder: Option<PathBuf>,
    /// A local FastVLM checkpoint directory.
    #[arg(long, value_name = "DIR")]
    captioner: Option<PathBuf>,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

/// Analyses the folder and reports what was done.
pub fn run(args: IndexArgs) -> anyhow::Result<()> {
    if !args.dir.is_dir() {
        anyhow::bail!("{}: not a directory", args.dir.display());
    }
    let config = PipelineConfig::load(&args.pipeline)?;
    let dirs = ModelDirs {
        embedder: args.embedder,
        captioner: args.captioner,
    };
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
                print::note(format_args!(
                    "[{}/{}] {}: {status}",
                    position + 1,
                    total,
                    video.display()
                ));
            }
        },
    )?;
    for (video, reason) in &report.failed {
        print::note(format_args!(
            "keyscribe: warning: skipped {}: {reason}",
            video.display()
        ));
    }
    print::note(format_args!(
        "{} analysed, {} already analysed, {} failed; index: {}",
        report.analysed.len(),
        report.skipped.len(),
        report.failed.len(),
        report.index.display()
    ));
    Ok(())
}
