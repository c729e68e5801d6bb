//! `keyscribe search TARGET "query"`: time ranges of videos that match a text, by MobileCLIP2
//! text-to-frame similarity combined with the captions' words.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;

use keyscribe::analysis::Analysis;
use keyscribe::batch::library::{Library, LIBRARY_FILE};
use keyscribe::cache::AnalysisCache;
use keyscribe::pipeline::{
    cache_key, cached_or_analysed, find_analyses, load_embedder_recorded_in,
    load_recorded_embedder, open_index, video_sha256, AnalysisRequest, ModelDirs, PipelineConfig,
    StopSignal, LIBRARY_DIR,
};
use keyscribe::search::{search_all, SearchHit, SearchIndex};

use super::args::{ModelArgs, PipelineArgs};
use super::print;
use super::terminal::printable;

/// Arguments of `keyscribe search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// A video (analysed first, or taken from the cache), an analysis document, a folder
    /// of analyses (a library made by `keyscribe index`), or a library made by `keyscribe
    /// index --from-parquet` (its index files are searched together).
    target: PathBuf,
    /// What to look for, in words.
    query: String,
    /// How many results.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// The pipeline whose embedder (the analyses' own) and `[search]` settings are used; a
    /// video not analysed yet is analysed with it.
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// `--embedder DIR` must be the model the analyses used; without it, the model they
    /// record is used.
    #[command(flatten)]
    models: ModelArgs,
    /// Print the results as JSON on stdout: per result `video`, `start_s`/`end_s`/`best_s`
    /// in seconds and `start`/`end`/`best` as timecodes (as `export --format json`),
    /// `score`, `visual_score`, `caption_score` and `caption`.
    #[arg(long)]
    json: bool,
}

/// Finds the analyses, embeds the query and prints the best time ranges.
pub fn run(args: SearchArgs) -> anyhow::Result<()> {
    let config = args.pipeline.load(args.models.captioner.overrides())?;
    let dirs = args.models.dirs();
    let hits = if Library::is_library(&args.target) {
        library_hits(&args, &config, &dirs)?
    } else {
        analyses_hits(&args, &config, &dirs)?
    };
    if args.json {
        print::json_pretty(&hits)?;
        return Ok(());
    }
    if hits.is_empty() {
        print::note("no matches");
    }
    // Video names and captions come from files and models: printed without their control
    // characters, so that they cannot drive the terminal.
    for (rank, hit) in hits.iter().enumerate() {
        print::line(format_args!(
            "{:>2}. {}  {} - {}  score {:.3}  {}",
            rank + 1,
            printable(&hit.video),
            hit.start.timecode(),
            hit.end.timecode(),
            hit.score,
            printable(hit.caption.as_deref().unwrap_or(""))
        ))?;
    }
    Ok(())
}

/// The results from a library made from batch tables: the query embedded by the model its
/// description records, searched in every index file.
fn library_hits(
    args: &SearchArgs,
    config: &PipelineConfig,
    dirs: &ModelDirs,
) -> anyhow::Result<Vec<SearchHit>> {
    let library = Library::open(&args.target).map_err(super::batch::into_anyhow)?;
    let description = args.target.join(LIBRARY_FILE);
    let embedder =
        load_embedder_recorded_in(&[(&description, &library.record.embedder)], config, dirs)?;
    let query = embedder.embed_texts(&[args.query.as_str()])?.remove(0);
    Ok(search_all(
        &library.indexes,
        &query,
        &args.query,
        args.top,
        &config.search,
    )?)
}

/// The results from analyses: of a video, a document or a folder.
fn analyses_hits(
    args: &SearchArgs,
    config: &PipelineConfig,
    dirs: &ModelDirs,
) -> anyhow::Result<Vec<SearchHit>> {
    let documents = analyses_for(&args.target, config, dirs)?;
    if documents.is_empty() {
        bail!(
            "{}: no analyses found (run `keyscribe index {}` first)",
            args.target.display(),
            args.target.display()
        );
    }
    let analyses = documents
        .iter()
        .map(|document| Ok((document.clone(), Analysis::load(document)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let embedder = load_recorded_embedder(&analyses, config, dirs)?;
    let index = library_index(&args.target, &documents)?;
    let query = embedder.embed_texts(&[args.query.as_str()])?.remove(0);
    Ok(index.search(&query, &args.query, args.top, &config.search)?)
}

/// The analysis documents a target stands for.
fn analyses_for(
    target: &Path,
    config: &PipelineConfig,
    dirs: &ModelDirs,
) -> anyhow::Result<Vec<PathBuf>> {
    if target.is_dir() {
        return Ok(find_analyses(target)?);
    }
    if target.to_string_lossy().ends_with(".json") {
        Analysis::load(target)?;
        return Ok(vec![target.to_path_buf()]);
    }
    // A video: an analysis with captions or without, from the cache, else a new one.
    let cache = AnalysisCache::from_env();
    let sha256 = video_sha256(target)?;
    for captions in [true, false] {
        if let Some(found) = cache.lookup(&cache_key(&sha256, config, captions)) {
            print::note(format_args!(
                "using the cached analysis {}",
                found.display()
            ));
            return Ok(vec![found]);
        }
    }
    print::note(format_args!(
        "analysing {} (not in the cache)",
        target.display()
    ));
    let request = AnalysisRequest {
        config,
        signal: StopSignal::with_interrupt(),
        quiet: false,
    };
    let obtained = cached_or_analysed(target, request, dirs, config.caption.enabled, &cache)?;
    Ok(vec![obtained.path().to_path_buf()])
}

/// The index to search: the library's index file when it is current, else one built now.
fn library_index(target: &Path, documents: &[PathBuf]) -> anyhow::Result<SearchIndex> {
    let library = if target.join(LIBRARY_DIR).is_dir() {
        Some(target.join(LIBRARY_DIR))
    } else if target.is_dir() {
        Some(target.to_path_buf())
    } else {
        None
    };
    Ok(open_index(library.as_deref(), documents)?)
}
