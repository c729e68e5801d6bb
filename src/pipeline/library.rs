//! A library: a folder of videos analysed into `keyscribe-library/` (one analysis document
//! and sidecar per video, plus a search index over all of them).
//!
//! # Walking an untrusted folder
//!
//! The folder is walked without following symbolic links to folders, so a link loop or a
//! link to `/` cannot make the walk endless or leave the folder. A link to a regular file is
//! taken when its target lies inside the folder, and every file is analysed once however
//! many links and hard links lead to it (files are told apart by device and inode). Entries
//! are classified from their type as listed and from `stat` before anything opens them: a
//! FIFO, socket or device (or a link to one) is never opened, so it cannot block the run.
//! An entry that cannot be read (a broken link, a folder without permission) is a per-file
//! failure; the walk goes on. Names need not be UTF-8.
//!
//! # Library file names
//!
//! A video's analysis is named by a readable form of its path relative to the folder
//! followed by a hash of that path's bytes (see [`library_document`]), so two videos never
//! share a document, whatever their names. Documents named by the earlier scheme (path
//! components joined with `__`) are adopted under the new name when they still match their
//! video, so an existing library is not analysed again.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{FileType, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{
    analyse_video, load_models, AnalysisRequest, ModelDirs, Models, PipelineConfig, PipelineError,
    StopSignal,
};
use crate::analysis::{Analysis, AnalysisError, FrameEmbeddings};
use crate::search::{IndexBuilder, SceneCaption, SearchIndex, VideoInput};
use crate::time::MediaTime;
use crate::video::VideoError;

/// The folder, inside an indexed folder, that holds its analyses and index.
pub const LIBRARY_DIR: &str = "keyscribe-library";

/// The search index file inside [`LIBRARY_DIR`].
pub const INDEX_FILE: &str = "index.ksi";

/// File extensions taken for videos when indexing a folder.
const VIDEO_EXTENSIONS: [&str; 12] = [
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "mts", "wmv", "flv",
];

/// The longest readable part of a library document's name, in bytes; the whole name (with
/// the hash and the sidecar's suffix) stays well under the 255 bytes file systems allow.
const READABLE_NAME_BYTES: usize = 120;

/// Hex digits of the path hash in a library document's name (64 bits).
const NAME_HASH_DIGITS: usize = 16;

/// An entry of a folder that the library leaves out or could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// The entry.
    pub path: PathBuf,
    /// What is wrong, in one line that names the entry.
    pub message: String,
}

impl FileProblem {
    fn new(path: &Path, problem: impl std::fmt::Display) -> Self {
        FileProblem {
            path: path.to_path_buf(),
            message: format!("{}: {problem}", path.display()),
        }
    }

    /// A problem from an error, naming the entry unless the error's text already does.
    fn from_error(path: &Path, error: &dyn std::fmt::Display) -> Self {
        let text = error.to_string();
        if text.contains(&path.display().to_string()) {
            FileProblem {
                path: path.to_path_buf(),
                message: text,
            }
        } else {
            FileProblem::new(path, text)
        }
    }
}

/// What [`find_videos`] found in a folder.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FolderScan {
    /// The videos to analyse, each file once, sorted: regular files with a video extension,
    /// and links to such files inside the folder.
    pub videos: Vec<PathBuf>,
    /// Entries left out on purpose, sorted: FIFOs, sockets and devices named like videos
    /// (never opened), links to folders and links out of the folder (not followed), and
    /// further names of a file already taken.
    pub ignored: Vec<FileProblem>,
    /// Entries that could not be read, sorted: broken links, unreadable folders.
    pub failed: Vec<FileProblem>,
}

/// A video file the walk found, before duplicates are removed.
struct FoundVideo {
    path: PathBuf,
    /// Device and inode: the file's identity whatever the name that leads to it.
    identity: (u64, u64),
    through_link: bool,
}

/// The videos in `dir` and its subfolders (not the library folder, not hidden entries).
/// Fails only when `dir` itself cannot be read, or when `signal` is raised.
pub fn find_videos(dir: &Path, signal: &StopSignal) -> Result<FolderScan, PipelineError> {
    let unreadable_root = |source| {
        PipelineError::Video(VideoError::Unreadable {
            path: dir.to_path_buf(),
            source,
        })
    };
    let root = std::fs::canonicalize(dir).map_err(unreadable_root)?;
    let mut scan = FolderScan::default();
    let mut found = Vec::new();
    let mut unreadable = Vec::new();
    walk(
        dir,
        signal,
        true,
        &mut unreadable,
        &mut |path, file_type| match classify(path, file_type, &root) {
            Ok(Some(video)) => found.push(video),
            Ok(None) => {}
            Err(Classified::Ignored(problem)) => scan.ignored.push(problem),
            Err(Classified::Failed(problem)) => scan.failed.push(problem),
        },
    )?;
    for (path, error) in unreadable {
        if path == dir {
            return Err(unreadable_root(error));
        }
        scan.failed.push(FileProblem::new(
            &path,
            format_args!("cannot read: {error}"),
        ));
    }
    // A file reached by its own name and through links is analysed once, by its own name.
    found.sort_by(|a, b| (a.through_link, &a.path).cmp(&(b.through_link, &b.path)));
    let mut taken: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for video in found {
        match taken.get(&video.identity) {
            Some(first) => scan.ignored.push(FileProblem::new(
                &video.path,
                format_args!("the same file as {}, analysed once", first.display()),
            )),
            None => {
                taken.insert(video.identity, video.path);
            }
        }
    }
    scan.videos = taken.into_values().collect();
    scan.videos.sort();
    scan.ignored.sort_by(|a, b| a.path.cmp(&b.path));
    scan.failed.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(scan)
}

/// Why an entry named like a video is not taken.
enum Classified {
    Ignored(FileProblem),
    Failed(FileProblem),
}

/// Decides what an entry of the walk is, from its type as listed and `stat` (never by
/// opening it): a video to analyse, nothing of interest (`None`), or a problem.
fn classify(
    path: &Path,
    file_type: FileType,
    root: &Path,
) -> Result<Option<FoundVideo>, Classified> {
    let ignored = |problem: String| Err(Classified::Ignored(FileProblem::new(path, problem)));
    if file_type.is_symlink() {
        let target = match std::fs::metadata(path) {
            Ok(target) => target,
            Err(_) if !has_video_extension(path) => return Ok(None),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(Classified::Failed(FileProblem::new(
                    path,
                    "a broken link (its target does not exist)",
                )))
            }
            Err(error) => {
                return Err(Classified::Failed(FileProblem::new(
                    path,
                    format_args!("cannot follow the link: {error}"),
                )))
            }
        };
        if target.is_dir() {
            return ignored("a link to a folder (links to folders are not followed)".into());
        }
        if !has_video_extension(path) {
            return Ok(None);
        }
        if !target.is_file() {
            return ignored(format!(
                "a link to {}, not to a regular file (not opened)",
                kind_of(target.file_type())
            ));
        }
        let inside = std::fs::canonicalize(path).is_ok_and(|real| real.starts_with(root));
        if !inside {
            return ignored("a link out of the folder (not followed)".into());
        }
        return Ok(Some(found_video(path, &target, true)));
    }
    if !has_video_extension(path) {
        return Ok(None);
    }
    if !file_type.is_file() {
        return ignored(format!(
            "{}, not a regular file (not opened)",
            kind_of(file_type)
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(metadata) => Ok(Some(found_video(path, &metadata, false))),
        Err(error) => Err(Classified::Failed(FileProblem::new(path, error))),
    }
}

fn found_video(path: &Path, metadata: &Metadata, through_link: bool) -> FoundVideo {
    FoundVideo {
        path: path.to_path_buf(),
        identity: (metadata.dev(), metadata.ino()),
        through_link,
    }
}

/// A file type in words, for messages.
fn kind_of(file_type: FileType) -> &'static str {
    if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_dir() {
        "a folder"
    } else {
        "a special file"
    }
}

fn has_video_extension(path: &Path) -> bool {
    path.extension()
        .and_then(OsStr::to_str)
        .is_some_and(|ext| VIDEO_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// The analysis documents (`*.analysis.json`) in `dir` and its subfolders, sorted. Links
/// are not followed; a folder that cannot be read is an error.
pub fn find_analyses(dir: &Path) -> Result<Vec<PathBuf>, PipelineError> {
    let mut documents = Vec::new();
    let mut unreadable = Vec::new();
    let mut visit = |path: &Path, file_type: FileType| {
        if file_type.is_file() && path.as_os_str().as_bytes().ends_with(b".analysis.json") {
            documents.push(path.to_path_buf());
        }
    };
    let signal = StopSignal::new();
    walk(dir, &signal, true, &mut unreadable, &mut visit)?;
    let library = dir.join(LIBRARY_DIR);
    if std::fs::symlink_metadata(&library).is_ok_and(|metadata| metadata.is_dir()) {
        walk(&library, &signal, false, &mut unreadable, &mut visit)?;
    }
    if let Some((path, source)) = unreadable.into_iter().next() {
        return Err(AnalysisError::Read { path, source }.into());
    }
    documents.sort();
    Ok(documents)
}

/// Visits every entry under `dir` that is not a folder, with its type as listed (links not
/// followed), skipping hidden entries and, when `skip_library` is set, library folders.
/// Folders and entries that cannot be read (`dir` included) go to `unreadable`.
fn walk(
    dir: &Path,
    signal: &StopSignal,
    skip_library: bool,
    unreadable: &mut Vec<(PathBuf, std::io::Error)>,
    visit: &mut dyn FnMut(&Path, FileType),
) -> Result<(), PipelineError> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        signal.check()?;
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(error) => {
                unreadable.push((folder, error));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    unreadable.push((folder.clone(), error));
                    break;
                }
            };
            let name = entry.file_name();
            let library = skip_library && name == LIBRARY_DIR;
            if name.as_bytes().starts_with(b".") || library {
                continue;
            }
            let path = entry.path();
            match entry.file_type() {
                Ok(file_type) if file_type.is_dir() => pending.push(path),
                Ok(file_type) => visit(&path, file_type),
                Err(error) => unreadable.push((path, error)),
            }
        }
    }
    Ok(())
}

/// Where the analysis of `video` (a file under `folder`) is kept in the library: a readable
/// form of its path relative to `folder` (at most [`READABLE_NAME_BYTES`] bytes), then 16
/// hex digits of the SHA-256 of the relative path's bytes. Different videos get different
/// names (up to a 64-bit hash collision), and a video keeps its name however `folder` is
/// spelled.
pub fn library_document(folder: &Path, video: &Path) -> PathBuf {
    let relative = video.strip_prefix(folder).unwrap_or(video);
    let mut key = Vec::new();
    let mut readable = String::new();
    for (position, part) in relative.components().enumerate() {
        if position > 0 {
            key.push(b'/');
            readable.push_str("__");
        }
        key.extend_from_slice(part.as_os_str().as_bytes());
        readable.extend(part.as_os_str().to_string_lossy().chars().map(|c| match c {
            '.' | '-' | '_' => c,
            c if c.is_alphanumeric() => c,
            _ => '_',
        }));
    }
    let mut end = readable.len().min(READABLE_NAME_BYTES);
    while !readable.is_char_boundary(end) {
        end -= 1;
    }
    readable.truncate(end);
    let hash: String = Sha256::digest(&key)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .take(NAME_HASH_DIGITS / 2)
        .collect();
    folder
        .join(LIBRARY_DIR)
        .join(format!("{readable}-{hash}.analysis.json"))
}

/// Where the earlier naming scheme (relative path components joined with `__`) kept the
/// analysis of `video`; two videos could share it.
fn legacy_library_document(folder: &Path, video: &Path) -> PathBuf {
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
    /// Entries left out on purpose (see [`FolderScan::ignored`]).
    pub ignored: Vec<FileProblem>,
    /// Entries and videos that could not be read, analysed or indexed; the others were.
    pub failed: Vec<FileProblem>,
    /// The search index written; it holds the videos analysed and skipped.
    pub index: PathBuf,
}

/// Analyses every video in `folder` not yet analysed with these settings, then writes the
/// library's search index over the folder's videos. A video that cannot be read or
/// analysed is reported in [`IndexReport::failed`] and the others go on; an error is
/// returned only for what stops every video (the models, the library folder, Ctrl-C). An
/// interrupted run keeps the analyses already written, so running it again resumes.
/// `on_video` is told `(position, total, video, skipped)` before each video.
pub fn index_folder(
    folder: &Path,
    config: &PipelineConfig,
    dirs: &ModelDirs,
    signal: &StopSignal,
    quiet: bool,
    on_video: &mut dyn FnMut(usize, usize, &Path, bool),
) -> Result<IndexReport, PipelineError> {
    let scan = find_videos(folder, signal)?;
    let mut report = IndexReport {
        ignored: scan.ignored,
        failed: scan.failed,
        ..IndexReport::default()
    };
    let captions = config.caption.enabled;
    let mut indexed: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut models: Option<Models> = None;
    let total = scan.videos.len();
    for (position, video) in scan.videos.iter().enumerate() {
        signal.check()?;
        let document = library_document(folder, video);
        let sha256 = match regular_file_sha256(video, signal) {
            Ok(sha256) => sha256,
            Err(PipelineError::Interrupted) => return Err(PipelineError::Interrupted),
            Err(error) => {
                report.failed.push(FileProblem::from_error(video, &error));
                continue;
            }
        };
        let done = current_analysis(&document, &sha256, config).is_some()
            || adopt_legacy_analysis(folder, video, &document, &sha256, config);
        on_video(position, total, video, done);
        if done {
            report.skipped.push(video.clone());
            indexed.push((video.clone(), document));
            continue;
        }
        let request = AnalysisRequest {
            config,
            signal: signal.clone(),
            quiet,
        };
        match analyse_in_turn(
            video,
            sha256,
            request,
            dirs,
            captions,
            &mut models,
            &document,
        )? {
            Ok(_) => {
                report.analysed.push(video.clone());
                indexed.push((video.clone(), document));
            }
            Err(problem) => report.failed.push(problem),
        }
    }
    let library = folder.join(LIBRARY_DIR);
    std::fs::create_dir_all(&library).map_err(|source| PipelineError::Output {
        path: library.clone(),
        source,
    })?;
    let mut builder = IndexBuilder::new();
    for (video, document) in &indexed {
        let added = Analysis::load(document)
            .map_err(PipelineError::from)
            .and_then(|analysis| add_analysis(&mut builder, &analysis, document));
        if let Err(error) = added {
            report.failed.push(FileProblem::from_error(video, &error));
        }
    }
    report.index = library.join(INDEX_FILE);
    builder.write(&report.index)?;
    report.failed.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(report)
}

/// Analyses one video of a series with the models kept between videos in `models` (loaded
/// at the first video that needs them, and again after a video that lost them) and stores
/// the analysis at `document`. A video's own trouble (unreadable, damaged, a stage's panic)
/// is returned as its problem; an error is returned for what stops every video (the
/// models, Ctrl-C).
pub fn analyse_in_turn(
    video: &Path,
    sha256: String,
    request: AnalysisRequest<'_>,
    dirs: &ModelDirs,
    captions: bool,
    models: &mut Option<Models>,
    document: &Path,
) -> Result<Result<(Analysis, FrameEmbeddings), FileProblem>, PipelineError> {
    // A bug that one file sets off costs that file, not the series (stage threads treat
    // panics the same way); the panic's own message has been printed.
    match std::panic::catch_unwind(|| crate::video::probe(video)) {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return Ok(Err(FileProblem::from_error(video, &error))),
        Err(_) => {
            return Ok(Err(FileProblem::new(
                video,
                "internal error while opening the video (a bug, reported above)",
            )))
        }
    }
    let loaded = match models.take() {
        Some(loaded) => loaded,
        None => load_models(request.config, dirs, captions)?,
    };
    match analyse_video(video, sha256, request, loaded, document) {
        Ok(output) => {
            *models = Some(output.models);
            Ok(Ok((output.analysis, output.frames)))
        }
        // This video's own trouble (the models went with it and are loaded again).
        Err(
            error @ (PipelineError::Video(_)
            | PipelineError::Failed { .. }
            | PipelineError::StagePanicked { .. }),
        ) => Ok(Err(FileProblem::from_error(video, &error))),
        Err(error) => Err(error),
    }
}

/// The SHA-256 of `video`'s content, opened so that it cannot block (a FIFO put in its
/// place since the walk is refused, not waited on) and read until done or interrupted.
pub fn regular_file_sha256(video: &Path, signal: &StopSignal) -> Result<String, PipelineError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let unreadable = |source| {
        PipelineError::Video(VideoError::Unreadable {
            path: video.to_path_buf(),
            source,
        })
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(video)
        .map_err(unreadable)?;
    let file_type = file.metadata().map_err(unreadable)?.file_type();
    if !file_type.is_file() {
        return Err(unreadable(std::io::Error::other(format!(
            "{}, not a regular file (not read)",
            kind_of(file_type)
        ))));
    }
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        signal.check()?;
        let read = file.read(&mut buffer).map_err(unreadable)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

/// The analysis at `document` when it is of this content, made with these settings, and
/// its sidecar is there.
fn current_analysis(document: &Path, sha256: &str, config: &PipelineConfig) -> Option<Analysis> {
    let analysis = Analysis::load(document).ok()?;
    let current = analysis.video.sha256 == sha256
        && analysis.pipeline == config.to_json()
        && analysis.models.captioner.is_some() == config.caption.enabled
        && analysis.load_frames(document).is_ok();
    current.then_some(analysis)
}

/// Moves a current analysis of `video` kept under the earlier naming scheme (and its
/// sidecar) to `document`; whether it did.
fn adopt_legacy_analysis(
    folder: &Path,
    video: &Path,
    document: &Path,
    sha256: &str,
    config: &PipelineConfig,
) -> bool {
    let legacy = legacy_library_document(folder, video);
    let Some(mut analysis) = current_analysis(&legacy, sha256, config) else {
        return false;
    };
    let Ok(old_sidecar) = analysis.embeddings_path(&legacy) else {
        return false;
    };
    let moved = analysis
        .load_frames(&legacy)
        .and_then(|frames| analysis.save_with_frames(&frames, document))
        .is_ok();
    if moved {
        let _ = std::fs::remove_file(&legacy);
        let _ = std::fs::remove_file(&old_sidecar);
    }
    moved
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

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    use std::os::unix::fs::symlink;

    use super::*;

    fn name(path: &Path) -> String {
        path.file_name().unwrap().to_string_lossy().into_owned()
    }

    #[test]
    fn library_names_never_collide_and_stay_short() {
        let folder = Path::new("/videos");
        let document = |relative: &[u8]| {
            let video = folder.join(OsString::from_vec(relative.to_vec()));
            name(&library_document(folder, &video))
        };
        let nested = document(b"x/y.mp4");
        assert_ne!(nested, document(b"x__y.mp4"));
        assert!(nested.starts_with("x__y.mp4-") && nested.ends_with(".analysis.json"));
        // Names that read alike once made printable: different bytes, different files.
        assert_ne!(document(b"caf\xe9.mp4"), document(b"caf\xe8.mp4"));
        assert_ne!(document(b"a b.mp4"), document(b"a_b.mp4"));
        assert_eq!(document(b"a\x1b[2J.mp4").find('\x1b'), None);
        // However deep or long the path, the sidecar's name (the document's stem, then
        // `.embeddings.`, 16 hex digits and `.safetensors`) fits in 255 bytes.
        let long = format!("{}/{}.mp4", "deep/".repeat(60), "é".repeat(200));
        let document = library_document(folder, &folder.join(long));
        let stem = name(&document).len() - ".json".len();
        assert!(stem + ".embeddings.".len() + 16 + ".safetensors".len() <= 255);
        // The name depends on the path inside the folder, not on how the folder is spelled.
        assert_eq!(
            name(&library_document(
                Path::new("videos"),
                Path::new("videos/a/b.mp4")
            )),
            name(&library_document(
                Path::new("/srv/videos/"),
                Path::new("/srv/videos/a/b.mp4")
            ))
        );
    }

    #[test]
    fn the_walk_takes_each_regular_video_once_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        std::fs::create_dir_all(top.join("sub")).unwrap();
        std::fs::create_dir_all(top.join(LIBRARY_DIR)).unwrap();
        for file in ["a.mp4", "sub/B.MKV", "notes.txt", "keyscribe-library/c.mp4"] {
            std::fs::write(top.join(file), "x").unwrap();
        }
        std::fs::write(dir.path().join("outside.mp4"), "x").unwrap();
        std::fs::hard_link(top.join("a.mp4"), top.join("sub/hard.mp4")).unwrap();
        symlink("..", top.join("sub/loop")).unwrap();
        symlink("../a.mp4", top.join("sub/link.mp4")).unwrap();
        symlink("../outside.mp4", top.join("out.mp4")).unwrap();
        symlink("missing.mp4", top.join("broken.mp4")).unwrap();
        symlink("missing.txt", top.join("broken.txt")).unwrap();
        symlink("/dev/null", top.join("null.webm")).unwrap();
        let fifo = std::ffi::CString::new(top.join("fifo.mp4").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let odd = top.join(OsString::from_vec(b"caf\xe9.mov".to_vec()));
        std::fs::write(&odd, "x").unwrap();

        let scan = find_videos(&top, &StopSignal::new()).unwrap();
        let relative = |path: &PathBuf| path.strip_prefix(&top).unwrap().to_path_buf();
        let videos: Vec<PathBuf> = scan.videos.iter().map(relative).collect();
        assert_eq!(
            videos,
            [
                PathBuf::from("a.mp4"),
                PathBuf::from(OsString::from_vec(b"caf\xe9.mov".to_vec())),
                PathBuf::from("sub/B.MKV"),
            ]
        );
        let ignored: Vec<(PathBuf, &str)> = scan
            .ignored
            .iter()
            .map(|problem| (relative(&problem.path), problem.message.as_str()))
            .collect();
        let expected = [
            ("fifo.mp4", "a FIFO, not a regular file"),
            ("null.webm", "a link to a character device"),
            ("out.mp4", "a link out of the folder"),
            ("sub/hard.mp4", "the same file as"),
            ("sub/link.mp4", "the same file as"),
            ("sub/loop", "links to folders are not followed"),
        ];
        assert_eq!(ignored.len(), expected.len(), "{ignored:?}");
        for ((path, message), (expected_path, why)) in ignored.iter().zip(expected) {
            assert_eq!(path, Path::new(expected_path));
            assert!(message.contains(why), "{message}");
        }
        assert_eq!(scan.failed.len(), 1, "{:?}", scan.failed);
        assert_eq!(relative(&scan.failed[0].path), Path::new("broken.mp4"));
        assert!(scan.failed[0]
            .message
            .ends_with("broken.mp4: a broken link (its target does not exist)"));
    }

    #[test]
    fn a_folder_that_cannot_be_read_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let error = find_videos(&missing, &StopSignal::new()).unwrap_err();
        assert!(error.to_string().contains("missing"), "{error}");
        let signal = StopSignal::new();
        signal.stop();
        assert!(matches!(
            find_videos(dir.path(), &signal),
            Err(PipelineError::Stopped)
        ));
    }
}
