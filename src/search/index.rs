//! An index file opened for search: its sections checked and memory-mapped, the sign-code
//! scan and the exact similarity of candidates.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::codes::{self, CodeBasis, CodeFactors, Estimate, Rotation};
use super::store::{self, Layout, Metadata, Storage, VideoMetadata};
use super::text::CaptionIndex;
use super::{FrameMatch, SearchError};
use crate::time::MediaTime;

/// Rows scanned per parallel task.
const SCAN_CHUNK_ROWS: usize = 1 << 16;

/// Candidate vectors closer than this are fetched in one request.
const PREFETCH_GAP_BYTES: usize = 16 * 1024;

/// The largest embedding dimension an index file may declare.
const MAX_DIM: usize = 1 << 16;

/// A searchable library: sign codes, 16-bit embeddings, times, scenes and captions.
#[derive(Debug)]
pub struct SearchIndex {
    pub(super) storage: Storage,
    pub(super) layout: Layout,
    pub(super) source: PathBuf,
    pub(super) rotation: Rotation,
    pub(super) basis: CodeBasis,
    pub(super) metadata: Metadata,
    /// Every video's scenes, video after video; `scene_ranges[v]` are video `v`'s.
    pub(super) scenes: Vec<SceneRef>,
    pub(super) scene_ranges: Vec<std::ops::Range<usize>>,
    pub(super) captions: CaptionIndex,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct SceneRef {
    pub(super) video: usize,
    pub(super) index: usize,
}

impl SearchIndex {
    /// Opens an index file written by [`IndexBuilder::write`], memory-mapping it.
    pub fn open(path: &Path) -> Result<Self, SearchError> {
        Self::from_storage(store::map(path)?, path.to_path_buf())
    }

    pub(super) fn from_storage(storage: Storage, source: PathBuf) -> Result<Self, SearchError> {
        let bad = |problem: String| SearchError::BadIndex {
            path: source.clone(),
            problem,
        };
        if cfg!(target_endian = "big") {
            return Err(bad("search indexes are little-endian only".into()));
        }
        let bytes = storage.bytes();
        let layout = Layout::read(bytes).map_err(bad)?;
        let metadata: Metadata = serde_json::from_slice(&bytes[layout.metadata.clone()])
            .map_err(|error| bad(format!("metadata: {error}")))?;
        let (rows, dim) = (metadata.rows, metadata.dim);
        if dim > MAX_DIM {
            return Err(bad(format!("embedding dimension {dim} is implausible")));
        }
        let rotation = Rotation::new(dim, metadata.rotation_seed);
        let width = rotation.padded();
        let centre: Vec<f32> = store::view::<f32>(bytes, &layout.centre)
            .filter(|centre| centre.len() == width)
            .ok_or_else(|| bad("centre section does not match the dimension".into()))?
            .to_vec();
        let basis = CodeBasis::new(centre);
        let sizes_fit = store::view::<f64>(bytes, &layout.times).map(<[f64]>::len) == Some(rows)
            && store::view::<f32>(bytes, &layout.scales).map(<[f32]>::len) == Some(rows)
            && store::view::<CodeFactors>(bytes, &layout.factors).map(<[_]>::len) == Some(rows)
            && store::view::<u64>(bytes, &layout.codes).map(<[u64]>::len)
                == rows.checked_mul(basis.words())
            && store::view::<i16>(bytes, &layout.vectors).map(<[i16]>::len)
                == rows.checked_mul(width);
        if !sizes_fit {
            return Err(bad("section sizes do not match the metadata".into()));
        }
        let mut next_row: usize = 0;
        for video in &metadata.videos {
            if video.first_row != next_row {
                return Err(bad(format!("video `{}` has misplaced frames", video.video)));
            }
            next_row = next_row.saturating_add(video.rows);
        }
        if next_row != rows {
            return Err(bad("the videos' frames do not add up to the index's".into()));
        }
        let mut scenes = Vec::new();
        let mut scene_ranges = Vec::with_capacity(metadata.videos.len());
        for (video, record) in metadata.videos.iter().enumerate() {
            let first = scenes.len();
            scenes.extend((0..record.scenes.len()).map(|index| SceneRef { video, index }));
            scene_ranges.push(first..scenes.len());
        }
        storage.prefetch(&layout.codes);
        storage.prefetch(&layout.factors);
        let captions = CaptionIndex::new(scenes.iter().map(|scene| {
            metadata.videos[scene.video].scenes[scene.index]
                .caption
                .as_str()
        }));
        Ok(SearchIndex {
            storage,
            layout,
            source,
            rotation,
            basis,
            metadata,
            scenes,
            scene_ranges,
            captions,
        })
    }

    /// How many videos, frames and scenes the index holds.
    pub fn summary(&self) -> IndexSummary {
        IndexSummary {
            videos: self.metadata.videos.len(),
            frames: self.frames(),
            scenes: self.scenes.len(),
        }
    }

    /// Where the index came from (its file, or `<memory>`).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The embedding dimension (0 for an index without frames).
    pub fn dim(&self) -> usize {
        self.metadata.dim
    }

    /// Number of sampled frames in the library.
    pub fn frames(&self) -> usize {
        self.metadata.rows
    }

    /// The videos' names, in the order they were added.
    pub fn videos(&self) -> impl Iterator<Item = &str> {
        self.metadata
            .videos
            .iter()
            .map(|video| video.video.as_str())
    }

    /// Bytes every query reads in full (the sign codes and their factors): the part of the
    /// index that must stay in memory for queries to be fast.
    pub fn scanned_bytes(&self) -> usize {
        self.layout.codes.len() + self.layout.factors.len()
    }

    /// Size of the whole index (as a file).
    pub fn total_bytes(&self) -> usize {
        self.storage.bytes().len()
    }

    pub(super) fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    pub(super) fn times(&self) -> &[f64] {
        store::view(self.bytes(), &self.layout.times).unwrap_or(&[])
    }

    pub(super) fn scales(&self) -> &[f32] {
        store::view(self.bytes(), &self.layout.scales).unwrap_or(&[])
    }

    pub(super) fn vectors(&self) -> &[i16] {
        store::view(self.bytes(), &self.layout.vectors).unwrap_or(&[])
    }

    pub(super) fn rotation(&self) -> &Rotation {
        &self.rotation
    }

    pub(super) fn video_metadata(&self) -> &[VideoMetadata] {
        &self.metadata.videos
    }

    /// The `k` frames most similar to `embedding`: the sign-code scan keeps `candidates`
    /// frames, whose similarity is then recomputed from the 16-bit vectors.
    pub fn nearest_frames(
        &self,
        embedding: &[f32],
        k: usize,
        candidates: usize,
    ) -> Result<Vec<FrameMatch>, SearchError> {
        let query = self.rotated_query(embedding)?;
        Ok(self.nearest_rotated(&query, k, candidates))
    }

    pub(super) fn nearest_rotated(
        &self,
        query: &[f32],
        k: usize,
        candidates: usize,
    ) -> Vec<FrameMatch> {
        let rows = self.frames();
        if rows == 0 || k == 0 {
            return Vec::new();
        }
        let keep = candidates.max(k).min(rows);
        let prepared = self.basis.prepare(query);
        let words = self.basis.words();
        let codes: &[u64] = store::view(self.bytes(), &self.layout.codes).unwrap_or(&[]);
        let factors: &[CodeFactors] =
            store::view(self.bytes(), &self.layout.factors).unwrap_or(&[]);
        let mut estimates: Vec<Estimate> = codes
            .par_chunks(SCAN_CHUNK_ROWS * words)
            .zip(factors.par_chunks(SCAN_CHUNK_ROWS))
            .enumerate()
            .flat_map_iter(|(chunk, (codes, factors))| {
                codes::scan(&prepared, codes, factors, chunk * SCAN_CHUNK_ROWS, keep)
            })
            .collect();
        if estimates.len() > keep {
            estimates.select_nth_unstable(keep - 1);
            estimates.truncate(keep);
        }
        self.prefetch_vectors(&estimates, query.len());
        let mut matches: Vec<(f32, usize)> = estimates
            .iter()
            .map(|estimate| {
                let row = estimate.row as usize;
                (self.similarity(query, row), row)
            })
            .collect();
        matches.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        matches.truncate(k);
        let times = self.times();
        matches
            .into_iter()
            .map(|(similarity, frame)| FrameMatch {
                frame,
                video: self.video_of(frame),
                time: MediaTime::from_seconds(times[frame]),
                similarity,
            })
            .collect()
    }
}

impl SearchIndex {
    /// Asks for the candidates' vectors all at once, neighbouring rows (a scene's frames)
    /// in one request, so that a cold index reads them in parallel.
    pub(super) fn prefetch_vectors(&self, estimates: &[Estimate], width: usize) {
        let row_bytes = width * std::mem::size_of::<i16>();
        let mut rows: Vec<usize> = estimates.iter().map(|e| e.row as usize).collect();
        rows.sort_unstable();
        let mut pending: Option<std::ops::Range<usize>> = None;
        for row in rows {
            let start = self.layout.vectors.start + row * row_bytes;
            pending = match pending {
                Some(range) if start <= range.end + PREFETCH_GAP_BYTES => {
                    Some(range.start..start + row_bytes)
                }
                other => {
                    if let Some(range) = other {
                        self.storage.prefetch(&range);
                    }
                    Some(start..start + row_bytes)
                }
            };
        }
        if let Some(range) = pending {
            self.storage.prefetch(&range);
        }
    }

    /// Cosine similarity between a rotated unit query and a stored frame.
    pub(super) fn similarity(&self, query: &[f32], row: usize) -> f32 {
        let width = query.len();
        let vector = &self.vectors()[row * width..(row + 1) * width];
        let sum: f32 = vector
            .iter()
            .zip(query)
            .map(|(stored, q)| f32::from(*stored) * q)
            .sum();
        sum * self.scales()[row]
    }

    /// The query embedding, checked, normalised and rotated like the stored vectors.
    pub(super) fn rotated_query(&self, embedding: &[f32]) -> Result<Vec<f32>, SearchError> {
        if self.frames() > 0 && embedding.len() != self.dim() {
            return Err(SearchError::QueryDimension {
                expected: self.dim(),
                found: embedding.len(),
            });
        }
        let norm = embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
        if !norm.is_finite() || norm == 0.0 {
            return Err(SearchError::BadQuery);
        }
        if self.frames() == 0 {
            return Ok(Vec::new());
        }
        let unit: Vec<f32> = embedding.iter().map(|v| v / norm).collect();
        Ok(self.rotation.apply(&unit))
    }
}

/// Counts of the index's parts, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSummary {
    /// Videos in the library.
    pub videos: usize,
    /// Sampled frames.
    pub frames: usize,
    /// Captioned scenes.
    pub scenes: usize,
}
