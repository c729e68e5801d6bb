//! `keyscribe run VIDEO`: the main job (keyframes + captions), and `keyscribe keyframes
//! VIDEO` (keyframes only). Both write the analysis document and its embeddings sidecar.
//!
//! Plain `run` prints each caption on stdout as it is made, as
//! `[HH:MM:SS.mmm --> HH:MM:SS.mmm] caption` (whisper.cpp's form), and nothing else there;
//! progress, logs and the closing line go to stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::bail;
use clap::Args;

use keyscribe::cache::AnalysisCache;
use keyscribe::output::{self, html, Format};
use keyscribe::output_paths::{prepare_outputs, NamedPath};
use keyscribe::pipeline::{
    analyse_video_reporting, cache_key, load_models, report_inputs, store_analysis, video_sha256,
    AnalysisOutput, AnalysisRequest, Progress, RunEvent, StopSignal,
};
use keyscribe::time::MediaTime;

use super::args::{CaptionFlags, ModelArgs, OutputArgs, PipelineArgs, SelectionFlags};
use super::io::{at_most_one_stdout, is_stdio, write_output, write_stdout, VideoInput};
use super::print;
use keyscribe::video::DecodeOptions;

/// Arguments shared by `keyscribe run` and `keyscribe keyframes`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The video file, or `-` to read it from stdin.
    video: PathBuf,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    caption: CaptionFlags,
    #[command(flatten)]
    selection: SelectionFlags,
    #[command(flatten)]
    models: ModelArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// Analyse from this time on: seconds (90.5) or a timecode (01:30.5); keyframe times
    /// still count from the start of the file.
    #[arg(long, value_name = "TIME")]
    start: Option<MediaTime>,
    /// Analyse up to this time: seconds or a timecode.
    #[arg(long, value_name = "TIME")]
    end: Option<MediaTime>,
}

/// Analyses the video, captioning keyframes when `captions` is set and the pipeline enables
/// it, and writes the requested outputs.
pub fn run(args: RunArgs, captions: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let outputs = &args.output;
    at_most_one_stdout(&stdout_outputs(outputs))?;
    let mut overrides = args.caption.overrides();
    overrides.extend(args.selection.overrides()?);
    overrides.extend(args.models.captioner.overrides());
    let mut config = args.pipeline.load(overrides)?;
    refuse_captionless_subtitles(&args, captions, config.caption.enabled)?;
    let captions = captions && config.caption.enabled;
    // The document records the settings in effect.
    config.caption.enabled = captions;
    let cache = AnalysisCache::from_env();
    let input = VideoInput::open(&args.video, &cache)?;
    let video = input.path();
    let document = outputs
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.video));
    if let Some(start) = args.start {
        config.decode.start_s = Some(start.seconds());
    }
    if let Some(end) = args.end {
        config.decode.end_s = Some(end.seconds());
    }
    let sha256 = input.named(video_sha256(video))?;
    let info = input.named(keyscribe::video::probe(video))?;
    DecodeOptions {
        start: MediaTime::from_seconds(config.decode.start_s.unwrap_or(0.0)),
        end: config.decode.end_s.map(MediaTime::from_seconds),
        ..DecodeOptions::default()
    }
    .check_range(&info)?;
    // The analysis goes to the cache too, so `summarize` and `search` reuse it.
    let cached = cache.analysis_path(&cache_key(&sha256, &config, captions));
    prepare_run_outputs(&args, video, &document, &cached)?;
    let models = load_models(&config, &args.models.dirs(), captions)?;
    let request = AnalysisRequest {
        config: &config,
        signal: StopSignal::with_interrupt(),
        quiet: outputs.quiet || outputs.json,
    };
    let captions_on_stdout = !outputs.quiet && stdout_outputs(outputs).is_empty();
    let printer = EventPrinter {
        captions_on_stdout,
        log_keyframes: !(outputs.quiet || outputs.json),
        stdout_open: AtomicBool::new(true),
    };
    let AnalysisOutput {
        mut analysis,
        frames,
        ..
    } = input.named(analyse_video_reporting(
        video,
        sha256,
        request,
        models,
        &cached,
        move |bars, event| printer.show(bars, event),
    ))?;
    // The report's thumbnails come from the video, which a stdin spool holds only now.
    let report = outputs.html.as_ref().map(|path| {
        let (inputs, warnings) = report_inputs(&cached, &analysis);
        (path, inputs, warnings)
    });
    if let Some(label) = input.stdin_label() {
        analysis.video.path = label.to_string();
        analysis.save(&cached)?;
    }
    let mut written = Vec::new();
    if is_stdio(&document) {
        // The document on stdout names its embeddings as the cache entry beside which they
        // are stored (a sidecar is only ever read from beside its document).
        write_stdout(format!("{}\n", serde_json::to_string_pretty(&analysis)?).as_bytes())?;
    } else {
        store_analysis(&mut analysis, &frames, &document)?;
        written.push(document.clone());
        if let Ok(sidecar) = analysis.embeddings_path(&document) {
            written.push(sidecar);
        }
        if outputs.json {
            write_stdout(format!("{}\n", serde_json::to_string_pretty(&analysis)?).as_bytes())?;
        }
    }
    for (path, format) in [(&outputs.srt, Format::Srt), (&outputs.vtt, Format::Vtt)] {
        if let Some(path) = path {
            write_output(path, output::render(format, &analysis)?.as_bytes())?;
            written.push(path.clone());
        }
    }
    if let Some((path, inputs, warnings)) = report {
        for warning in warnings {
            print::note(format_args!("keyscribe: warning: {warning}"));
        }
        write_output(path, html::render(&analysis, &inputs).as_bytes())?;
        written.push(path.clone());
    }
    if !outputs.quiet {
        print::note(closing_line(
            analysis.keyframes.len(),
            &written,
            started.elapsed().as_secs_f64(),
        ));
    }
    Ok(())
}

/// Subtitles are made of captions: `--srt` and `--vtt` are refused before any work when
/// this run makes none, instead of writing empty files.
fn refuse_captionless_subtitles(
    args: &RunArgs,
    captions_asked: bool,
    pipeline_captions: bool,
) -> anyhow::Result<()> {
    let flag = match (&args.output.srt, &args.output.vtt) {
        (Some(_), _) => "--srt",
        (None, Some(_)) => "--vtt",
        (None, None) => return Ok(()),
    };
    if !captions_asked {
        bail!(
            "{flag}: `keyscribe keyframes` makes no captions, so the subtitles would be empty; \
             use `keyscribe run` for captioned subtitles"
        );
    }
    if !pipeline_captions {
        bail!(
            "{flag}: the pipeline {} turns captioning off ([caption] enabled = false), so the \
             subtitles would be empty",
            args.pipeline.pipeline
        );
    }
    Ok(())
}

/// Refuses outputs that are inputs or each other, and checks that every output, the cache
/// entry included, can be written, before the video is decoded. Outputs on stdout (`-`)
/// are left out.
fn prepare_run_outputs(
    args: &RunArgs,
    video: &Path,
    document: &Path,
    cached: &Path,
) -> anyhow::Result<()> {
    let mut inputs = vec![NamedPath::new("video", video)];
    let pipeline_file = Path::new(&args.pipeline.pipeline);
    if pipeline_file.is_file() {
        inputs.push(NamedPath::new("pipeline file", pipeline_file));
    }
    // The embeddings sidecars are named by their content when written (see
    // `Analysis::save_with_frames`), so no input can be one of them.
    let files = [
        ("analysis document", Some(document)),
        ("--srt file", args.output.srt.as_deref()),
        ("--vtt file", args.output.vtt.as_deref()),
        ("--html file", args.output.html.as_deref()),
        ("cache entry", Some(cached)),
    ];
    let outputs: Vec<NamedPath> = files
        .into_iter()
        .filter_map(|(name, path)| {
            path.filter(|path| !is_stdio(path))
                .map(|path| NamedPath::new(name, path))
        })
        .collect();
    Ok(prepare_outputs(&inputs, &outputs)?)
}

/// The flags that send something to stdout.
fn stdout_outputs(outputs: &OutputArgs) -> Vec<&'static str> {
    let mut flags = Vec::new();
    if outputs.output.as_deref().is_some_and(is_stdio) {
        flags.push("-o -");
    } else if outputs.json {
        flags.push("--json");
    }
    for (flag, path) in [
        ("--srt -", &outputs.srt),
        ("--vtt -", &outputs.vtt),
        ("--html -", &outputs.html),
    ] {
        if path.as_deref().is_some_and(is_stdio) {
            flags.push(flag);
        }
    }
    flags
}

/// What the user sees of each keyframe as it is made.
struct EventPrinter {
    /// Captions go to stdout as `[start --> end] caption` lines.
    captions_on_stdout: bool,
    /// Keyframes (and captions not on stdout) are logged on stderr.
    log_keyframes: bool,
    /// Cleared once stdout is closed (`| head`): the captions are in the document anyway.
    stdout_open: AtomicBool,
}

impl EventPrinter {
    fn show(&self, bars: &Progress, event: RunEvent) {
        match event {
            RunEvent::Warning(warning) => bars.println(format!("warning: {warning}")),
            RunEvent::Keyframe {
                scene,
                caption: Some(caption),
                ..
            } if self.captions_on_stdout => {
                if self.stdout_open.load(Ordering::SeqCst) {
                    let line = caption_line(scene.start_s, scene.end_s, &caption);
                    let printed = bars.suspend(|| {
                        let mut stdout = std::io::stdout().lock();
                        writeln!(stdout, "{line}").and_then(|()| stdout.flush())
                    });
                    if printed.is_err() {
                        self.stdout_open.store(false, Ordering::SeqCst);
                    }
                }
            }
            RunEvent::Keyframe { .. } if !self.log_keyframes => {}
            RunEvent::Keyframe {
                time,
                caption: Some(caption),
                ..
            } => bars.println(format!("{}  {}", time.timecode(), caption)),
            RunEvent::Keyframe { time, index, .. } => {
                bars.println(format!("{}  keyframe {}", time.timecode(), index + 1))
            }
        }
    }
}

/// `[HH:MM:SS.mmm --> HH:MM:SS.mmm] caption`: the caption and the span it covers.
fn caption_line(start_s: f64, end_s: f64, caption: &str) -> String {
    format!(
        "[{} --> {}] {}",
        MediaTime::from_seconds(start_s).timecode(),
        MediaTime::from_seconds(end_s).timecode(),
        output::one_line(caption)
    )
}

/// The last line on stderr: keyframes, wall time (model loading included) and every file
/// written.
fn closing_line(keyframes: usize, written: &[PathBuf], seconds: f64) -> String {
    let files: Vec<String> = written
        .iter()
        .filter(|path| !is_stdio(path))
        .map(|path| path.display().to_string())
        .collect();
    let wrote = if files.is_empty() {
        "no files written".to_string()
    } else {
        format!("wrote {}", files.join(", "))
    };
    format!("{keyframes} keyframes in {seconds:.1} s, model loading included; {wrote}")
}

/// `NAME.analysis.json` in the current directory, for a video `NAME.EXT`
/// (`stdin.analysis.json` for `-`).
fn default_output(video: &Path) -> PathBuf {
    let stem = if is_stdio(video) {
        "stdin".to_string()
    } else {
        video
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "video".to_string())
    };
    PathBuf::from(format!("{stem}.analysis.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caption_lines_are_whisper_style_and_one_line() {
        assert_eq!(
            caption_line(0.0, 4.5, "A red\nbar."),
            "[00:00:00.000 --> 00:00:04.500] A red bar."
        );
    }

    #[test]
    fn the_closing_line_names_every_file() {
        let written = [
            PathBuf::from("a.json"),
            PathBuf::from("a.embeddings.safetensors"),
            PathBuf::from("-"),
            PathBuf::from("a.srt"),
        ];
        assert_eq!(
            closing_line(3, &written, 12.34),
            "3 keyframes in 12.3 s, model loading included; wrote a.json, \
             a.embeddings.safetensors, a.srt"
        );
    }

    #[test]
    fn stdin_gets_a_default_document_name() {
        assert_eq!(
            default_output(Path::new("-")),
            PathBuf::from("stdin.analysis.json")
        );
        assert_eq!(
            default_output(Path::new("dir/clip.mp4")),
            PathBuf::from("clip.analysis.json")
        );
    }
}
