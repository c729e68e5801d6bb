//! The Parquet files a shard writes, and reading them back.
//!
//! `part-NNNNN-of-MMMMM.parquet` holds one row per keyframe; `frames-NNNNN.parquet` one row
//! per sampled frame (what search needs). Rows of one video are contiguous, videos in the
//! manifest's order. Both files carry their embedding as a fixed-size list of `f32` and the
//! models that made it, and both are written atomically: a file appears complete or not at
//! all. The columns are listed in README ("Scaling out").

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Float64Array, RecordBatch, StringArray,
    UInt32Array,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::BatchError;
use crate::analysis::{Analysis, FrameEmbeddings, ModelRecord};
use crate::atomic;
use crate::search::SceneCaption;
use crate::time::MediaTime;

/// The version of the tables' layout, in each file's metadata under `keyscribe.schema`.
pub const TABLES_SCHEMA: &str = "keyscribe.batch/1";

/// Rows per record batch when writing and reading.
const BATCH_ROWS: usize = 8192;

/// One analysed video of a shard, ready to become rows.
pub struct VideoRows<'a> {
    /// The path as the manifest spells it.
    pub path: &'a str,
    /// Its analysis.
    pub analysis: &'a Analysis,
    /// Its sampled frames.
    pub frames: &'a FrameEmbeddings,
    /// SHA-256 of the pipeline settings that made it.
    pub settings_sha256: &'a str,
}

/// The name of shard `index` of `count`'s keyframe table.
pub fn part_name(index: usize, count: usize) -> String {
    format!("part-{index:05}-of-{count:05}.parquet")
}

/// The name of shard `index`'s frame table.
pub fn frames_name(index: usize) -> String {
    format!("frames-{index:05}.parquet")
}

/// Writes the keyframe table of `videos` to `path` atomically; returns its rows.
pub fn write_keyframes(
    path: &Path,
    videos: &[VideoRows<'_>],
    dim: usize,
) -> Result<usize, BatchError> {
    let mut table = Table::default();
    for video in videos {
        for keyframe in &video.analysis.keyframes {
            let frame = nearest_frame(video.frames, keyframe.time_s);
            table.video(video);
            table.number("keyframe_index", keyframe.index as u32);
            table.float64("time_s", keyframe.time_s);
            table.text("timecode", Some(&keyframe.timecode));
            table.float64("scene_start_s", keyframe.scene.start_s);
            table.float64("scene_end_s", keyframe.scene.end_s);
            table.float32("change", keyframe.change);
            table.text("caption", keyframe.caption.as_deref());
            table.embedding(frame.map(|row| video.frames.row(row)), dim)?;
        }
    }
    table.write(path, dim, KEYFRAME_COLUMNS)
}

/// Writes the frame table of `videos` to `path` atomically; returns its rows.
pub fn write_frames(
    path: &Path,
    videos: &[VideoRows<'_>],
    dim: usize,
) -> Result<usize, BatchError> {
    let mut table = Table::default();
    for video in videos {
        for row in 0..video.frames.len() {
            table.video(video);
            table.number("frame_index", row as u32);
            table.float64("time_s", video.frames.time_s[row]);
            table.float32("change", video.frames.change[row]);
            table.embedding(Some(video.frames.row(row)), dim)?;
        }
    }
    table.write(path, dim, FRAME_COLUMNS)
}

/// The sampled frame at (or nearest to) `time_s`.
fn nearest_frame(frames: &FrameEmbeddings, time_s: f64) -> Option<usize> {
    (0..frames.len()).min_by(|&a, &b| {
        (frames.time_s[a] - time_s)
            .abs()
            .total_cmp(&(frames.time_s[b] - time_s).abs())
    })
}

/// How a column is typed.
#[derive(Clone, Copy)]
enum Kind {
    Text { nullable: bool },
    Float64,
    Float32,
    Number,
    Embedding,
}

/// The columns every table starts with: the video and the models.
const VIDEO_COLUMNS: [(&str, Kind); 13] = [
    ("video_path", Kind::Text { nullable: false }),
    ("video_sha256", Kind::Text { nullable: false }),
    ("duration_s", Kind::Float64),
    ("embedder", Kind::Text { nullable: false }),
    ("embedder_source", Kind::Text { nullable: false }),
    ("embedder_revision", Kind::Text { nullable: true }),
    ("embedder_weights_sha256", Kind::Text { nullable: true }),
    ("embedder_licence", Kind::Text { nullable: true }),
    ("captioner", Kind::Text { nullable: true }),
    ("captioner_source", Kind::Text { nullable: true }),
    ("captioner_revision", Kind::Text { nullable: true }),
    ("captioner_licence", Kind::Text { nullable: true }),
    ("settings_sha256", Kind::Text { nullable: false }),
];

/// The keyframe table's own columns, after [`VIDEO_COLUMNS`].
const KEYFRAME_COLUMNS: &[(&str, Kind)] = &[
    ("keyframe_index", Kind::Number),
    ("time_s", Kind::Float64),
    ("timecode", Kind::Text { nullable: false }),
    ("scene_start_s", Kind::Float64),
    ("scene_end_s", Kind::Float64),
    ("change", Kind::Float32),
    ("caption", Kind::Text { nullable: true }),
    ("embedding", Kind::Embedding),
];

/// The frame table's own columns, after [`VIDEO_COLUMNS`].
const FRAME_COLUMNS: &[(&str, Kind)] = &[
    ("frame_index", Kind::Number),
    ("time_s", Kind::Float64),
    ("change", Kind::Float32),
    ("embedding", Kind::Embedding),
];

/// A table being filled row by row, column by column in the order of its columns.
#[derive(Default)]
struct Table {
    texts: std::collections::HashMap<&'static str, Vec<Option<String>>>,
    floats64: std::collections::HashMap<&'static str, Vec<f64>>,
    floats32: std::collections::HashMap<&'static str, Vec<f32>>,
    numbers: std::collections::HashMap<&'static str, Vec<u32>>,
    embeddings: Vec<f32>,
}

impl Table {
    fn text(&mut self, column: &'static str, value: Option<&str>) {
        self.texts
            .entry(column)
            .or_default()
            .push(value.map(str::to_string));
    }

    fn float64(&mut self, column: &'static str, value: f64) {
        self.floats64.entry(column).or_default().push(value);
    }

    fn float32(&mut self, column: &'static str, value: f32) {
        self.floats32.entry(column).or_default().push(value);
    }

    fn number(&mut self, column: &'static str, value: u32) {
        self.numbers.entry(column).or_default().push(value);
    }

    /// The row's embedding; a keyframe without a sampled frame (never made by the
    /// pipeline) is an error rather than a row of zeros.
    fn embedding(&mut self, row: Option<&[f32]>, dim: usize) -> Result<(), BatchError> {
        match row {
            Some(row) if row.len() == dim => {
                self.embeddings.extend_from_slice(row);
                Ok(())
            }
            Some(row) => Err(BatchError::Table(format!(
                "an embedding has {} values where the shard's have {dim}",
                row.len()
            ))),
            None => Err(BatchError::Table(
                "a keyframe has no sampled frame to take its embedding from".to_string(),
            )),
        }
    }

    /// The video and model columns of one row.
    fn video(&mut self, video: &VideoRows<'_>) {
        let record = &video.analysis.video;
        let embedder = &video.analysis.models.embedder;
        let captioner = video.analysis.models.captioner.as_ref();
        self.text("video_path", Some(video.path));
        self.text("video_sha256", Some(&record.sha256));
        self.float64("duration_s", record.duration_s);
        self.text("embedder", Some(&embedder.name));
        self.text("embedder_source", Some(&embedder.source));
        self.text("embedder_revision", embedder.revision.as_deref());
        self.text(
            "embedder_weights_sha256",
            embedder.weights_sha256.as_deref(),
        );
        self.text("embedder_licence", embedder.licence.as_deref());
        self.text("captioner", captioner.map(|model| model.name.as_str()));
        self.text(
            "captioner_source",
            captioner.map(|model| model.source.as_str()),
        );
        self.text(
            "captioner_revision",
            captioner.and_then(|m| m.revision.as_deref()),
        );
        self.text(
            "captioner_licence",
            captioner.and_then(|m| m.licence.as_deref()),
        );
        self.text("settings_sha256", Some(video.settings_sha256));
    }

    /// Writes the table atomically with snappy compression, in batches of [`BATCH_ROWS`].
    fn write(
        mut self,
        path: &Path,
        dim: usize,
        own: &[(&'static str, Kind)],
    ) -> Result<usize, BatchError> {
        let columns: Vec<(&'static str, Kind)> = VIDEO_COLUMNS.iter().chain(own).copied().collect();
        let rows = self.texts.get("video_path").map_or(0, Vec::len);
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|&(name, kind)| column_field(name, kind, dim))
                .collect::<Vec<_>>(),
        ));
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
        for &(name, kind) in &columns {
            let array: ArrayRef = match kind {
                Kind::Text { .. } => Arc::new(StringArray::from(
                    self.texts.remove(name).unwrap_or_else(|| vec![None; rows]),
                )),
                Kind::Float64 => Arc::new(Float64Array::from(
                    self.floats64.remove(name).unwrap_or_default(),
                )),
                Kind::Float32 => Arc::new(Float32Array::from(
                    self.floats32.remove(name).unwrap_or_default(),
                )),
                Kind::Number => Arc::new(UInt32Array::from(
                    self.numbers.remove(name).unwrap_or_default(),
                )),
                Kind::Embedding => Arc::new(
                    FixedSizeListArray::try_new(
                        Arc::new(embedding_item()),
                        dim as i32,
                        Arc::new(Float32Array::from(std::mem::take(&mut self.embeddings))),
                        None,
                    )
                    .map_err(|error| BatchError::Table(error.to_string()))?,
                ),
            };
            arrays.push(array);
        }
        let batch = RecordBatch::try_new(schema.clone(), arrays)
            .map_err(|error| BatchError::Table(error.to_string()))?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "keyscribe.schema".to_string(),
                TABLES_SCHEMA.to_string(),
            )]))
            .build();
        atomic::write_with(path, |file| {
            let mut writer = ArrowWriter::try_new(file, schema, Some(properties))
                .map_err(std::io::Error::other)?;
            let mut start = 0;
            while start < rows {
                let length = BATCH_ROWS.min(rows - start);
                writer
                    .write(&batch.slice(start, length))
                    .map_err(std::io::Error::other)?;
                start += length;
            }
            writer.close().map_err(std::io::Error::other)?;
            Ok(())
        })
        .map_err(|source| BatchError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(rows)
    }
}

/// The element of an embedding list.
fn embedding_item() -> Field {
    Field::new("item", DataType::Float32, false)
}

/// The Arrow field of a column.
fn column_field(name: &str, kind: Kind, dim: usize) -> Field {
    match kind {
        Kind::Text { nullable } => Field::new(name, DataType::Utf8, nullable),
        Kind::Float64 => Field::new(name, DataType::Float64, false),
        Kind::Float32 => Field::new(name, DataType::Float32, false),
        Kind::Number => Field::new(name, DataType::UInt32, false),
        Kind::Embedding => Field::new(
            name,
            DataType::FixedSizeList(Arc::new(embedding_item()), dim as i32),
            false,
        ),
    }
}

/// One video's frames as read back from a frame table.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoFrames {
    /// The path as the manifest spelled it.
    pub path: String,
    /// The video's duration.
    pub duration: MediaTime,
    /// Each sampled frame's time.
    pub times: Vec<MediaTime>,
    /// `[frames, dim]` row-major.
    pub embeddings: Vec<f32>,
    /// The embedder that made them.
    pub embedder: ModelRecord,
}

/// Calls `each` with every video of the frame table at `path`, in the file's order,
/// holding one video's frames in memory at a time; returns the embedding dimension.
pub fn read_frames(
    path: &Path,
    each: &mut dyn FnMut(VideoFrames) -> Result<(), BatchError>,
) -> Result<usize, BatchError> {
    let bad = |problem: String| BatchError::BadTable {
        path: path.to_path_buf(),
        problem,
    };
    let reader = open_table(path)?;
    let mut dim = 0;
    let mut current: Option<VideoFrames> = None;
    for batch in reader {
        let batch = batch.map_err(|error| bad(error.to_string()))?;
        let columns = Columns::of(&batch);
        let embedding = columns.embeddings("embedding").map_err(&bad)?;
        dim = embedding.value_length() as usize;
        let values = embedding.values().as_primitive::<Float32Type>().values();
        let times = columns.floats("time_s").map_err(&bad)?;
        let durations = columns.floats("duration_s").map_err(&bad)?;
        for row in 0..batch.num_rows() {
            let video = columns.text("video_path", row).map_err(&bad)?;
            if current.as_ref().is_none_or(|frames| frames.path != video) {
                if let Some(done) = current.take() {
                    each(done)?;
                }
                current = Some(VideoFrames {
                    path: video.to_string(),
                    duration: MediaTime::from_seconds(durations[row]),
                    times: Vec::new(),
                    embeddings: Vec::new(),
                    embedder: columns.model("embedder", row).map_err(&bad)?,
                });
            }
            let frames = current.as_mut().expect("set above");
            frames.times.push(MediaTime::from_seconds(times[row]));
            frames
                .embeddings
                .extend_from_slice(&values[row * dim..(row + 1) * dim]);
        }
    }
    if let Some(done) = current {
        each(done)?;
    }
    Ok(dim)
}

/// The scenes and captions of every video in the keyframe table at `path`, in the file's
/// order.
pub fn read_scenes(path: &Path) -> Result<Vec<(String, Vec<SceneCaption>)>, BatchError> {
    let bad = |problem: String| BatchError::BadTable {
        path: path.to_path_buf(),
        problem,
    };
    let mut videos: Vec<(String, Vec<SceneCaption>)> = Vec::new();
    for batch in open_table(path)? {
        let batch = batch.map_err(|error| bad(error.to_string()))?;
        let columns = Columns::of(&batch);
        let starts = columns.floats("scene_start_s").map_err(&bad)?;
        let ends = columns.floats("scene_end_s").map_err(&bad)?;
        for row in 0..batch.num_rows() {
            let video = columns.text("video_path", row).map_err(&bad)?;
            let scene = SceneCaption {
                start: MediaTime::from_seconds(starts[row]),
                end: MediaTime::from_seconds(ends[row]),
                caption: columns
                    .optional_text("caption", row)
                    .map_err(&bad)?
                    .unwrap_or_default()
                    .to_string(),
            };
            match videos.last_mut() {
                Some((path, scenes)) if path == video => scenes.push(scene),
                _ => videos.push((video.to_string(), vec![scene])),
            }
        }
    }
    Ok(videos)
}

/// A reader over a table written by keyscribe (its schema mark checked).
fn open_table(
    path: &Path,
) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader, BatchError> {
    let bad = |problem: String| BatchError::BadTable {
        path: path.to_path_buf(),
        problem,
    };
    let file = File::open(path).map_err(|error| bad(error.to_string()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|error| bad(format!("not a Parquet file ({error})")))?;
    let mark = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|pairs| {
            pairs
                .iter()
                .find(|pair| pair.key == "keyscribe.schema")
                .and_then(|pair| pair.value.clone())
        });
    if mark.as_deref() != Some(TABLES_SCHEMA) {
        return Err(bad(format!(
            "not a table written by `keyscribe batch` (expected {TABLES_SCHEMA}, found {})",
            mark.as_deref().unwrap_or("no schema mark")
        )));
    }
    builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|error| bad(error.to_string()))
}

/// A record batch's columns by name, typed on access.
struct Columns<'a> {
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch) -> Self {
        Columns { batch }
    }

    fn column(&self, name: &str) -> Result<&'a ArrayRef, String> {
        self.batch
            .column_by_name(name)
            .ok_or_else(|| format!("no `{name}` column"))
    }

    fn floats(&self, name: &str) -> Result<&'a [f64], String> {
        let column = self.column(name)?;
        column
            .as_primitive_opt::<Float64Type>()
            .map(|array| &array.values()[..])
            .ok_or_else(|| format!("the `{name}` column is {}, not double", column.data_type()))
    }

    fn optional_text(&self, name: &str, row: usize) -> Result<Option<&'a str>, String> {
        let column = self.column(name)?;
        let array = column
            .as_string_opt::<i32>()
            .ok_or_else(|| format!("the `{name}` column is {}, not text", column.data_type()))?;
        Ok((!array.is_null(row)).then(|| array.value(row)))
    }

    fn text(&self, name: &str, row: usize) -> Result<&'a str, String> {
        self.optional_text(name, row)?
            .ok_or_else(|| format!("row {row}: `{name}` is empty"))
    }

    fn embeddings(&self, name: &str) -> Result<&'a FixedSizeListArray, String> {
        let column = self.column(name)?;
        column
            .as_fixed_size_list_opt()
            .filter(|list| list.value_type() == DataType::Float32)
            .ok_or_else(|| {
                format!(
                    "the `{name}` column is {}, not a fixed-size list of float",
                    column.data_type()
                )
            })
    }

    /// The record of the model whose columns start with `prefix`.
    fn model(&self, prefix: &str, row: usize) -> Result<ModelRecord, String> {
        let optional = |suffix: &str| -> Result<Option<String>, String> {
            Ok(self
                .optional_text(&format!("{prefix}_{suffix}"), row)?
                .map(str::to_string))
        };
        Ok(ModelRecord {
            name: self.text(prefix, row)?.to_string(),
            source: self.text(&format!("{prefix}_source"), row)?.to_string(),
            revision: optional("revision")?,
            weights_sha256: optional("weights_sha256")?,
            licence: optional("licence")?,
        })
    }
}

/// The shard tables of `kind` (`part` or `frames`) in `dir`, sorted by name.
pub fn tables_in(dir: &Path, kind: &str) -> Result<Vec<PathBuf>, BatchError> {
    let entries = std::fs::read_dir(dir).map_err(|source| BatchError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut tables: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| {
                    name.starts_with(&format!("{kind}-")) && name.ends_with(".parquet")
                })
        })
        .collect();
    tables.sort();
    Ok(tables)
}
