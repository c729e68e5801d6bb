//! `keyscribe summarize VIDEO|ANALYSIS`: a paragraph and titled chapters written by the
//! captioner's language model from the timestamped captions, stored in the document.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use keyscribe::analysis::Analysis;
use keyscribe::cache::AnalysisCache;
use keyscribe::pipeline::{
    cache_key, cached_or_analysed, load_summarizer, video_sha256, AnalysisRequest, ModelDirs,
    PipelineConfig, StopSignal,
};
use keyscribe::summary::{summarize, SummarySettings};

use super::print;

/// Arguments of `keyscribe summarize`.
#[derive(Debug, Args)]
pub struct SummarizeArgs {
    /// A video (analysed first, or taken from the cache of earlier runs) or an analysis
    /// document; the summary is stored in the document.
    target: PathBuf,
    /// A pipeline file, or the name of a built-in one.
    #[arg(long, short, default_value = "default")]
    pipeline: String,
    /// A local MobileCLIP2 checkpoint directory.
    #[arg(long, value_name = "DIR")]
    embedder: Option<PathBuf>,
    /// A local FastVLM checkpoint directory.
    #[arg(long, value_name = "DIR")]
    captioner: Option<PathBuf>,
    /// Print the updated analysis document on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Summarises and prints the paragraph and chapters.
pub fn run(args: SummarizeArgs) -> anyhow::Result<()> {
    let mut config = PipelineConfig::load(&args.pipeline)?;
    config.caption.enabled = true;
    let dirs = ModelDirs {
        embedder: args.embedder.clone(),
        captioner: args.captioner.clone(),
    };
    let document = if args.target.to_string_lossy().ends_with(".json") {
        args.target.clone()
    } else {
        let request = AnalysisRequest {
            config: &config,
            signal: StopSignal::with_interrupt(),
            quiet: args.quiet || args.json,
        };
        let cache = AnalysisCache::from_env();
        let sha256 = video_sha256(&args.target)?;
        match cache.lookup(&cache_key(&sha256, &config, true)) {
            Some(found) => print::note(format_args!(
                "using the cached analysis {}",
                found.display()
            )),
            None => print::note(format_args!(
                "analysing {} (not in the cache)",
                args.target.display()
            )),
        }
        let obtained = cached_or_analysed(&args.target, request, &dirs, true, &cache)?;
        obtained.path().to_path_buf()
    };
    let mut analysis = Analysis::load(&document)?;
    let mut generate = load_summarizer(&config, &dirs).context("loading the captioner")?;
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
    Ok(())
}
