//! `keyscribe frames VIDEO --out DIR`: sampled frames as JPEG files with their timestamps.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use keyscribe::pipeline::{write_frames, StopSignal};
use keyscribe::time::MediaTime;
use keyscribe::video::{DecodeOptions, ResizeMode, SampleRate, Size};

use super::print;

/// Arguments of `keyscribe frames`.
#[derive(Debug, Args)]
pub struct FramesArgs {
    /// The video file.
    video: PathBuf,
    /// Directory for the JPEG files and index.json (created if missing).
    #[arg(long, short)]
    out: PathBuf,
    /// Frames per second to take, by presentation time, or `all` for every frame.
    #[arg(long, default_value = "2")]
    sample_fps: SampleRate,
    /// Size of the written frames: WIDTHxHEIGHT or `native`.
    #[arg(long, default_value = "native")]
    size: Size,
    /// How frames are fitted to --size: stretch, crop (centre) or pad (black bars).
    #[arg(long, default_value = "crop")]
    mode: ResizeMode,
    /// Decode the codec key frames only (the video's I-frames, which decode without
    /// others): much faster, coarser in time. These are not the keyframes that
    /// `keyscribe keyframes` selects by content.
    #[arg(long, alias = "keyframes-only")]
    codec_keyframes: bool,
    /// Start at this time: seconds (90.5) or a timecode (01:30.5); frame times still count
    /// from the start of the file.
    #[arg(long, value_name = "TIME")]
    start: Option<MediaTime>,
    /// Stop at this time: seconds or a timecode.
    #[arg(long, value_name = "TIME")]
    end: Option<MediaTime>,
    /// Print index.json on stdout when done.
    #[arg(long)]
    json: bool,
}

/// Writes the frames and reports how many.
pub fn run(args: FramesArgs) -> anyhow::Result<()> {
    let options = DecodeOptions {
        sample_rate: args.sample_fps,
        size: args.size,
        mode: args.mode,
        keyframes_only: args.codec_keyframes,
        start: args.start.unwrap_or_default(),
        end: args.end,
        decode_every_frame: false,
    };
    let index = write_frames(
        &args.video,
        options,
        &args.out,
        StopSignal::with_interrupt(),
        args.json,
    )
    .context("extracting frames")?;
    if args.json {
        print::json_pretty(&index)?;
    } else {
        let which = if args.codec_keyframes {
            "codec key frames"
        } else {
            "frames"
        };
        print::note(format_args!(
            "wrote {} {which} and index.json to {}",
            index.frames.len(),
            args.out.display()
        ));
    }
    Ok(())
}
