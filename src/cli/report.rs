//! `keyscribe report ANALYSIS -o report.html`: one self-contained HTML page to look at.

use std::path::PathBuf;

use clap::Args;

use keyscribe::analysis::Analysis;
use keyscribe::output::html;
use keyscribe::pipeline::report_inputs;

use super::io::{is_stdio, write_output};

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
    let analysis = Analysis::load(&args.analysis)?;
    let (inputs, warnings) = report_inputs(&args.analysis, &analysis);
    for warning in warnings {
        eprintln!("keyscribe: warning: {warning}");
    }
    let page = html::render(&analysis, &inputs);
    write_output(&args.output, page.as_bytes())?;
    if !is_stdio(&args.output) {
        eprintln!("wrote {}", args.output.display());
    }
    Ok(())
}
