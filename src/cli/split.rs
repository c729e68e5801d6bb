//! `keyscribe split VIDEO ANALYSIS [--out DIR] [--exact]`: the video cut into one file per
//! scene.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::print;
use keyscribe::analysis::Analysis;
use keyscribe::split::{split_video, CutMode, Piece, SplitOptions};

use super::export::check_same_video;

/// Arguments of `keyscribe split`.
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// The video to cut.
    video: PathBuf,
    /// Its analysis document (the JSON written by `keyscribe run`).
    analysis: PathBuf,
    /// Directory for the pieces, NAME-Scene-001.EXT, ... (created if missing).
    #[arg(long, short, default_value = ".")]
    out: PathBuf,
    /// Re-encode the video (H.264) so that each piece holds exactly its scene. Without it the
    /// streams are copied, fast and lossless, and each cut moves to the nearest key frame.
    #[arg(long)]
    exact: bool,
    /// Print the pieces as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// One piece as `--json` prints it.
#[derive(Debug, Serialize)]
struct PieceRecord {
    file: String,
    first_scene: usize,
    last_scene: usize,
    start_s: f64,
    end_s: f64,
    start: String,
    end: String,
}

impl From<&Piece> for PieceRecord {
    fn from(piece: &Piece) -> Self {
        PieceRecord {
            file: piece.path.display().to_string(),
            first_scene: piece.first_scene,
            last_scene: piece.last_scene,
            start_s: piece.start.millis() as f64 / 1000.0,
            end_s: piece.end.millis() as f64 / 1000.0,
            start: piece.start.timecode(),
            end: piece.end.timecode(),
        }
    }
}

/// Cuts the video and lists the pieces.
pub fn run(args: SplitArgs) -> anyhow::Result<()> {
    let analysis = Analysis::load(&args.analysis)?;
    check_same_video(&args.video, &analysis)?;
    let name = args
        .video
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "video".to_string());
    let mode = if args.exact {
        CutMode::Exact
    } else {
        CutMode::KeyFrames
    };
    let options = SplitOptions {
        out_dir: args.out.clone(),
        name,
        mode,
    };
    let pieces = split_video(&args.video, &analysis, &options)
        .with_context(|| format!("cutting {}", args.video.display()))?;
    if args.json {
        let records: Vec<PieceRecord> = pieces.iter().map(PieceRecord::from).collect();
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    for piece in &pieces {
        let scenes = if piece.first_scene == piece.last_scene {
            format!("scene {}", piece.first_scene)
        } else {
            format!("scenes {}-{}", piece.first_scene, piece.last_scene)
        };
        print::note(format_args!(
            "{}  {} - {}  {scenes}",
            piece.path.display(),
            piece.start.timecode(),
            piece.end.timecode()
        ));
    }
    if mode == CutMode::KeyFrames {
        print::note(format_args!(
            "{} pieces by stream copy: each cut is at the key frame nearest its scene boundary (--exact re-encodes to cut at the boundaries)",
            pieces.len()
        ));
    } else {
        print::note(format_args!(
            "{} pieces, re-encoded (H.264) at the scene boundaries",
            pieces.len()
        ));
    }
    Ok(())
}
