//! `keyscribe index DIR`: analyse every video in a folder into a searchable library; and
//! `keyscribe index --from-parquet DIR --out LIBRARY`: a library from the tables of
//! `keyscribe batch`, without decoding any video.

use std::path::{Path, PathBuf};

use clap::Args;

use keyscribe::batch::library::index_tables;
use keyscribe::pipeline::{index_folder, StopSignal};

use super::args::{ModelArgs, PipelineArgs};

use super::print;
use super::terminal::printable;

/// Arguments of `keyscribe index`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// The folder of videos (searched recursively). Analyses and the index go to
    /// DIR/keyscribe-library/; videos already analysed with the same settings are skipped.
    #[arg(
        required_unless_present = "from_parquet",
        conflicts_with = "from_parquet"
    )]
    dir: Option<PathBuf>,
    /// Build the library from the frame and keyframe tables that `keyscribe batch` wrote in
    /// this folder instead (no video is decoded); needs --out.
    #[arg(long, value_name = "DIR", requires = "out")]
    from_parquet: Option<PathBuf>,
    /// Where the library from --from-parquet goes: a folder of index files and
    /// library.json, searched with `keyscribe search LIBRARY "query"`.
    #[arg(long, value_name = "LIBRARY", requires = "from_parquet")]
    out: Option<PathBuf>,
    /// With --from-parquet: the most frames one index file holds before the next is
    /// started (a video is never split); `search` fans a query out over the files.
    #[arg(long, value_name = "N", default_value_t = 10_000_000)]
    max_frames_per_index: usize,
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
    if let (Some(tables), Some(out)) = (&args.from_parquet, &args.out) {
        return from_parquet(tables, out, args.max_frames_per_index);
    }
    let dir = args.dir.clone().unwrap_or_default();
    if !dir.is_dir() {
        anyhow::bail!("{}: not a directory", printable(&dir.display().to_string()));
    }
    let config = args.pipeline.load(args.models.captioner.overrides())?;
    let dirs = args.models.dirs();
    let quiet = args.quiet;
    let report = index_folder(
        &dir,
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

/// Builds a library from batch tables and reports its size.
fn from_parquet(tables: &Path, out: &Path, max_frames_per_index: usize) -> anyhow::Result<()> {
    if !tables.is_dir() {
        anyhow::bail!(
            "{}: not a directory",
            printable(&tables.display().to_string())
        );
    }
    let started = std::time::Instant::now();
    let report = index_tables(
        tables,
        out,
        max_frames_per_index,
        &StopSignal::with_interrupt(),
    )
    .map_err(super::batch::into_anyhow)?;
    for video in &report.repeated {
        print::note(format_args!(
            "keyscribe: {} is in more than one frame table; indexed once",
            printable(video)
        ));
    }
    print::note(format_args!(
        "{} videos, {} frames in {} index files in {:.1} s; library: {}",
        report.videos(),
        report.frames(),
        report.record.indexes.len(),
        started.elapsed().as_secs_f64(),
        printable(&out.display().to_string())
    ));
    Ok(())
}
