//! `keyscribe probe VIDEO`: what FFmpeg sees.

use std::path::PathBuf;

use clap::Args;

use keyscribe::cache::AnalysisCache;
use keyscribe::time::MediaTime;
use keyscribe::video;

use super::io::VideoInput;
use super::print;

/// Arguments of `keyscribe probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The video file, or `-` to read it from stdin.
    video: PathBuf,
    /// Print the metadata as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Probes the video and prints its metadata.
pub fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let input = VideoInput::open(&args.video, &AnalysisCache::from_env())?;
    let mut info = input.named(video::probe(input.path()))?;
    if let Some(label) = input.stdin_label() {
        info.path = PathBuf::from(label);
    }
    if args.json {
        return print::json_pretty(&info);
    }
    print::line(format_args!("file:       {}", info.path.display()))?;
    print::line(format_args!("container:  {}", info.container))?;
    print::line(format_args!("codec:      {}", info.codec))?;
    print::line(format_args!(
        "duration:   {} ({:.3} s)",
        MediaTime::from_seconds(info.duration_s),
        info.duration_s
    ))?;
    print::line(format_args!(
        "size:       {}x{} (stored {}x{}, rotation {} deg)",
        info.width, info.height, info.coded_width, info.coded_height, info.rotation_deg
    ))?;
    print::line(format_args!(
        "frame rate: {:.3} fps{}",
        info.fps,
        if info.variable_frame_rate {
            " (variable)"
        } else {
            ""
        }
    ))?;
    print::line(format_args!("start time: {:.3} s", info.start_time_s))?;
    if let Some(frames) = info.frame_count {
        print::line(format_args!("frames:     {frames}"))?;
    }
    print::line(format_args!(
        "audio:      {}",
        if info.has_audio { "yes" } else { "no" }
    ))?;
    Ok(())
}
