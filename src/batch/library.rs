//! A search library made from the frame tables of a batch, without decoding any video.
//!
//! The library is a folder of index files (`index-00000.ksi`, ...), each holding at most a
//! given number of frames, and `library.json`, which lists them and records the embedder
//! that made the embeddings (a query must be embedded by the same model). `keyscribe
//! search LIBRARY` fans a query out over the index files and merges their best results.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::tables::{self, VideoFrames};
use super::BatchError;
use crate::analysis::ModelRecord;
use crate::atomic;
use crate::pipeline::StopSignal;
use crate::search::{IndexBuilder, SceneCaption, SearchIndex, VideoInput};

/// The file that describes a library made from batch tables.
pub const LIBRARY_FILE: &str = "library.json";

/// The version of [`LIBRARY_FILE`]'s layout.
pub const LIBRARY_SCHEMA: &str = "keyscribe.library/1";

/// What `library.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryRecord {
    /// Always [`LIBRARY_SCHEMA`].
    pub schema: String,
    /// The embedder that made every embedding of the library.
    pub embedder: ModelRecord,
    /// The embeddings' dimension.
    pub dim: usize,
    /// The index files, relative to the library folder.
    pub indexes: Vec<IndexFileRecord>,
}

/// One index file of a library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexFileRecord {
    /// The file's name in the library folder.
    pub file: String,
    /// Videos it holds.
    pub videos: usize,
    /// Frames it holds.
    pub frames: usize,
}

/// What [`index_tables`] made.
#[derive(Debug, Clone, PartialEq)]
pub struct LibraryReport {
    /// The library's description, as written.
    pub record: LibraryRecord,
    /// Videos found in more than one frame table (indexed once, from the first).
    pub repeated: Vec<String>,
}

impl LibraryReport {
    /// Videos indexed.
    pub fn videos(&self) -> usize {
        self.record.indexes.iter().map(|index| index.videos).sum()
    }

    /// Frames indexed.
    pub fn frames(&self) -> usize {
        self.record.indexes.iter().map(|index| index.frames).sum()
    }
}

/// The name of index file `number` of a library.
fn index_name(number: usize) -> String {
    format!("index-{number:05}.ksi")
}

/// Builds a search library in `out` from every `frames-*.parquet` (embeddings and times) and
/// `part-*.parquet` (scenes and captions) in `tables_dir`, starting a new index file before
/// one would hold more than `max_frames_per_index` frames (a video is never split). Vectors
/// wait in a temporary file in `out` while an index is built, so memory stays small.
pub fn index_tables(
    tables_dir: &Path,
    out: &Path,
    max_frames_per_index: usize,
    signal: &StopSignal,
) -> Result<LibraryReport, BatchError> {
    let frame_tables = tables::tables_in(tables_dir, "frames")?;
    if frame_tables.is_empty() {
        return Err(BatchError::BadTable {
            path: tables_dir.to_path_buf(),
            problem: "holds no frames-*.parquet tables (made by `keyscribe batch`)".to_string(),
        });
    }
    let part_tables = tables::tables_in(tables_dir, "part")?;
    std::fs::create_dir_all(out).map_err(|source| BatchError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let mut writer = LibraryWriter {
        out,
        max_frames: max_frames_per_index.max(1),
        builder: None,
        indexes: Vec::new(),
        embedder: None,
        seen: HashSet::new(),
        repeated: Vec::new(),
        current_videos: 0,
    };
    let mut dim = 0;
    for table in &frame_tables {
        signal.check()?;
        // A shard's scenes are in its own keyframe tables: only those are held in memory.
        let mut scenes: HashMap<String, Vec<SceneCaption>> = HashMap::new();
        for part in part_tables.iter().filter(|part| same_shard(table, part)) {
            for (video, video_scenes) in tables::read_scenes(part)? {
                scenes.entry(video).or_insert(video_scenes);
            }
        }
        dim = tables::read_frames(table, &mut |video| {
            signal.check()?;
            let video_scenes = scenes.get(&video.path).map(Vec::as_slice).unwrap_or(&[]);
            writer.add(table, video, video_scenes)
        })?;
    }
    writer.finish()?;
    let Some(embedder) = writer.embedder else {
        return Err(BatchError::BadTable {
            path: tables_dir.to_path_buf(),
            problem: "its frame tables hold no frames".to_string(),
        });
    };
    let record = LibraryRecord {
        schema: LIBRARY_SCHEMA.to_string(),
        embedder,
        dim,
        indexes: writer.indexes,
    };
    let mut text = serde_json::to_string_pretty(&record).expect("the library record serialises");
    text.push('\n');
    let path = out.join(LIBRARY_FILE);
    atomic::write(&path, text.as_bytes()).map_err(|source| BatchError::Write { path, source })?;
    Ok(LibraryReport {
        record,
        repeated: writer.repeated,
    })
}

/// Whether the keyframe table `part` (`part-NNNNN-of-MMMMM.parquet`) is of the same shard
/// as the frame table `frames` (`frames-NNNNN.parquet`).
fn same_shard(frames: &Path, part: &Path) -> bool {
    let name = |path: &Path| {
        path.file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default()
            .to_string()
    };
    let frames = name(frames);
    let shard = frames
        .strip_prefix("frames-")
        .and_then(|rest| rest.strip_suffix(".parquet"));
    shard.is_some_and(|shard| name(part).starts_with(&format!("part-{shard}-of-")))
}

/// Index files being written one after another.
struct LibraryWriter<'a> {
    out: &'a Path,
    max_frames: usize,
    builder: Option<IndexBuilder>,
    indexes: Vec<IndexFileRecord>,
    embedder: Option<ModelRecord>,
    seen: HashSet<String>,
    repeated: Vec<String>,
    current_videos: usize,
}

impl LibraryWriter<'_> {
    /// Adds one video read from `table`, starting the next index file when it would not fit.
    fn add(
        &mut self,
        table: &Path,
        video: VideoFrames,
        scenes: &[SceneCaption],
    ) -> Result<(), BatchError> {
        if !self.seen.insert(video.path.clone()) {
            self.repeated.push(video.path);
            return Ok(());
        }
        match &self.embedder {
            None => self.embedder = Some(video.embedder.clone()),
            Some(first) if !first.same_model(&video.embedder) => {
                return Err(BatchError::BadTable {
                    path: table.to_path_buf(),
                    problem: format!(
                        "`{}` was embedded with {}, other videos with {first}; a library \
                         holds one embedder's embeddings",
                        video.path, video.embedder
                    ),
                })
            }
            Some(_) => {}
        }
        let frames = video.times.len();
        let full = self.builder.as_ref().is_some_and(|builder| {
            builder.frames() > 0 && builder.frames() + frames > self.max_frames
        });
        if full {
            self.finish()?;
        }
        let builder = match &mut self.builder {
            Some(builder) => builder,
            None => self.builder.insert(
                IndexBuilder::spilling_to(self.out)
                    .map_err(|error| BatchError::Table(error.to_string()))?,
            ),
        };
        builder
            .add_video(VideoInput {
                video: &video.path,
                duration: video.duration,
                times: &video.times,
                embeddings: &video.embeddings,
                scenes,
            })
            .map_err(|error| BatchError::BadTable {
                path: table.to_path_buf(),
                problem: error.to_string(),
            })?;
        self.current_videos += 1;
        Ok(())
    }

    /// Writes the index being built, if any.
    fn finish(&mut self) -> Result<(), BatchError> {
        let Some(builder) = self.builder.take() else {
            return Ok(());
        };
        let file = index_name(self.indexes.len());
        let frames = builder.frames();
        builder
            .write(&self.out.join(&file))
            .map_err(|error| BatchError::Table(error.to_string()))?;
        self.indexes.push(IndexFileRecord {
            file,
            videos: std::mem::take(&mut self.current_videos),
            frames,
        });
        Ok(())
    }
}

/// A library made by [`index_tables`], opened for search.
pub struct Library {
    /// Its description.
    pub record: LibraryRecord,
    /// Its index files, opened (memory-mapped).
    pub indexes: Vec<SearchIndex>,
}

impl Library {
    /// Whether `dir` holds a library made from batch tables.
    pub fn is_library(dir: &Path) -> bool {
        dir.join(LIBRARY_FILE).is_file()
    }

    /// Opens the library in `dir`: its description and every index file it lists.
    pub fn open(dir: &Path) -> Result<Library, BatchError> {
        let path = dir.join(LIBRARY_FILE);
        let bad = |problem: String| BatchError::BadTable {
            path: path.clone(),
            problem,
        };
        let bytes = std::fs::read(&path).map_err(|source| BatchError::Read {
            path: path.clone(),
            source,
        })?;
        let record: LibraryRecord =
            serde_json::from_slice(&bytes).map_err(|error| bad(error.to_string()))?;
        if record.schema != LIBRARY_SCHEMA {
            return Err(bad(format!(
                "schema {} is not {LIBRARY_SCHEMA}",
                record.schema
            )));
        }
        let mut indexes = Vec::with_capacity(record.indexes.len());
        for index in &record.indexes {
            let name = Path::new(&index.file);
            if name.components().count() != 1 || name.is_absolute() {
                return Err(bad(format!("`{}` is not a file name", index.file)));
            }
            let opened =
                SearchIndex::open(&dir.join(name)).map_err(|error| bad(error.to_string()))?;
            if opened.dim() != record.dim {
                return Err(bad(format!(
                    "{} holds {}-dimensional embeddings, the library {}",
                    index.file,
                    opened.dim(),
                    record.dim
                )));
            }
            indexes.push(opened);
        }
        Ok(Library { record, indexes })
    }
}
