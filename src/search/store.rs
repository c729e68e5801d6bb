//! The index file: how a library is laid out on disk, written and opened.
//!
//! Little-endian throughout. A fixed header (magic `KSSEARCH`, format version, then the
//! offset and length of each section) is followed by the sections, each starting on a
//! 64-byte boundary so that they can be used in place from a memory map:
//!
//! | section | holds |
//! | --- | --- |
//! | metadata | JSON: dimension, rotation seed, videos with their row ranges and captioned scenes |
//! | centre | `f32 × width`, the library's mean embedding, rotated |
//! | times | `f64 × rows`, each frame's time in seconds |
//! | scales | `f32 × rows`, each stored vector's scale |
//! | factors | `(f32, u32) × rows`, each code's scale and number of set bits |
//! | codes | `u64 × rows × width / 64`, the sign codes (scanned by every query) |
//! | vectors | `i16 × rows × width`, the rotated embeddings at 16 bits (read for candidates only) |
//!
//! `width` is the embedding dimension rounded up to a power of two (at least 64): vectors
//! are stored rotated (see `codes.rs`).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::{Pod, Zeroable};
use memmap2::Mmap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::codes::{CodeBasis, CodeFactors, Rotation};
use super::{SceneCaption, SearchError, VideoInput};
use crate::atomic;

const MAGIC: &[u8; 8] = b"KSSEARCH";
const VERSION: u32 = 1;
const SECTIONS: usize = 7;
const HEADER_BYTES: usize = 16 + SECTIONS * 16;
const ALIGN: usize = 64;
/// The rotation every index uses; stored in the file so that it could change later.
const ROTATION_SEED: u64 = 0x6b65_7973_6372_6962;
/// Rows encoded per batch when writing.
const ENCODE_BATCH: usize = 16_384;

/// The metadata section.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Metadata {
    pub dim: usize,
    pub rotation_seed: u64,
    pub rows: usize,
    pub videos: Vec<VideoMetadata>,
}

/// One video in the metadata section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VideoMetadata {
    pub video: String,
    pub duration_s: f64,
    pub first_row: usize,
    pub rows: usize,
    pub scenes: Vec<SceneMetadata>,
}

/// One captioned scene in the metadata section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SceneMetadata {
    pub start_s: f64,
    pub end_s: f64,
    pub caption: String,
}

/// The bytes of an index: a memory-mapped file or a buffer.
#[derive(Debug)]
pub(crate) enum Storage {
    Mapped(Mmap),
    /// `u64` words so that every section is 8-byte aligned.
    Owned {
        words: Vec<u64>,
        bytes: usize,
    },
}

impl Storage {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(map) => map,
            Storage::Owned { words, bytes } => &bytemuck::cast_slice(words)[..*bytes],
        }
    }
}

/// Where each section lies in the storage.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub metadata: Range<usize>,
    pub centre: Range<usize>,
    pub times: Range<usize>,
    pub scales: Range<usize>,
    pub factors: Range<usize>,
    pub codes: Range<usize>,
    pub vectors: Range<usize>,
}

impl Layout {
    fn sections(&self) -> [&Range<usize>; SECTIONS] {
        [
            &self.metadata,
            &self.centre,
            &self.times,
            &self.scales,
            &self.factors,
            &self.codes,
            &self.vectors,
        ]
    }

    /// Lays out sections of the given lengths after the header.
    fn new(lengths: [usize; SECTIONS]) -> Self {
        let mut offset = HEADER_BYTES;
        let mut ranges = lengths.map(|length| {
            offset = offset.next_multiple_of(ALIGN);
            let range = offset..offset + length;
            offset += length;
            range
        });
        let mut take = |index: usize| std::mem::replace(&mut ranges[index], 0..0);
        Layout {
            metadata: take(0),
            centre: take(1),
            times: take(2),
            scales: take(3),
            factors: take(4),
            codes: take(5),
            vectors: take(6),
        }
    }

    fn header(&self) -> Vec<u8> {
        let mut header = Vec::with_capacity(HEADER_BYTES);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&(SECTIONS as u32).to_le_bytes());
        for range in self.sections() {
            header.extend_from_slice(&(range.start as u64).to_le_bytes());
            header.extend_from_slice(&(range.len() as u64).to_le_bytes());
        }
        header
    }

    /// Reads the header of `bytes` and checks every section lies inside.
    pub fn read(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
            return Err("not a keyscribe search index (bad magic)".into());
        }
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]));
        let long = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        if word(8) != VERSION || word(12) as usize != SECTIONS {
            return Err(format!(
                "index format version {} is not supported (this build reads {VERSION})",
                word(8)
            ));
        }
        let mut ranges = Vec::with_capacity(SECTIONS);
        for section in 0..SECTIONS {
            let start = long(16 + 16 * section) as usize;
            let length = long(24 + 16 * section) as usize;
            let end = start
                .checked_add(length)
                .filter(|&end| end <= bytes.len() && start.is_multiple_of(ALIGN))
                .ok_or_else(|| format!("section {section} lies outside the file (truncated?)"))?;
            ranges.push(start..end);
        }
        let mut ranges = ranges.into_iter();
        let mut next = || ranges.next().unwrap_or(0..0);
        Ok(Layout {
            metadata: next(),
            centre: next(),
            times: next(),
            scales: next(),
            factors: next(),
            codes: next(),
            vectors: next(),
        })
    }
}

/// Builds a search index from analysed videos, one video at a time.
///
/// The 16-bit vectors are kept in memory, or, for large libraries, in a spill file (see
/// [`IndexBuilder::spilling_to`]); the codes are computed when the index is written, from the
/// mean of the whole library.
#[derive(Debug)]
pub struct IndexBuilder {
    /// Set by the first video with frames.
    rotation: Option<Rotation>,
    videos: Vec<VideoMetadata>,
    times: Vec<f64>,
    scales: Vec<f32>,
    centre_sum: Vec<f64>,
    vectors: VectorStore,
}

#[derive(Debug)]
enum VectorStore {
    Memory(Vec<i16>),
    Spill {
        writer: BufWriter<File>,
        path: PathBuf,
    },
}

impl Drop for VectorStore {
    fn drop(&mut self) {
        if let VectorStore::Spill { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Default for IndexBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl IndexBuilder {
    /// A builder that keeps the library's vectors in memory (one byte per dimension and
    /// frame).
    pub fn new() -> Self {
        IndexBuilder {
            rotation: None,
            videos: Vec::new(),
            times: Vec::new(),
            scales: Vec::new(),
            centre_sum: Vec::new(),
            vectors: VectorStore::Memory(Vec::new()),
        }
    }

    /// A builder that keeps the vectors in a temporary file in `directory` (removed when the
    /// builder is dropped), so that only 12 bytes per frame (time and scale) stay in memory
    /// while building, and 84 more (the codes) while writing.
    pub fn spilling_to(directory: &Path) -> Result<Self, SearchError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = directory.join(format!(
            ".keyscribe-index-{}-{}.vectors",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::create(&path).map_err(|source| SearchError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(IndexBuilder {
            vectors: VectorStore::Spill {
                writer: BufWriter::new(file),
                path,
            },
            ..Self::new()
        })
    }

    /// Frames added so far.
    pub fn frames(&self) -> usize {
        self.times.len()
    }

    /// Adds one analysed video: its sampled frames' times and embeddings (`[frames, dim]`,
    /// row-major; normalised here) and its captioned scenes.
    pub fn add_video(&mut self, input: VideoInput<'_>) -> Result<(), SearchError> {
        let bad = |problem: String| SearchError::BadVideo {
            video: input.video.to_string(),
            problem,
        };
        let frames = input.times.len();
        let dim = input.embeddings.len().checked_div(frames).unwrap_or(0);
        if dim * frames != input.embeddings.len() {
            return Err(bad(format!(
                "{} embedding values do not split into {frames} frames",
                input.embeddings.len()
            )));
        }
        if frames > 0 && dim == 0 {
            return Err(bad("embeddings are empty".into()));
        }
        if let Some(expected) = self
            .rotation
            .as_ref()
            .map(Rotation::dim)
            .filter(|&expected| frames > 0 && expected != dim)
        {
            return Err(bad(format!(
                "embeddings have {dim} values, the library holds {expected}-dimensional ones"
            )));
        }
        for pair in input.times.windows(2) {
            if pair[1].seconds() <= pair[0].seconds() {
                return Err(bad(format!(
                    "frame times must increase ({} is followed by {})",
                    pair[0], pair[1]
                )));
            }
        }
        for scene in input.scenes {
            if scene.end < scene.start {
                return Err(bad(format!(
                    "scene {}–{} ends before it starts",
                    scene.start, scene.end
                )));
            }
        }
        if frames > 0 {
            let rotation = match &self.rotation {
                Some(rotation) => rotation.clone(),
                None => Rotation::new(dim, ROTATION_SEED),
            };
            let width = rotation.padded();
            let mut quantised = vec![0i16; frames * width];
            let mut scales = Vec::with_capacity(frames);
            for (row, (embedding, out)) in input
                .embeddings
                .chunks_exact(dim)
                .zip(quantised.chunks_exact_mut(width))
                .enumerate()
            {
                let norm = embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
                if !norm.is_finite() || norm == 0.0 {
                    return Err(bad(format!(
                        "frame {row}'s embedding is zero or not finite"
                    )));
                }
                let unit: Vec<f32> = embedding.iter().map(|v| v / norm).collect();
                scales.push(quantise(&rotation.apply(&unit), out));
            }
            self.rotation = Some(rotation);
            self.add_rows(&quantised, &scales)?;
        }
        let mut scenes: Vec<SceneMetadata> = input
            .scenes
            .iter()
            .map(|scene: &SceneCaption| SceneMetadata {
                start_s: scene.start.seconds(),
                end_s: scene.end.seconds(),
                caption: scene.caption.clone(),
            })
            .collect();
        scenes.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
        self.videos.push(VideoMetadata {
            video: input.video.to_string(),
            duration_s: input.duration.seconds(),
            first_row: self.times.len(),
            rows: frames,
            scenes,
        });
        self.times
            .extend(input.times.iter().map(|time| time.seconds()));
        Ok(())
    }

    /// Stores rotated 16-bit rows and their scales, adding them to the centre.
    fn add_rows(&mut self, vectors: &[i16], scales: &[f32]) -> Result<(), SearchError> {
        let width = vectors.len() / scales.len().max(1);
        self.centre_sum.resize(width, 0.0);
        for (row, scale) in vectors.chunks_exact(width.max(1)).zip(scales) {
            for (sum, value) in self.centre_sum.iter_mut().zip(row) {
                *sum += f64::from(*scale) * f64::from(*value);
            }
        }
        self.scales.extend_from_slice(scales);
        let stored = match &mut self.vectors {
            VectorStore::Memory(stored) => {
                stored.extend_from_slice(vectors);
                Ok(())
            }
            VectorStore::Spill { writer, .. } => writer.write_all(bytemuck::cast_slice(vectors)),
        };
        stored.map_err(|source| SearchError::Io {
            path: match &self.vectors {
                VectorStore::Spill { path, .. } => path.clone(),
                VectorStore::Memory(_) => PathBuf::from("<memory>"),
            },
            source,
        })
    }

    /// Adds every video of an existing index (to extend a library without the original
    /// embeddings; its 16-bit vectors are copied as they are).
    pub fn add_index(&mut self, index: &super::SearchIndex) -> Result<(), SearchError> {
        if index.frames() > 0 {
            let theirs = index.rotation();
            let fits = match &self.rotation {
                Some(ours) => ours == theirs,
                None => theirs.seed() == ROTATION_SEED,
            };
            if !fits {
                return Err(SearchError::BadVideo {
                    video: index.source().display().to_string(),
                    problem: format!(
                        "the index holds {}-dimensional embeddings in another layout than this library",
                        theirs.dim()
                    ),
                });
            }
            self.rotation = Some(theirs.clone());
            self.add_rows(index.vectors(), index.scales())?;
        }
        let offset = self.times.len();
        for video in index.video_metadata() {
            self.videos.push(VideoMetadata {
                first_row: video.first_row + offset,
                ..video.clone()
            });
        }
        self.times.extend_from_slice(index.times());
        Ok(())
    }

    /// Builds the index in memory, for searching one analysis or a small library.
    pub fn build(self) -> Result<super::SearchIndex, SearchError> {
        let mut bytes = Vec::new();
        let label = PathBuf::from("<memory>");
        self.write_into(&mut bytes)
            .map_err(|source| SearchError::Io {
                path: label.clone(),
                source,
            })?;
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
        super::SearchIndex::from_storage(
            Storage::Owned {
                words,
                bytes: bytes.len(),
            },
            label,
        )
    }

    /// Writes the index to `path` atomically (a temporary file renamed over it).
    pub fn write(self, path: &Path) -> Result<(), SearchError> {
        atomic::write_with(path, |writer| self.write_into(writer)).map_err(|source| {
            SearchError::Io {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    fn write_into<W: Write>(mut self, out: &mut W) -> io::Result<()> {
        if cfg!(target_endian = "big") {
            return Err(io::Error::other("search indexes are little-endian only"));
        }
        let rows = self.times.len();
        let rotation = self
            .rotation
            .take()
            .unwrap_or_else(|| Rotation::new(0, ROTATION_SEED));
        let width = rotation.padded();
        let mut centre: Vec<f32> = self
            .centre_sum
            .iter()
            .map(|sum| (sum / rows.max(1) as f64) as f32)
            .collect();
        centre.resize(width, 0.0);
        let basis = CodeBasis::new(centre);
        let words = basis.words();
        let mut codes = vec![0u64; rows * words];
        let mut factors = vec![CodeFactors::zeroed(); rows];
        let scales = std::mem::take(&mut self.scales);
        let mut encode = |first: usize, vectors: &[i16]| {
            let count = vectors.len() / width;
            codes[first * words..(first + count) * words]
                .par_chunks_exact_mut(words)
                .zip(&mut factors[first..first + count])
                .zip(vectors.par_chunks_exact(width))
                .zip(&scales[first..first + count])
                .for_each_init(
                    || vec![0.0f32; width],
                    |rotated, (((code, factor), vector), scale)| {
                        for (value, quantised) in rotated.iter_mut().zip(vector) {
                            *value = scale * f32::from(*quantised);
                        }
                        *factor = basis.encode(rotated, code);
                    },
                );
        };
        match &mut self.vectors {
            VectorStore::Memory(vectors) => {
                for (batch, chunk) in vectors.chunks(ENCODE_BATCH * width).enumerate() {
                    encode(batch * ENCODE_BATCH, chunk);
                }
            }
            VectorStore::Spill { writer, path } => {
                writer.flush()?;
                let mut reader = BufReader::new(File::open(&*path)?);
                let mut buffer = vec![0i16; ENCODE_BATCH * width];
                let mut first = 0;
                while first < rows {
                    let count = ENCODE_BATCH.min(rows - first);
                    let chunk = &mut buffer[..count * width];
                    reader.read_exact(bytemuck::cast_slice_mut(chunk))?;
                    encode(first, chunk);
                    first += count;
                }
            }
        }

        let metadata = serde_json::to_vec(&Metadata {
            dim: rotation.dim(),
            rotation_seed: rotation.seed(),
            rows,
            videos: std::mem::take(&mut self.videos),
        })?;
        let layout = Layout::new([
            metadata.len(),
            4 * width,
            8 * rows,
            4 * rows,
            8 * rows,
            8 * rows * words,
            2 * rows * width,
        ]);
        out.write_all(&layout.header())?;
        let mut written = HEADER_BYTES;
        let mut section = |out: &mut W, range: &Range<usize>, bytes: &[u8]| -> io::Result<()> {
            out.write_all(&vec![0u8; range.start - written])?;
            out.write_all(bytes)?;
            written = range.start + bytes.len();
            Ok(())
        };
        section(out, &layout.metadata, &metadata)?;
        section(out, &layout.centre, bytemuck::cast_slice(basis.centre()))?;
        section(out, &layout.times, bytemuck::cast_slice(&self.times))?;
        section(out, &layout.scales, bytemuck::cast_slice(&scales))?;
        section(out, &layout.factors, bytemuck::cast_slice(&factors))?;
        section(out, &layout.codes, bytemuck::cast_slice(&codes))?;
        match &self.vectors {
            VectorStore::Memory(vectors) => {
                section(out, &layout.vectors, bytemuck::cast_slice(vectors))?;
            }
            VectorStore::Spill { path, .. } => {
                section(out, &layout.vectors, &[])?;
                let copied = io::copy(&mut File::open(path)?, out)?;
                if copied as usize != 2 * rows * width {
                    return Err(io::Error::other("the spill file changed while writing"));
                }
            }
        }
        out.flush()
    }
}

/// Stores a unit vector as `i16` values in `out`; returns the scale that turns them back.
fn quantise(vector: &[f32], out: &mut [i16]) -> f32 {
    let largest = vector.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = if largest > 0.0 {
        largest / 32767.0
    } else {
        1.0
    };
    for (stored, value) in out.iter_mut().zip(vector) {
        *stored = (value / scale).round().clamp(-32767.0, 32767.0) as i16;
    }
    scale
}

/// Opens an index file by memory-mapping it.
pub(crate) fn map(path: &Path) -> Result<Storage, SearchError> {
    let io_error = |source| SearchError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    // SAFETY: the map is read-only; index files are replaced by rename, never rewritten in
    // place, so the mapped bytes do not change while the index is open.
    let map = unsafe { Mmap::map(&file) }.map_err(io_error)?;
    // Queries read a few hundred bytes here and there outside the scanned sections: do not
    // read ahead around them. (Advice only; failure changes nothing but speed.)
    #[cfg(unix)]
    let _ = map.advise(memmap2::Advice::Random);
    Ok(Storage::Mapped(map))
}

impl Storage {
    /// Asks the system to start loading `range` now: for the sections every query reads in
    /// full, and for the candidates' vectors, so that a cold index reads them all at once
    /// rather than one after another.
    pub fn prefetch(&self, range: &Range<usize>) {
        #[cfg(unix)]
        if let Storage::Mapped(map) = self {
            if !range.is_empty() {
                let _ = map.advise_range(memmap2::Advice::WillNeed, range.start, range.len());
            }
        }
        #[cfg(not(unix))]
        let _ = range;
    }
}

/// Typed view of a section; `None` if its length or alignment does not fit `T`.
pub(crate) fn view<'a, T: Pod>(bytes: &'a [u8], range: &Range<usize>) -> Option<&'a [T]> {
    bytemuck::try_cast_slice(&bytes[range.clone()]).ok()
}
