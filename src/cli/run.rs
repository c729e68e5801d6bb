//! `keyscribe run VIDEO`: the main job (keyframes + captions), and `keyscribe keyframes
//! VIDEO` (keyframes only). Both write the analysis document and its embeddings sidecar.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use keyscribe::analysis::Analysis;
use keyscribe::atomic;
use keyscribe::cache::AnalysisCache;
use keyscribe::output::{self, html, Format};
use keyscribe::output_paths::{prepare_outputs, NamedPath};
use keyscribe::pipeline::{
    analyse_video, cache_key, load_models, report_inputs, store_analysis,
    video_sha256, AnalysisOutput, AnalysisRequest, ModelDirs, PipelineConfig, StopSignal,
};

use super::print;

/// Arguments shared by `keyscribe run` and `keyscribe keyframes`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The video file.
    video: PathBuf,
    /// A pipeline file, or the name of a built-in one (default, article-demo, fast).
    #[arg(long, short, default_value = "default")]
    pipeline: String,
    /// Where to write the analysis document (default: VIDEO_NAME.analysis.json in the
    /// current directory). Its embeddings go beside it in NAME.embeddings.HASH.safetensors.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Also write the captions as SRT subtitles.
    #[arg(long, value_name = "FILE")]
    srt: Option<PathBuf>,
    /// Also write the captions as WebVTT subtitles.
    #[arg(long, value_name = "FILE")]
    vtt: Option<PathBuf>,
    /// Also write the HTML report.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// A local MobileCLIP2 checkpoint directory (instead of the pipeline's model).
    #[arg(long, value_name = "DIR")]
    embedder: Option<PathBuf>,
    /// A local FastVLM checkpoint directory (instead of the pipeline's model).
    #[arg(long, value_name = "DIR")]
    captioner: Option<PathBuf>,
    /// Print the analysis document on stdout instead of a line per keyframe.
    #[arg(long)]
    json: bool,
    /// No progress bar and no line per keyframe.
    #[arg(long, short)]
    quiet: bool,
}

/// Analyses the video, captioning keyframes when `captions` is set and the pipeline enables
/// it, and writes the requested outputs.
pub fn run(args: RunArgs, captions: bool) -> anyhow::Result<()> {
    let mut config = PipelineConfig::load(&args.pipeline)?;
    refuse_captionless_subtitles(&args, captions, config.caption.enabled)?;
    let captions = captions && config.caption.enabled;
    // The document records the settings in effect.
    config.caption.enabled = captions;
    let document = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.video));
    let dirs = ModelDirs {
        embedder: args.embedder.clone(),
        captioner: args.captioner.clone(),
    };
    let sha256 = video_sha256(&args.video)?;
    // The analysis goes to the cache too, so `summarize` and `search` reuse it.
    let cache = AnalysisCache::from_env();
    let cached = cache.analysis_path(&cache_key(&sha256, &config, captions));
    keyscribe::video::probe(&args.video)?;
    prepare_run_outputs(&args, &document, &cached)?;
    let models = load_models(&config, &dirs, captions)?;
    let request = AnalysisRequest {
        config: &config,
        signal: StopSignal::with_interrupt(),
        quiet: args.quiet || args.json,
    };
    let AnalysisOutput {
        mut analysis,
        frames,
        ..
    } = analyse_video(&args.video, sha256, request, models, &cached)?;
    store_analysis(&mut analysis, &frames, &document)?;
    write_extras(&args, &analysis, &document)?;
    if args.json {
        print::json_pretty(&analysis)?;
    } else if !args.quiet {
        print::note(format_args!(
            "{} keyframes in {:.1} s; wrote {}",
            analysis.keyframes.len(),
            analysis.timings.total_s,
            document.display()
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
    let flag = match (&args.srt, &args.vtt) {
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
            args.pipeline
        );
    }
    Ok(())
}

/// Refuses outputs that are inputs or each other, and checks that every output, the cache
/// entry included, can be written, before the video is decoded.
fn prepare_run_outputs(args: &RunArgs, document: &Path, cached: &Path) -> anyhow::Result<()> {
    let pipeline_file = Path::new(&args.pipeline);
    let mut inputs = vec![NamedPath::new("video", &args.video)];
    if pipeline_file.is_file() {
        inputs.push(NamedPath::new("pipeline file", pipeline_file));
    }
    // The embeddings sidecars are named by their content when written (see
    // `Analysis::save_with_frames`), so no input can be one of them.
    let mut outputs = vec![NamedPath::new("analysis document", document)];
    let extras = [
        ("--srt file", &args.srt),
        ("--vtt file", &args.vtt),
        ("--html file", &args.html),
    ];
    for (flag, path) in extras {
        if let Some(path) = path {
            outputs.push(NamedPath::new(flag, path));
        }
    }
    outputs.push(NamedPath::new("cache entry", cached));
    Ok(prepare_outputs(&inputs, &outputs)?)
}

/// `NAME.analysis.json` in the current directory, for a video `NAME.EXT`.
fn default_output(video: &Path) -> PathBuf {
    let stem = video
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "video".to_string());
    PathBuf::from(format!("{stem}.analysis.json"))
}

/// The subtitle and report files asked for on the command line.
fn write_extras(args: &RunArgs, analysis: &Analysis, document: &Path) -> anyhow::Result<()> {
    for (path, format) in [(&args.srt, Format::Srt), (&args.vtt, Format::Vtt)] {
        if let Some(path) = path {
            atomic::write(path, output::render(format, analysis).as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some(path) = &args.html {
        let (inputs, warnings) = report_inputs(document, analysis);
        for warning in warnings {
            print::note(format_args!("keyscribe: warning: {warning}"));
        }
        atomic::write(path, html::render(analysis, &inputs).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
