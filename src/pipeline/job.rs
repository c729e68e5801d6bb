//! What the commands share around an analysis: finding and loading the models a pipeline
//! names, storing a document with its embeddings sidecar, and reusing cached analyses.

use std::path::{Path, PathBuf};

use candle_core::Device;

use super::{
    analyse, AnalysisJob, AnalysisOutput, Models, PipelineConfig, PipelineError, Progress,
    RunEvent, StopSignal,
};
use crate::analysis::{Analysis, FrameEmbeddings, ModelRecord, ModelSource};
use crate::cache::{file_sha256, AnalysisCache};
use crate::caption::{captioner_options, KeyframeCaptioner};
use crate::models::captioner_device;
use crate::models::checkpoint::CheckpointFiles;
use crate::models::generation::GenerationSettings;
use crate::models::roles::{self, CaptionerOptions, Embedder};
use crate::models::store::{self, HubSettings, LocatedModel, ModelRole};
use crate::models::weights::Checkpoint;
use crate::summary::Generate;

/// Model directories given on the command line; they win over the pipeline file.
#[derive(Debug, Clone, Default)]
pub struct ModelDirs {
    /// `--embedder DIR`.
    pub embedder: Option<PathBuf>,
    /// `--captioner DIR`.
    pub captioner: Option<PathBuf>,
}

/// Finds the embedder's files: the command line's directory, the pipeline's, the local
/// Hugging Face cache, or a download.
pub fn locate_embedder(
    config: &PipelineConfig,
    dirs: &ModelDirs,
) -> Result<LocatedModel, PipelineError> {
    let manifest = store::manifest(&config.embed.model)?;
    let dir = dirs.embedder.as_deref().or(config.embed.dir.as_deref());
    Ok(store::resolve(manifest, dir, &HubSettings::from_env())?)
}

/// Finds the captioner's files, in the same order as [`locate_embedder`].
pub fn locate_captioner(
    config: &PipelineConfig,
    dirs: &ModelDirs,
) -> Result<LocatedModel, PipelineError> {
    let manifest = store::manifest(&config.caption.model)?;
    let dir = dirs.captioner.as_deref().or(config.caption.dir.as_deref());
    Ok(store::resolve(manifest, dir, &HubSettings::from_env())?)
}

/// Loads the pipeline's embedder; returns it with where it came from and which weights it
/// has.
pub fn load_embedder(
    config: &PipelineConfig,
    dirs: &ModelDirs,
) -> Result<(Box<dyn Embedder>, ModelSource), PipelineError> {
    let (model, source, located) = load_located_embedder(config, dirs)?;
    note_licence(&located);
    Ok((model, source))
}

/// [`load_embedder`] without the licence note, with where the model was found.
fn load_located_embedder(
    config: &PipelineConfig,
    dirs: &ModelDirs,
) -> Result<(Box<dyn Embedder>, ModelSource, LocatedModel), PipelineError> {
    let located = locate_embedder(config, dirs)?;
    let model = roles::load_embedder(&located.dir, &Device::Cpu)?;
    let source = model_source(&located)?;
    Ok((model, source, located))
}

/// Loads the pipeline's captioner with its prompt and decoding settings; returns it with
/// where it came from and which weights it has.
pub fn load_captioner(
    config: &PipelineConfig,
    dirs: &ModelDirs,
) -> Result<(KeyframeCaptioner, ModelSource), PipelineError> {
    let located = locate_captioner(config, dirs)?;
    let device = captioner_device();
    let options = captioner_options(&config.caption, &device)?;
    let model = roles::load_captioner(&located.dir, options, &device)?;
    let captioner = KeyframeCaptioner::new(model, &config.caption);
    let source = model_source(&located)?;
    note_licence(&located);
    Ok((captioner, source))
}

/// Prints, once per process and model, the line saying a located model is licensed for
/// research only (see [`store::research_only_notice`]); a closed stderr loses it, nothing
/// else.
fn note_licence(located: &LocatedModel) {
    use std::io::Write;
    static NOTED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let Some(notice) = store::research_only_notice(located) else {
        return;
    };
    let mut noted = NOTED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !noted.contains(&located.dir) {
        noted.push(located.dir.clone());
        let _ = writeln!(std::io::stderr(), "note: {notice}");
    }
}

/// What a document records about a located model: where it came from, the Hub commit, and
/// the SHA-256 of its weights (kept between runs in the cache, see
/// [`store::weights_sha256`]).
fn model_source(located: &LocatedModel) -> Result<ModelSource, PipelineError> {
    let memo = AnalysisCache::from_env().dir().join("weights-sha256");
    let weights_sha256 = store::weights_sha256(located.files.weights(), Some(&memo))?;
    Ok(ModelSource {
        location: located.source.clone(),
        revision: located.revision.clone(),
        licence: store::licence_of(located, Some(&weights_sha256)),
        weights_sha256: Some(weights_sha256),
    })
}

/// Loads the embedder that embeds a query against `analyses` (documents with their paths):
/// the `--embedder` directory when given, else the model the first analysis records (the
/// directory it was loaded from while that still holds the same weights, else its Hub
/// cache snapshot, else the Hub). Refused, naming both models, when an analysis records
/// another model than the one that would embed the query.
pub fn load_recorded_embedder(
    analyses: &[(PathBuf, Analysis)],
    config: &PipelineConfig,
    dirs: &ModelDirs,
) -> Result<Box<dyn Embedder>, PipelineError> {
    let records: Vec<(&Path, &ModelRecord)> = analyses
        .iter()
        .map(|(document, analysis)| (document.as_path(), &analysis.models.embedder))
        .collect();
    load_embedder_recorded_in(&records, config, dirs)
}

/// As [`load_recorded_embedder`], for embedder records kept in any file (an analysis
/// document, a library's description): `records` pairs each file with its record.
pub fn load_embedder_recorded_in(
    records: &[(&Path, &ModelRecord)],
    config: &PipelineConfig,
    dirs: &ModelDirs,
) -> Result<Box<dyn Embedder>, PipelineError> {
    let (model, used, located) = match (records.first(), &dirs.embedder) {
        (Some((document, recorded)), None) => recorded_embedder(document, recorded, config)?,
        _ => {
            let (model, source, located) = load_located_embedder(config, dirs)?;
            let record = source.record(model.name());
            (model, record, located)
        }
    };
    for (document, recorded) in records {
        if !recorded.same_model(&used) {
            return Err(PipelineError::EmbedderMismatch {
                document: document.to_path_buf(),
                recorded: recorded.to_string(),
                used: used.to_string(),
            });
        }
    }
    note_licence(&located);
    Ok(model)
}

/// The embedder `recorded` in `document`, found where it was loaded from or in the Hub's
/// cache, with the record of what was found.
fn recorded_embedder(
    document: &Path,
    recorded: &ModelRecord,
    config: &PipelineConfig,
) -> Result<RecordedEmbedder, PipelineError> {
    let settings = HubSettings::from_env();
    let from_hub = store::manifest_of_source(&recorded.source);
    let hub_manifest = from_hub.or_else(|| {
        store::manifest(&recorded.name)
            .ok()
            .filter(|manifest| manifest.role == ModelRole::Embedder)
    });
    let mut tried = Vec::new();
    let local = Path::new(&recorded.source);
    if from_hub.is_none() && local.is_dir() {
        // Only the repository named in a message depends on the manifest here.
        let manifest = match hub_manifest {
            Some(manifest) => manifest,
            None => store::manifest(&config.embed.model)?,
        };
        match store::use_directory(manifest, local) {
            Ok(located) => match matching_embedder(&located, recorded)? {
                Ok(found) => return Ok(found),
                Err(other) => tried.push(format!("{} now holds {other}", local.display())),
            },
            Err(error) => tried.push(error.to_string()),
        }
    }
    if let Some(manifest) = hub_manifest {
        let snapshot = recorded
            .revision
            .as_deref()
            .and_then(|commit| store::find_snapshot(manifest, commit, &settings));
        let located = match snapshot {
            Some(located) => Ok(located),
            None => store::resolve(manifest, None, &settings),
        };
        match located {
            Ok(located) => match matching_embedder(&located, recorded)? {
                Ok(found) => return Ok(found),
                Err(other) => tried.push(format!("the Hub's {} is {other}", manifest.name)),
            },
            Err(error) => tried.push(error.to_string()),
        }
    }
    Err(PipelineError::RecordedEmbedderMissing {
        document: document.to_path_buf(),
        recorded: recorded.to_string(),
        reason: if tried.is_empty() {
            String::new()
        } else {
            format!(" ({})", tried.join("; "))
        },
    })
}

/// An embedder with the record of which model it is and where it was found.
type RecordedEmbedder = (Box<dyn Embedder>, ModelRecord, LocatedModel);

/// The located embedder, loaded, when it is the `recorded` model; else the record of the
/// other model it is.
fn matching_embedder(
    located: &LocatedModel,
    recorded: &ModelRecord,
) -> Result<Result<RecordedEmbedder, ModelRecord>, PipelineError> {
    let source = model_source(located)?;
    let model = roles::load_embedder(&located.dir, &Device::Cpu)?;
    let found = source.record(model.name());
    Ok(if recorded.same_model(&found) {
        Ok((model, found, located.clone()))
    } else {
        Err(found)
    })
}

/// Loads the captioner's language model as the summary writer: text-only chat turns,
/// decoded greedily so a summary is reproducible.
pub fn load_summarizer(
    config: &PipelineConfig,
    dirs: &ModelDirs,
) -> Result<Box<Generate<'static>>, PipelineError> {
    let (captioner, _) = load_captioner(config, dirs)?;
    Ok(Box::new(
        move |system: &str, user: &str, max_tokens: usize| {
            let settings = GenerationSettings::greedy(max_tokens);
            Ok(captioner
                .model()
                .generate_text(Some(system), user, &settings, &mut |_| {})?
                .text)
        },
    ))
}

/// Loads a checkpoint directory strictly (every tensor present with the shape the
/// architecture expects, none left over, every weight a finite number) and describes it
/// in a few words.
pub fn verify_model(role: ModelRole, dir: &Path) -> Result<String, PipelineError> {
    let description = match role {
        ModelRole::Embedder => {
            let model = roles::load_embedder(dir, &Device::Cpu)?;
            format!("{}, {}-d embeddings", model.name(), model.dim())
        }
        ModelRole::Captioner => {
            roles::load_captioner(dir, CaptionerOptions::f32(), &Device::Cpu)?.name()
        }
    };
    let files = CheckpointFiles::find(dir, role)?;
    Checkpoint::open(files.weights())?.ensure_finite()?;
    Ok(description)
}

/// Writes the document at `document` with `frames` as its embeddings sidecar, creating its
/// directory: a reader always finds the two as a matching pair (see
/// [`Analysis::save_with_frames`]).
pub fn store_analysis(
    analysis: &mut Analysis,
    frames: &FrameEmbeddings,
    document: &Path,
) -> Result<(), PipelineError> {
    if let Some(parent) = document.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| PipelineError::Output {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    analysis.save_with_frames(frames, document)?;
    Ok(())
}

/// The key under which an analysis of this video with these settings is cached.
pub fn cache_key(video_sha256: &str, config: &PipelineConfig, captions: bool) -> String {
    let mut settings = config.to_json();
    if !captions {
        settings["caption"] = serde_json::Value::Null;
    }
    AnalysisCache::key(video_sha256, &settings)
}

/// The SHA-256 of a video file, with an error naming it.
pub fn video_sha256(video: &Path) -> Result<String, PipelineError> {
    use crate::video::VideoError;
    let path = video.to_path_buf();
    if video.is_dir() {
        return Err(VideoError::IsDirectory { path }.into());
    }
    file_sha256(video).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => VideoError::NotFound { path }.into(),
        _ => VideoError::Unreadable { path, source }.into(),
    })
}

/// How a stored analysis was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Obtained {
    /// Found in the cache: nothing was decoded.
    Cached(PathBuf),
    /// Analysed now and stored at this path.
    Analysed(PathBuf),
}

impl Obtained {
    /// Where the document is.
    pub fn path(&self) -> &Path {
        match self {
            Obtained::Cached(path) | Obtained::Analysed(path) => path,
        }
    }
}

/// How to run an analysis.
pub struct AnalysisRequest<'a> {
    /// The pipeline's settings.
    pub config: &'a PipelineConfig,
    /// Ctrl-C and stage errors.
    pub signal: StopSignal,
    /// No progress bar, and no line per keyframe.
    pub quiet: bool,
}

/// Loads the embedder and, when `captions` is set, the captioner that the pipeline and the
/// command line name.
pub fn load_models(
    config: &PipelineConfig,
    dirs: &ModelDirs,
    captions: bool,
) -> Result<Models, PipelineError> {
    let (embedder, embedder_source) = load_embedder(config, dirs)?;
    let captioner = if captions {
        let (captioner, source) = load_captioner(config, dirs)?;
        Some((captioner, source))
    } else {
        None
    };
    Ok(Models {
        embedder,
        embedder_source,
        captioner,
    })
}

/// Runs the analysis of `video` with `models` and stores it at `document`; returns what it
/// made, kept in memory for other outputs (its document records `document`'s sidecar), and
/// the models for the next video. Keyframes and warnings are logged on stderr (keyframes
/// not when the request is quiet).
pub fn analyse_video(
    video: &Path,
    video_sha256: String,
    request: AnalysisRequest<'_>,
    models: Models,
    document: &Path,
) -> Result<AnalysisOutput, PipelineError> {
    let quiet = request.quiet;
    analyse_video_reporting(
        video,
        video_sha256,
        request,
        models,
        document,
        move |progress: &Progress, event| log_event(progress, event, quiet),
    )
}

/// As [`analyse_video`], with `on_event` deciding what the user is shown of each event as it
/// happens; it is given the progress bars, to print around them.
pub fn analyse_video_reporting(
    video: &Path,
    video_sha256: String,
    request: AnalysisRequest<'_>,
    models: Models,
    document: &Path,
    on_event: impl Fn(&Progress, RunEvent) + Send + Sync + 'static,
) -> Result<AnalysisOutput, PipelineError> {
    let info = crate::video::probe(video)?;
    let progress = Progress::for_analysis(
        crate::time::MediaTime::from_seconds(info.duration_s),
        models.captioner.is_some(),
        request.quiet,
    );
    let job = AnalysisJob {
        config: request.config.clone(),
        video_sha256,
        models,
    };
    let printer = progress.clone();
    let output = analyse(video, job, request.signal, &progress, move |event| {
        on_event(&printer, event)
    });
    progress.finish();
    let mut output = output?;
    store_analysis(&mut output.analysis, &output.frames, document)?;
    Ok(output)
}

/// Logs an event on stderr above the bars: warnings always, keyframes unless `quiet`.
fn log_event(progress: &Progress, event: RunEvent, quiet: bool) {
    match event {
        RunEvent::Warning(warning) => progress.println(format!("warning: {warning}")),
        RunEvent::Keyframe { .. } if quiet => {}
        RunEvent::Keyframe {
            time,
            caption: Some(caption),
            ..
        } => progress.println(format!("{}  {}", time.timecode(), caption)),
        RunEvent::Keyframe { time, index, .. } => {
            progress.println(format!("{}  keyframe {}", time.timecode(), index + 1))
        }
    }
}

/// The cached analysis of `video` under these settings, or a new one stored in the cache
/// (models are loaded only then).
pub fn cached_or_analysed(
    video: &Path,
    request: AnalysisRequest<'_>,
    dirs: &ModelDirs,
    captions: bool,
    cache: &AnalysisCache,
) -> Result<Obtained, PipelineError> {
    let sha256 = video_sha256(video)?;
    let key = cache_key(&sha256, request.config, captions);
    if let Some(path) = cache.lookup(&key) {
        return Ok(Obtained::Cached(path));
    }
    crate::video::probe(video)?;
    let models = load_models(request.config, dirs, captions)?;
    let path = cache.analysis_path(&key);
    analyse_video(video, sha256, request, models, &path)?;
    Ok(Obtained::Analysed(path))
}
