//! What the commands share around an analysis: finding and loading the models a pipeline
//! names, storing a document with its embeddings sidecar, and reusing cached analyses.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use super::{
    analyse, AnalysisJob, Models, PipelineConfig, PipelineError, Progress, RunEvent, StopSignal,
};
use crate::analysis::{Analysis, EmbeddingsRecord, FrameEmbeddings};
use crate::cache::{file_sha256, AnalysisCache};
use crate::caption::FrameCaptioner;
use crate::models::fastvlm::{FastVlm, FastVlmCaptioner, GenerationSettings};
use crate::models::mobileclip::MobileClip;
use crate::models::store::{self, HubSettings, LocatedModel, ModelRole};
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

/// Loads the pipeline's embedder; returns it with where it came from.
pub fn load_embedder(
    config: &PipelineConfig,
    dirs: &ModelDirs,
) -> Result<(MobileClip, String), PipelineError> {
    let located = locate_embedder(config, dirs)?;
    let model = MobileClip::load(&located.dir, &Device::Cpu)?;
    Ok((model, located.source))
}

/// Loads the pipeline's captioner with its prompt and decoding settings; returns it with
/// where it came from.
pub fn load_captioner(
    config: &PipelineConfig,
    dirs: &ModelDirs,
) -> Result<(FastVlmCaptioner, String), PipelineError> {
    let located = locate_captioner(config, dirs)?;
    let captioner = FastVlmCaptioner::from_settings(&located.dir, &config.caption)?;
    Ok((captioner, located.source))
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
/// architecture expects, none left over) and describes it in a few words.
pub fn verify_model(role: ModelRole, dir: &Path) -> Result<String, PipelineError> {
    match role {
        ModelRole::Embedder => {
            let model = MobileClip::load(dir, &Device::Cpu)?;
            Ok(format!("{}, {}-d embeddings", model.name(), model.dim()))
        }
        ModelRole::Captioner => {
            let model = FastVlm::load(dir, DType::F32, &Device::Cpu)?;
            Ok(model.name())
        }
    }
}

/// Where a document's embeddings sidecar goes: beside it, `NAME.embeddings.safetensors` for
/// a document `NAME.json`.
pub fn sidecar_path(document: &Path) -> PathBuf {
    let stem = document
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "analysis".to_string());
    document.with_file_name(format!("{stem}.embeddings.safetensors"))
}

/// Writes the sidecar, then the document that points at it (both atomically), so a stored
/// document never references a missing or partial sidecar.
pub fn store_analysis(
    analysis: &mut Analysis,
    frames: &FrameEmbeddings,
    document: &Path,
) -> Result<(), PipelineError> {
    let sidecar = sidecar_path(document);
    if let Some(parent) = document.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| PipelineError::Output {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    frames.save(&sidecar)?;
    analysis.embeddings = Some(EmbeddingsRecord {
        path: sidecar
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        frames: frames.len(),
        dim: frames.dim,
    });
    analysis.save(document)?;
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
        Some((Box::new(captioner) as Box<dyn FrameCaptioner>, source))
    } else {
        None
    };
    Ok(Models {
        embedder: Box::new(embedder),
        embedder_source,
        captioner,
    })
}

/// Runs the analysis of `video` with `models` and stores it at `document`; returns the
/// document and the models for the next video.
pub fn analyse_video(
    video: &Path,
    video_sha256: String,
    request: AnalysisRequest<'_>,
    models: Models,
    document: &Path,
) -> Result<(Analysis, Models), PipelineError> {
    let info = crate::video::probe(video)?;
    let progress = Progress::new(
        "analysing",
        crate::time::MediaTime::from_seconds(info.duration_s),
        request.quiet,
    );
    let job = AnalysisJob {
        config: request.config.clone(),
        video_sha256,
        models,
    };
    let printer = progress.clone();
    let quiet = request.quiet;
    let name = video.display().to_string();
    let output = analyse(
        video,
        job,
        request.signal,
        &progress,
        move |event| match event {
            RunEvent::Warning(warning) => printer.println(format!("warning: {name}: {warning}")),
            RunEvent::Keyframe { .. } if quiet => {}
            RunEvent::Keyframe {
                time,
                caption: Some(caption),
                ..
            } => printer.println(format!("{}  {}", time.timecode(), caption)),
            RunEvent::Keyframe { time, index, .. } => {
                printer.println(format!("{}  keyframe {}", time.timecode(), index + 1))
            }
        },
    );
    progress.finish();
    let mut output = output?;
    store_analysis(&mut output.analysis, &output.frames, document)?;
    Ok((output.analysis, output.models))
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
