//! `keyscribe export ANALYSIS --format F [-o FILE]`: subtitles, tables, editors' timelines,
//! chapters and keyframe pictures from an analysis.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use keyscribe::analysis::Analysis;
use keyscribe::output::images::{write_images, ImageKind};
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
    /// (`x.chapters.vtt` means chapters, `x.scenes.csv` the scene list).
    #[arg(long, short, value_enum)]
    format: Option<Format>,
    /// Write to this file (atomically) instead of stdout (`-` is stdout too); for `images`,
    /// the directory to write the pictures and index.json into.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// The analysed video, when it is not where the analysis says: `images` decodes it, and
    /// EDL, OTIO and FCPXML name it as their media.
    #[arg(long)]
    video: Option<PathBuf>,
    /// Picture format for `--format images`.
    #[arg(long, value_enum, default_value = "jpeg")]
    image_type: ImageKind,
}

/// Renders the analysis in the chosen format to stdout or the output file (or, for
/// `images`, decodes the keyframes into the output directory).
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
        (None, None) => bail!(
            "no --format given (srt, vtt, chapters, json, jsonl, csv, edl, otio, fcpxml, ffmetadata, scenes-csv or images)"
        ),
    };
    let mut analysis = load_analysis(&args.analysis)?;
    let source = args.analysis.display();
    if format == Format::Images {
        return export_images(&args, &analysis);
    }
    if let Some(path) = &args.output {
        prepare_outputs(
            &[NamedPath::new("analysis document", &args.analysis)],
            &[NamedPath::new("export file", path)],
        )?;
    }
    if format.needs_captions() && output::caption_cues(&analysis).is_empty() {
        print::note(format_args!("keyscribe: warning: {source} has no captions, so the {format} file has no cues (was it made without a captioner?)"));
    }
    if format == Format::Chapters && analysis.chapters.is_empty() {
        print::note(format_args!("keyscribe: warning: {source} has no chapters, so the chapters file has no cues (run `keyscribe summarize` first)"));
    }
    if matches!(format, Format::Edl | Format::Otio | Format::Fcpxml) {
        analysis.video.path = media_path(&args, &analysis);
    }
    let text = output::render(format, &analysis).with_context(|| source.to_string())?;
    match &args.output {
        Some(path) => write_output(path, text.as_bytes()),
        None => write_stdout(text.as_bytes()),
    }
}

/// The video path an editor's timeline names: `--video`, else the analysis's path made
/// absolute when the file is found from the current directory (editors look media up by
/// absolute path), else the analysis's path as recorded, with a warning.
fn media_path(args: &ExportArgs, analysis: &Analysis) -> String {
    let recorded = Path::new(&analysis.video.path);
    let chosen = args.video.as_deref().unwrap_or(recorded);
    if chosen.is_file() {
        if let Ok(absolute) = std::path::absolute(chosen) {
            return absolute.to_string_lossy().into_owned();
        }
    } else {
        print::note(format_args!(
            "keyscribe: warning: the video {} was not found, so the timeline names it as written (pass --video)",
            chosen.display()
        ));
    }
    chosen.to_string_lossy().into_owned()
}

/// `--format images`: the keyframes decoded from the analysed video into a directory.
fn export_images(args: &ExportArgs, analysis: &Analysis) -> anyhow::Result<()> {
    let Some(out_dir) = &args.output else {
        bail!("--format images writes one picture per keyframe: pass --output DIR");
    };
    let video = args
        .video
        .clone()
        .unwrap_or_else(|| PathBuf::from(&analysis.video.path));
    check_same_video(&video, analysis)?;
    let index = write_images(&video, analysis, out_dir, args.image_type)
        .with_context(|| format!("writing keyframe pictures to {}", out_dir.display()))?;
    print::note(format_args!(
        "wrote {} keyframe pictures and index.json to {}",
        index.keyframes.len(),
        out_dir.display()
    ));
    Ok(())
}

/// Fails unless `video` is the file the analysis was made from (same SHA-256), so that
/// pictures and cuts come from the frames the analysis describes.
pub fn check_same_video(video: &Path, analysis: &Analysis) -> anyhow::Result<()> {
    let sha256 = keyscribe::cache::file_sha256(video).with_context(|| {
        format!(
            "{}: cannot read the analysed video (pass --video with its path)",
            video.display()
        )
    })?;
    if !analysis.video.sha256.is_empty() && sha256 != analysis.video.sha256 {
        bail!(
            "{}: not the analysed video (its SHA-256 differs from the analysis's)",
            video.display()
        );
    }
    Ok(())
}
