//! `keyscribe export ANALYSIS --format F [-o FILE]`: subtitles and tables from an analysis.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use keyscribe::output::{self, Format};
use keyscribe::output_paths::{prepare_outputs, NamedPath};

use super::analysis_input::load_analysis;
use super::print;

use super::io::{write_output, write_stdout};

/// Arguments of `keyscribe export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The analysis document (the JSON written by `keyscribe run`).
    analysis: PathBuf,
    /// What to write; taken from the extension of --output when not given
    /// (`x.chapters.vtt` means chapters).
    #[arg(long, short, value_enum)]
    format: Option<Format>,
    /// Write to this file (atomically) instead of stdout (`-` is stdout too).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// Renders the analysis in the chosen format to stdout or the output file.
pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let format = match (args.format, &args.output) {
        (Some(format), _) => format,
        (None, Some(path)) => path
            .file_name()
            .and_then(|name| Format::from_file_name(&name.to_string_lossy()))
            .with_context(|| {
                format!(
                    "cannot tell the format from the name {}: pass --format",
                    path.display()
                )
            })?,
        (None, None) => bail!("no --format given (srt, vtt, chapters, json, jsonl or csv)"),
    };
    let analysis = load_analysis(&args.analysis)?;
    if let Some(path) = &args.output {
        prepare_outputs(
            &[NamedPath::new("analysis document", &args.analysis)],
            &[NamedPath::new("export file", path)],
        )?;
    }
    let source = args.analysis.display();
    if format.needs_captions() && output::caption_cues(&analysis).is_empty() {
        print::note(format_args!("keyscribe: warning: {source} has no captions, so the {format} file has no cues (was it made without a captioner?)"));
    }
    if format == Format::Chapters && analysis.chapters.is_empty() {
        print::note(format_args!("keyscribe: warning: {source} has no chapters, so the chapters file has no cues (run `keyscribe summarize` first)"));
    }
    let text = output::render(format, &analysis);
    match &args.output {
        Some(path) => write_output(path, text.as_bytes()),
        None => write_stdout(text.as_bytes()),
    }
}
