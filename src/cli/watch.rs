//! `keyscribe watch SOURCE`: a live stream captioned as it happens.
//!
//! stdout carries one JSON object per line, flushed: a keyframe as soon as its caption is
//! done, and `{"event": "gap", ...}` when the source came back after a loss. Notes (the
//! source lost, segments written, drops) go to stderr. Ctrl-C ends the watch cleanly (the
//! current segment is written; a second Ctrl-C stops at once).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;

use keyscribe::output::{self, vtt, Span};
use keyscribe::pipeline::{load_models, watch, LiveEvent, LiveKeyframe, StopSignal, WatchSettings};
use keyscribe::time::{rfc3339, MediaTime};
use keyscribe::video::LiveSource;

use super::args::{CaptionFlags, ModelArgs, PipelineArgs, SelectionFlags};
use super::print;

/// Arguments of `keyscribe watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The live source: a URL FFmpeg opens (rtsp://, rtmp://, srt://, udp://, tcp://,
    /// http(s):// including HLS), a capture device (/dev/video0), or `-` for a stream on
    /// stdin (e.g. `ffmpeg ... -f mpegts - | keyscribe watch -`).
    source: String,
    /// Read the source with this FFmpeg input format (`v4l2`, `x11grab`, `mpegts`, ...).
    #[arg(long, value_name = "NAME")]
    input_format: Option<String>,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    caption: CaptionFlags,
    #[command(flatten)]
    selection: SelectionFlags,
    #[command(flatten)]
    models: ModelArgs,
    /// Segment documents are written as PREFIX-000.analysis.json, PREFIX-001..., each with
    /// its embeddings sidecar.
    #[arg(
        long,
        short,
        value_name = "PREFIX",
        default_value = "live",
        help_heading = "Output"
    )]
    output: PathBuf,
    /// Seconds of the session per analysis document.
    #[arg(
        long,
        value_name = "S",
        default_value_t = 600.0,
        help_heading = "Output"
    )]
    segment_s: f64,
    /// Grow a WebVTT file as captions are made (each cue is written once the next scene
    /// starts, the last when the watch ends).
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    vtt: Option<PathBuf>,
    /// A source silent for this many seconds is taken as lost and reconnected.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    stall_s: f64,
    /// End the watch when the source ends or fails instead of reconnecting.
    #[arg(long)]
    no_reconnect: bool,
    /// Start at most one caption per this many seconds, leaving the CPU to the embedder;
    /// keyframes that cannot wait are left without a caption (counted).
    #[arg(long, value_name = "S")]
    caption_interval_s: Option<f64>,
    /// No notes on stderr (warnings and errors still show).
    #[arg(long, short, help_heading = "Output")]
    quiet: bool,
}

/// Watches the source until it ends or Ctrl-C.
pub fn run(args: WatchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let positive = |flag: &str, value: f64| -> anyhow::Result<Duration> {
        if value.is_finite() && value > 0.0 {
            Ok(Duration::from_secs_f64(value))
        } else {
            bail!("{flag} {value}: expected a positive number of seconds")
        }
    };
    let segment = positive("--segment-s", args.segment_s)?;
    let stall = positive("--stall-s", args.stall_s)?;
    let caption_interval = args
        .caption_interval_s
        .map(|seconds| positive("--caption-interval-s", seconds))
        .transpose()?;
    if args
        .vtt
        .as_deref()
        .is_some_and(|path| path == Path::new("-"))
    {
        bail!("--vtt -: stdout carries the JSON lines; name a file for the WebVTT");
    }
    if args.output == Path::new("-") {
        bail!("-o -: the segment documents are files; name a prefix such as `camera`");
    }
    let source = LiveSource::parse(&args.source, args.input_format.as_deref())?;
    let mut overrides = args.caption.overrides();
    overrides.extend(args.selection.overrides()?);
    overrides.extend(args.models.captioner.overrides());
    let config = args.pipeline.load(overrides)?;
    let mut vtt_file = args
        .vtt
        .as_ref()
        .map(|path| {
            let mut file =
                File::create(path).with_context(|| format!("writing {}", path.display()))?;
            file.write_all(vtt::HEADER.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            anyhow::Ok(file)
        })
        .transpose()?;
    let models = load_models(&config, &args.models.dirs(), config.caption.enabled)?;
    let settings = WatchSettings {
        source,
        stall,
        reconnect: !args.no_reconnect,
        segment,
        prefix: args.output.clone(),
        caption_interval,
    };
    let signal = StopSignal::with_interrupt();
    signal.end_gracefully();
    if !args.quiet {
        print::note(format_args!(
            "keyscribe: watching {}; a keyframe is final {} s after its scene starts \
             (Ctrl-C ends the watch)",
            settings.source,
            config.select.live_finality_s()
        ));
    }
    let teller = Teller {
        quiet: args.quiet,
        signal: signal.clone(),
        vtt: Mutex::new(vtt_file.take().map(|file| GrowingVtt {
            file,
            path: args.vtt.clone().unwrap_or_default(),
            previous: None,
        })),
    };
    let vtt_state = std::sync::Arc::new(teller);
    let printer = std::sync::Arc::clone(&vtt_state);
    let report = watch(&config, models, &settings, signal, move |event| {
        printer.tell(event)
    })
    .with_context(|| format!("watching {}", settings.source))?;
    vtt_state.finish_vtt(report.end)?;
    if !args.quiet {
        let files: Vec<String> = report
            .documents
            .iter()
            .map(|path| path.display().to_string())
            .collect();
        print::note(format_args!(
            "keyscribe: {} keyframes in {:.1} s; {} frames and {} captions dropped; wrote {}",
            report.keyframes,
            started.elapsed().as_secs_f64(),
            report.dropped_frames,
            report.dropped_captions,
            files.join(", ")
        ));
    }
    Ok(())
}

/// A WebVTT file grown cue by cue: a caption's cue is written when the next scene starts.
struct GrowingVtt {
    file: File,
    path: PathBuf,
    /// The last caption told, waiting for its end.
    previous: Option<(MediaTime, String)>,
}

impl GrowingVtt {
    /// Writes the waiting cue, ending at `end`, and makes `next` the waiting one.
    fn advance(
        &mut self,
        end: MediaTime,
        next: Option<(MediaTime, String)>,
    ) -> std::io::Result<()> {
        if let Some((start, caption)) = self.previous.take() {
            let cue = vtt::cue(Span { start, end }, &caption);
            self.file.write_all(cue.as_bytes())?;
            self.file.flush()?;
        }
        self.previous = next;
        Ok(())
    }
}

/// Tells the watch's events: JSON lines on stdout, notes on stderr, cues in the VTT file.
struct Teller {
    quiet: bool,
    signal: StopSignal,
    vtt: Mutex<Option<GrowingVtt>>,
}

impl Teller {
    fn tell(&self, event: LiveEvent) {
        match event {
            LiveEvent::Keyframe(keyframe) => {
                if let Err(error) = self.grow_vtt(&keyframe) {
                    print::note(format_args!("keyscribe: warning: {error:#}"));
                }
                self.json_line(keyframe_json(&keyframe));
            }
            LiveEvent::Gap { start, end, reason } => {
                self.json_line(json!({
                    "event": "gap",
                    "start_s": start.seconds(),
                    "end_s": end.seconds(),
                    "duration_s": end.seconds() - start.seconds(),
                    "reason": reason,
                }));
            }
            LiveEvent::Lost { reason } => {
                print::note(format_args!(
                    "keyscribe: warning: source lost ({reason}); reconnecting"
                ));
            }
            LiveEvent::SegmentWritten {
                document,
                keyframes,
                dropped_frames,
                dropped_captions,
                ..
            } => {
                if dropped_frames > 0 || dropped_captions > 0 {
                    print::note(format_args!(
                        "keyscribe: warning: {}: {dropped_frames} frames dropped (embedding \
                         could not keep up), {dropped_captions} keyframes left without a \
                         caption (captioning could not keep up)",
                        document.display()
                    ));
                }
                if !self.quiet {
                    print::note(format_args!(
                        "keyscribe: wrote {} ({keyframes} keyframes)",
                        document.display()
                    ));
                }
            }
        }
    }

    /// Prints one JSON line; a closed stdout ends the watch as Ctrl-C does.
    fn json_line(&self, value: serde_json::Value) {
        if let Err(error) = print::json_line(&value) {
            if !print::is_closed_stdout(&error) {
                print::note(format_args!("keyscribe: warning: {error:#}"));
            }
            self.signal.end_input();
        }
    }

    fn grow_vtt(&self, keyframe: &LiveKeyframe) -> anyhow::Result<()> {
        let mut vtt = self
            .vtt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(vtt) = vtt.as_mut() else {
            return Ok(());
        };
        let next = keyframe
            .caption
            .as_ref()
            .map(|caption| (keyframe.scene_start, caption.clone()));
        vtt.advance(keyframe.scene_start, next)
            .with_context(|| format!("writing {}", vtt.path.display()))
    }

    /// Writes the last cue, ending where the session ended.
    fn finish_vtt(&self, end: MediaTime) -> anyhow::Result<()> {
        let mut vtt = self
            .vtt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match vtt.as_mut() {
            Some(vtt) => vtt
                .advance(end, None)
                .with_context(|| format!("writing {}", vtt.path.display())),
            None => Ok(()),
        }
    }
}

/// A keyframe as its JSON line.
fn keyframe_json(keyframe: &LiveKeyframe) -> serde_json::Value {
    let mut line = json!({
        "index": keyframe.index,
        "time_s": keyframe.time.seconds(),
        "timecode": keyframe.time.timecode(),
        "wall_clock": rfc3339(keyframe.wall_clock),
        "scene_start_s": keyframe.scene_start.seconds(),
        "change": keyframe.change,
        "caption": keyframe.caption.as_deref().map(output::one_line),
        "latency_s": keyframe.latency_s,
        "dropped_frames": keyframe.dropped_frames,
        "dropped_captions": keyframe.dropped_captions,
    });
    if keyframe.caption_dropped {
        line["caption_dropped"] = json!(true);
    }
    line
}
