//! A library: a folder of videos analysed into `keyscribe-library/` (one analysis document
//! and sidecar per video, plus a search index over all of them).

use std::path::{Path, PathBuf};

use super::{
    analyse_video, load_models, video_sha256, AnalysisRequest, ModelDirs, Models, PipelineConfig,
    PipelineError, StopSignal,
};
use crate::analysis::Analysis;
use crate::search::{IndexBuilder, SceneCaption, SearchIndex, VideoInput};
use crate::time::MediaTime;

/// The folder, inside an indexed folder, that holds its analyses and index.
pub const LIBRARY_DIR: &str = "keyscribe-library";

/// The search index file inside [`LIBRARY_DIR`].
pub const INDEX_FILE: &str = "index.ksi";

/// File extensions taken for videos when indexing a folder.
const VIDEO_EXTENSIONS: [&str; 12] = [
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "mts", "wmv", "flv",
];

/// The videos in `dir` and its subfolders (not the library folder), sorted.
pub fn find_videos(dir: &Path) -> Result<Vec<PathBuf>, PipelineError> {
    let mut videos = Vec::new();
    walk(dir, &mut |path| {
        let is_video = path
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| VIDEO_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()));
        if is_video {
            videos.push(path.to_path_buf());
        }
    })?;
    videos.sort();
    Ok(videos)
}

/// The analysis documents (`*.analysis.json`) in `dir` and its subfolders, sorted.
pub fn find_analyses(dir: &Path) -> Result<Vec<PathBuf>, PipelineError> {
    let mut documents = Vec::new();
    let mut visit = |path: &Path| {
        if path.to_string_lossy().ends_with(".analysis.json") {
            documents.push(path.to_path_buf());
        }
    };
    walk(dir, &mut visit)?;
    let library = dir.join(LIBRARY_DIR);
    if library.is_dir() {
        walk_all(&library, &mut visit)?;
    }
    documents.sort();
    Ok(documents)
}

fn walk(dir: &Path, visit: &mut dyn FnMut(&Path)) -> Result<(), PipelineError> {
    walk_filtered(dir, visit, true)
}

fn walk_all(dir: &Path, visit: &mut dyn FnMut(&Path)) -> Result<(), PipelineError> {
    walk_filtered(dir, visit, false)
}

fn walk_filtered(
    dir: &Path,
    visit: &mut dyn FnMut(&Path),
    skip_library: bool,
) -> Result<(), PipelineError> {
    let unreadable = |source| PipelineError::Output {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(unreadable)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with('.'));
        let library = path.file_name().is_some_and(|name| name == LIBRARY_DIR);
        if hidden || (skip_library && library) {
            continue;
        }
        if path.is_dir() {
            walk_filtered(&path, visit, skip_library)?;
        } else {
            visit(&path);
        }
    }
    Ok(())
}

/// Where the analysis of `video` (a file under `folder`) is kept in the library.
pub fn library_document(folder: &Path, video: &Path) -> PathBuf {
    let relative = video.strip_prefix(folder).unwrap_or(video);
    let name: Vec<String> = relative
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    folder
        .join(LIBRARY_DIR)
        .join(format!("{}.analysis.json", name.join("__")))
}

/// What [`index_folder`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IndexReport {
    /// Videos analysed now.
    pub analysed: Vec<PathBuf>,
    /// Videos whose analysis was already there (same content, same settings).
    pub skipped: Vec<PathBuf>,
    /// Videos that could not be analysed, with the reason.
    pub failed: Vec<(PathBuf, String)>,
    /// The search index written.
    pub index: PathBuf,
}

/// Analyses every video in `folder` not yet analysed with these settings, then writes the
/// library's search index. An interrupted run keeps the analyses already written, so running
/// it again resumes. `on_video` is told `(position, total, video, skipped)` before each.
pub fn index_folder(
    folder: &Path,
    config: &PipelineConfig,
    dirs: &ModelDirs,
    signal: &StopSignal,
    quiet: bool,
    on_video: &mut dyn FnMut(usize, usize, &Path, bool),
) -> Result<IndexReport, PipelineError> {
    let videos = find_videos(folder)?;
    let captions = config.caption.enabled;
    let settings = config.to_json();
    let mut report = IndexReport::default();
    let mut models: Option<Models> = None;
    for (position, video) in videos.iter().enumerate() {
        signal.check()?;
        let document = library_document(folder, video);
        let sha256 = video_sha256(video)?;
        let done = Analysis::load(&document).is_ok_and(|analysis| {
            analysis.video.sha256 == sha256
                && analysis.pipeline == settings
                && analysis.models.captioner.is_some() == captions
                && analysis.load_frames(&document).is_ok()
        });
        on_video(position, videos.len(), video, done);
        if done {
            report.skipped.push(video.clone());
            continue;
        }
        if let Err(error) = crate::video::probe(video) {
            report.failed.push((video.clone(), error.to_string()));
            continue;
        }
        let loaded = match models.take() {
            Some(loaded) => loaded,
            None => load_models(config, dirs, captions)?,
        };
        let request = AnalysisRequest {
            config,
            signal: signal.clone(),
            quiet,
        };
        match analyse_video(video, sha256, request, loaded, &document) {
            Ok((_, returned)) => {
                models = Some(returned);
                report.analysed.push(video.clone());
            }
            Err(error @ (PipelineError::Interrupted | PipelineError::Stopped)) => {
                return Err(error)
            }
            Err(PipelineError::Video(error)) => {
                report.failed.push((video.clone(), error.to_string()));
            }
            Err(error) => return Err(error),
        }
    }
    let documents = find_analyses(&folder.join(LIBRARY_DIR))?;
    let builder = index_builder(&documents)?;
    report.index = folder.join(LIBRARY_DIR).join(INDEX_FILE);
    builder.write(&report.index)?;
    Ok(report)
}

/// An index builder holding the frames of every analysis in `documents`.
pub fn index_builder(documents: &[PathBuf]) -> Result<IndexBuilder, PipelineError> {
    let mut builder = IndexBuilder::new();
    for document in documents {
        let analysis = Analysis::load(document)?;
        add_analysis(&mut builder, &analysis, document)?;
    }
    Ok(builder)
}

/// Adds one analysis (read from `document`) and its sidecar's frames to `builder`.
pub fn add_analysis(
    builder: &mut IndexBuilder,
    analysis: &Analysis,
    document: &Path,
) -> Result<(), PipelineError> {
    let frames = analysis.load_frames(document)?;
    let times: Vec<MediaTime> = frames
        .time_s
        .iter()
        .map(|&seconds| MediaTime::from_seconds(seconds))
        .collect();
    let scenes = SceneCaption::from_keyframes(&analysis.keyframes);
    builder.add_video(VideoInput {
        video: &analysis.video.path,
        duration: MediaTime::from_seconds(analysis.video.duration_s),
        times: &times,
        embeddings: &frames.embeddings,
        scenes: &scenes,
    })?;
    Ok(())
}

/// The library's index file when there is one up to date with its analyses, else an index
/// built in memory from `documents`.
pub fn open_index(
    library: Option<&Path>,
    documents: &[PathBuf],
) -> Result<SearchIndex, PipelineError> {
    let index_file = library.map(|library| library.join(INDEX_FILE));
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if let Some((index_file, index_time)) = index_file
        .as_deref()
        .and_then(|file| Some((file, modified(file)?)))
    {
        let fresh = documents
            .iter()
            .all(|document| modified(document).is_some_and(|time| time <= index_time));
        if fresh {
            return Ok(SearchIndex::open(index_file)?);
        }
    }
    Ok(index_builder(documents)?.build()?)
}
