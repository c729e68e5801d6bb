//! `keyscribe report ANALYSIS -o report.html`: one self-contained HTML page to look at.

use std::path::{Path, PathBuf};

use clap::Args;

use keyscribe::output::html;
use keyscribe::output_paths::{prepare_outputs, NamedPath};
use keyscribe::pipeline::report_inputs;

use super::analysis_input::load_analysis;
use super::io::{is_stdio, write_output};
use super::print;

/// Arguments of `keyscribe report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The analysis document (the JSON written by `keyscribe run`).
    analysis: PathBuf,
    /// The HTML file to write (`-` for stdout).
    #[arg(long, short)]
    output: PathBuf,
}

/// Writes the report: thumbnails are fetched again from the analysed video, the timeline
/// comes from the embeddings sidecar; either is left out with a warning when unavailable.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let analysis = load_analysis(&args.analysis)?;
    let sidecar = analysis.embeddings_path(&args.analysis).ok();
    let video = Path::new(&analysis.video.path);
    let mut read = vec![
        NamedPath::new("analysis document", &args.analysis),
        NamedPath::new("analysed video", video),
    ];
    if let Some(sidecar) = &sidecar {
        read.push(NamedPath::new("embeddings sidecar", sidecar));
    }
    prepare_outputs(&read, &[NamedPath::new("report", &args.output)])?;
    let (inputs, warnings) = report_inputs(&args.analysis, &analysis);
    for warning in warnings {
        print::note(format_args!("keyscribe: warning: {warning}"));
    }
    let page = html::render(&analysis, &inputs);
    write_output(&args.output, page.as_bytes())?;
    if !is_stdio(&args.output) {
        print::note(format_args!("wrote {}", args.output.display()));
    }
    Ok(())
}
