//! `keyscribe summarize VIDEO|ANALYSIS`: a paragraph and titled chapters written by the
//! captioner's language model from the timestamped captions, stored in the document.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use keyscribe::analysis::Analysis;
use keyscribe::cache::AnalysisCache;
use keyscribe::pipeline::{
    cache_key, cached_or_analysed, load_summarizer, video_sha256, AnalysisRequest, StopSignal,
};
use keyscribe::summary::{summarize, SummarySettings};

use super::args::{ModelArgs, PipelineArgs};
use super::io::VideoInput;
use super::print;

/// Arguments of `keyscribe summarize`.
#[derive(Debug, Args)]
pub struct SummarizeArgs {
    /// A video (analysed first, or taken from the cache of earlier runs; `-` reads it from
    /// stdin) or an analysis document; the summary is stored in the document.
    target: PathBuf,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    models: ModelArgs,
    /// Print the updated analysis document on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Summarises and prints the paragraph and chapters.
pub fn run(args: SummarizeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let say = |line: String| {
        if !args.quiet {
            print::note(format_args!("{line}"));
        }
    };
    let mut config = args.pipeline.load(args.models.captioner.overrides())?;
    config.caption.enabled = true;
    let dirs = args.models.dirs();
    let (document, stdin_label) = if args.target.to_string_lossy().ends_with(".json") {
        (args.target.clone(), None)
    } else {
        let request = AnalysisRequest {
            config: &config,
            signal: StopSignal::with_interrupt(),
            quiet: args.quiet || args.json,
        };
        let cache = AnalysisCache::from_env();
        let input = VideoInput::open(&args.target, &cache)?;
        let sha256 = input.named(video_sha256(input.path()))?;
        match cache.lookup(&cache_key(&sha256, &config, true)) {
            Some(found) => say(format!("using the cached analysis {}", found.display())),
            None => say(format!("analysing {} (not in the cache)", input.name())),
        }
        let obtained = input.named(cached_or_analysed(
            input.path(),
            request,
            &dirs,
            true,
            &cache,
        ))?;
        (obtained.path().to_path_buf(), input.stdin_label())
    };
    let mut analysis = Analysis::load(&document)?;
    if let Some(label) = stdin_label {
        // The spooled copy is gone once this command ends.
        analysis.video.path = label.to_string();
    }
    say(format!("loading the captioner ({})…", config.caption.model));
    let mut generate = load_summarizer(&config, &dirs).context("loading the captioner")?;
    let captioned = analysis
        .keyframes
        .iter()
        .filter(|keyframe| keyframe.caption.is_some())
        .count();
    say(format!(
        "summarising the {captioned} captions of {}…",
        document.display()
    ));
    let summary = summarize(&analysis, &SummarySettings::default(), &mut *generate)
        .with_context(|| format!("summarising {}", document.display()))?;
    analysis.summary = Some(summary.paragraph);
    analysis.chapters = summary.chapters;
    analysis.save(&document)?;
    if args.json {
        print::json_pretty(&analysis)?;
        return Ok(());
    }
    print::line(analysis.summary.as_deref().unwrap_or_default())?;
    print::line("")?;
    for chapter in &analysis.chapters {
        print::line(format_args!("{}  {}", chapter.timecode, chapter.title))?;
    }
    say(format!(
        "stored the summary and {} chapters in {} ({:.1} s, model loading included)",
        analysis.chapters.len(),
        document.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
