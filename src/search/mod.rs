//! Scene search by text over one analysis or a whole library of them.
//!
//! A query is a MobileCLIP2 text embedding plus the query's words. Every sampled frame of
//! every video is ranked by cosine similarity to the text embedding; time ranges grow around
//! the best frames; the scenes' captions are ranked by BM25 against the words; and the two
//! are combined.
//!
//! # The index
//!
//! A library of 1,000 hours sampled at 2 frames per second holds about 7.2 million 512-d
//! embeddings: 14.7 GB as `f32`, too much to hold in memory or to scan per query. The index
//! keeps, per frame:
//!
//! - a **sign code**: one bit per dimension of the embedding after a fixed random rotation
//!   and centring on the library's mean, plus two numbers; 72 bytes for 512-d (see
//!   `codes.rs`). Every query scans all codes with AND + popcount on all cores and keeps the
//!   `rerank_candidates` best estimates. This is the only part a query reads in full, and
//!   the part that must stay in memory: 520 MB for 7.2 million frames.
//! - the rotated embedding at **16 bits** (`i16` with one scale per frame; 1 KB for 512-d),
//!   read only for the candidates, whose similarity is recomputed from it (error about
//!   1e-5, so the final order is the exact one). The system pages these in on demand (the
//!   reads for a query's candidates are issued together) and may drop them again; they
//!   need not fit in memory.
//! - its time, and per video its name, duration and captioned scenes.
//!
//! Everything lives in one file, written atomically by [`IndexBuilder::write`] and
//! memory-mapped by [`SearchIndex::open`]; [`IndexBuilder::build`] makes the same index in
//! memory, for searching a single analysis. An index can be extended with new videos
//! ([`IndexBuilder::add_index`]); the codes are recomputed against the new mean.
//!
//! # Combining the two scores
//!
//! A result's score is `visual + caption_weight * caption`, where `visual` is the cosine
//! similarity between the text embedding and the result's peak frame, and `caption` is the
//! BM25 score of the result's scene caption against the query words, scaled so that a
//! caption of average length holding every query word once scores 1 (capped at 1). CLIP
//! text-to-image similarities of matching and non-matching pictures differ by only about
//! 0.05–0.15, so the default weight of 0.1 lets a caption that says what was asked decide
//! between pictures that match about equally well, or lift a scene whose pictures match a
//! little less, without letting a caption that merely shares a word outrank a clearly
//! better picture.
//!
//! # Results
//!
//! A result is a time range grown around a peak frame, and depends only on the query and
//! the library, never on how many results are asked for:
//!
//! - The peaks are the `rerank_candidates` frames the sign-code scan keeps (their
//!   similarity recomputed exactly), plus the best frame of each of the `caption_scenes`
//!   scenes whose captions match the query's words best (so a scene a caption lifts is
//!   found even when none of its frames is among the visually best).
//! - Peaks are taken from the most similar down. A peak inside an earlier range adds
//!   nothing; any other grows a range over the neighbouring frames of its own scene whose
//!   similarity is at least the peak's minus `range_drop`, bridging stretches of lower
//!   frames no longer than `merge_gap_s`, and stopping at an earlier range. The range runs
//!   from its first frame to the frame after its last one (or the end of the video).
//! - A range's visual score is its peak's similarity and its caption that of the peak's
//!   scene; ranges are ranked by the combined score (then by video and start).
//!
//! The first `k` results are therefore the same whatever `k` is asked for: peaks are taken
//! only until `k` ranges score more than any range a later peak could make (its similarity
//! plus the best caption score).

mod codes;
mod store;
mod text;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::analysis::KeyframeRecord;
use crate::time::MediaTime;
use codes::{CodeBasis, CodeFactors, Estimate, Rotation};
pub use store::IndexBuilder;
use store::{Layout, Metadata, Storage, VideoMetadata};
use text::CaptionIndex;

/// Rows scanned per parallel task.
const SCAN_CHUNK_ROWS: usize = 1 << 16;

/// Candidate vectors closer than this are fetched in one request.
const PREFETCH_GAP_BYTES: usize = 16 * 1024;

/// The largest embedding dimension an index file may declare.
const MAX_DIM: usize = 1 << 16;

/// Slack for comparing media times that should be equal (one microsecond).
const TIME_EPSILON: f64 = 1e-6;

/// A scene of a video with its caption, as input to the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneCaption {
    /// Where the scene starts.
    pub start: MediaTime,
    /// Where it ends.
    pub end: MediaTime,
    /// What the captioner said about its keyframe (empty when not captioned).
    pub caption: String,
}

impl SceneCaption {
    /// The scenes of an analysis document's keyframes.
    pub fn from_keyframes(keyframes: &[KeyframeRecord]) -> Vec<SceneCaption> {
        keyframes
            .iter()
            .map(|keyframe| SceneCaption {
                start: MediaTime::from_seconds(keyframe.scene.start_s),
                end: MediaTime::from_seconds(keyframe.scene.end_s),
                caption: keyframe.caption.clone().unwrap_or_default(),
            })
            .collect()
    }
}

/// One analysed video, as input to the index.
#[derive(Debug, Clone, Copy)]
pub struct VideoInput<'a> {
    /// How results name the video (its path, as a rule).
    pub video: &'a str,
    /// The video's duration; the last frame's range ends here.
    pub duration: MediaTime,
    /// Each sampled frame's time, increasing.
    pub times: &'a [MediaTime],
    /// Each sampled frame's embedding, `[frames, dim]` row-major.
    pub embeddings: &'a [f32],
    /// The video's scenes and their captions.
    pub scenes: &'a [SceneCaption],
}

/// Search settings (the `[search]` table of a pipeline file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// How much a fully matching caption adds to a result's visual similarity.
    #[serde(serialize_with = "crate::serde_f32::shortest")]
    pub caption_weight: f32,
    /// How many frames the sign-code scan keeps for exact re-ranking: more finds the true
    /// best frames more often and reads more vectors. Doubling the default gains about one
    /// point of recall@10 on a 1,000-hour library, for one more random read per extra
    /// candidate when the vectors are not in memory.
    pub rerank_candidates: usize,
    /// How far below its peak's similarity a frame may be and still belong to the peak's
    /// range. CLIP text-to-image similarities of matching and other pictures differ by
    /// about 0.05–0.15, so 0.03 keeps the frames that match about as well as the peak.
    pub range_drop: f32,
    /// Within a range, frames below its threshold may interrupt it for at most this long,
    /// in seconds (from the last frame above it to the next).
    pub merge_gap_s: f64,
    /// How many of the scenes whose captions match the query's words best are considered
    /// even when none of their frames is among the `rerank_candidates`.
    pub caption_scenes: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            caption_weight: 0.1,
            rerank_candidates: 1024,
            range_drop: 0.03,
            merge_gap_s: 1.0,
            caption_scenes: 64,
        }
    }
}

/// A search setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("search.{field}: {reason}")]
pub struct SearchConfigError {
    /// The setting's name in the pipeline file.
    pub field: &'static str,
    /// Why the value is refused.
    pub reason: &'static str,
}

impl SearchConfig {
    /// Checks every setting; the error names the first bad one and says why.
    pub fn validate(&self) -> Result<(), SearchConfigError> {
        let bad = |field, reason| Err(SearchConfigError { field, reason });
        if !(self.caption_weight.is_finite() && self.caption_weight >= 0.0) {
            return bad("caption_weight", "must be zero or a positive number");
        }
        if self.rerank_candidates == 0 {
            return bad("rerank_candidates", "must be at least 1");
        }
        if !(self.range_drop.is_finite() && self.range_drop >= 0.0) {
            return bad("range_drop", "must be zero or a positive number");
        }
        if !(self.merge_gap_s.is_finite() && self.merge_gap_s >= 0.0) {
            return bad(
                "merge_gap_s",
                "must be zero or a positive number of seconds",
            );
        }
        Ok(())
    }
}

/// What can go wrong while building, opening or searching an index.
#[derive(Debug, Error)]
pub enum SearchError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file is not a usable index.
    #[error("{}: {problem}", path.display())]
    BadIndex {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A video's input is inconsistent.
    #[error("video `{video}`: {problem}")]
    BadVideo {
        /// The video.
        video: String,
        /// What is wrong with its input.
        problem: String,
    },
    /// The query embedding does not fit the index.
    #[error(
        "the query embedding has {found} values; the index holds {expected}-dimensional embeddings"
    )]
    QueryDimension {
        /// The index's dimension.
        expected: usize,
        /// The query's.
        found: usize,
    },
    /// The query embedding is zero or holds a NaN or infinity.
    #[error("the query embedding is zero or not finite")]
    BadQuery,
    /// The settings are unusable.
    #[error(transparent)]
    Config(#[from] SearchConfigError),
}

/// One frame found by [`SearchIndex::nearest_frames`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameMatch {
    /// The frame's position in the library (frames are numbered video after video).
    pub frame: usize,
    /// Index of its video in the library.
    pub video: usize,
    /// The frame's time in its video.
    pub time: MediaTime,
    /// Cosine similarity to the query, from the 16-bit vector.
    pub similarity: f32,
}

/// One search result: a time range of one video.
///
/// As JSON (`search --json`), times are given twice, as in `export --format json`:
/// `start_s`, `end_s` and `best_s` in seconds rounded to milliseconds, and `start`, `end`
/// and `best` as `HH:MM:SS.mmm` timecodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "HitRecord", from = "HitRecord")]
pub struct SearchHit {
    /// The video, as named when it was indexed.
    pub video: String,
    /// Where the range starts.
    pub start: MediaTime,
    /// Where it ends.
    pub end: MediaTime,
    /// The peak frame's time: the frame the range grew from, its best match.
    pub best: MediaTime,
    /// The combined score: `visual_score + caption_weight * caption_score`.
    pub score: f32,
    /// Cosine similarity between the query and the peak frame.
    pub visual_score: f32,
    /// How well the scene's caption matches the query's words, 0 to 1.
    pub caption_score: f32,
    /// The caption of the scene the peak frame belongs to.
    pub caption: Option<String>,
}

/// A [`SearchHit`] as JSON.
#[derive(Serialize, Deserialize)]
struct HitRecord {
    video: String,
    start_s: f64,
    end_s: f64,
    start: String,
    end: String,
    best_s: f64,
    best: String,
    score: f32,
    visual_score: f32,
    caption_score: f32,
    caption: Option<String>,
}

impl From<SearchHit> for HitRecord {
    fn from(hit: SearchHit) -> Self {
        let seconds = |time: MediaTime| time.millis() as f64 / 1000.0;
        HitRecord {
            video: hit.video,
            start_s: seconds(hit.start),
            end_s: seconds(hit.end),
            start: hit.start.timecode(),
            end: hit.end.timecode(),
            best_s: seconds(hit.best),
            best: hit.best.timecode(),
            score: hit.score,
            visual_score: hit.visual_score,
            caption_score: hit.caption_score,
            caption: hit.caption,
        }
    }
}

impl From<HitRecord> for SearchHit {
    fn from(record: HitRecord) -> Self {
        SearchHit {
            video: record.video,
            start: MediaTime::from_seconds(record.start_s),
            end: MediaTime::from_seconds(record.end_s),
            best: MediaTime::from_seconds(record.best_s),
            score: record.score,
            visual_score: record.visual_score,
            caption_score: record.caption_score,
            caption: record.caption,
        }
    }
}

/// A searchable library: sign codes, 16-bit embeddings, times, scenes and captions.
#[derive(Debug)]
pub struct SearchIndex {
    storage: Storage,
    layout: Layout,
    source: PathBuf,
    rotation: Rotation,
    basis: CodeBasis,
    metadata: Metadata,
    /// Every video's scenes, video after video; `scene_ranges[v]` are video `v`'s.
    scenes: Vec<SceneRef>,
    scene_ranges: Vec<std::ops::Range<usize>>,
    captions: CaptionIndex,
}

#[derive(Debug, Clone, Copy)]
struct SceneRef {
    video: usize,
    index: usize,
}

/// A result before ranking: frames `first..=last` of one video, grown around `peak`.
#[derive(Debug, Clone, Copy)]
struct Range {
    video: usize,
    first: usize,
    last: usize,
    peak: usize,
    visual: f32,
    scene: Option<usize>,
}

/// Exact similarities of frames to one query, each computed once.
struct Similarities<'a> {
    index: &'a SearchIndex,
    query: &'a [f32],
    known: HashMap<usize, f32>,
}

impl<'a> Similarities<'a> {
    fn new(index: &'a SearchIndex, query: &'a [f32]) -> Self {
        Similarities {
            index,
            query,
            known: HashMap::new(),
        }
    }

    /// Remembers a similarity computed elsewhere; returns it.
    fn record(&mut self, row: usize, similarity: f32) -> f32 {
        *self.known.entry(row).or_insert(similarity)
    }

    fn get(&mut self, row: usize) -> f32 {
        let (index, query) = (self.index, self.query);
        *self
            .known
            .entry(row)
            .or_insert_with(|| index.similarity(query, row))
    }
}

/// The rows taken by the ranges made so far (disjoint runs of rows).
#[derive(Default)]
struct CoveredRows {
    /// First row of each run -> its last row.
    runs: BTreeMap<usize, usize>,
}

impl CoveredRows {
    fn contains(&self, row: usize) -> bool {
        self.runs
            .range(..=row)
            .next_back()
            .is_some_and(|(_, &last)| last >= row)
    }

    fn insert(&mut self, first: usize, last: usize) {
        self.runs.insert(first, last);
    }
}

impl SearchIndex {
    /// Opens an index file written by [`IndexBuilder::write`], memory-mapping it.
    pub fn open(path: &Path) -> Result<Self, SearchError> {
        Self::from_storage(store::map(path)?, path.to_path_buf())
    }

    fn from_storage(storage: Storage, source: PathBuf) -> Result<Self, SearchError> {
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

    fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    fn times(&self) -> &[f64] {
        store::view(self.bytes(), &self.layout.times).unwrap_or(&[])
    }

    fn scales(&self) -> &[f32] {
        store::view(self.bytes(), &self.layout.scales).unwrap_or(&[])
    }

    fn vectors(&self) -> &[i16] {
        store::view(self.bytes(), &self.layout.vectors).unwrap_or(&[])
    }

    fn rotation(&self) -> &Rotation {
        &self.rotation
    }

    fn video_metadata(&self) -> &[VideoMetadata] {
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

    fn nearest_rotated(&self, query: &[f32], k: usize, candidates: usize) -> Vec<FrameMatch> {
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

    /// Searches the library for `top_k` time ranges matching a query: its MobileCLIP2 text
    /// embedding and its words. The results are the first `top_k` of one ranking that does
    /// not depend on `top_k` (see the module's documentation).
    pub fn search(
        &self,
        text_embedding: &[f32],
        query_text: &str,
        top_k: usize,
        config: &SearchConfig,
    ) -> Result<Vec<SearchHit>, SearchError> {
        config.validate()?;
        let query = self.rotated_query(text_embedding)?;
        if top_k == 0 || self.frames() == 0 {
            return Ok(Vec::new());
        }
        let caption_scores = self.captions.scores(query_text);
        let mut similarities = Similarities::new(self, &query);
        let mut peaks: Vec<(f32, usize)> = self
            .nearest_rotated(&query, config.rerank_candidates, config.rerank_candidates)
            .into_iter()
            .map(|found| {
                (
                    similarities.record(found.frame, found.similarity),
                    found.frame,
                )
            })
            .collect();
        let mut by_caption: Vec<(usize, f32)> = caption_scores
            .iter()
            .map(|(&scene, &score)| (scene as usize, score))
            .filter(|&(_, score)| score > 0.0)
            .collect();
        by_caption.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        by_caption.truncate(config.caption_scenes);
        for (scene, _) in by_caption {
            let best = self
                .scene_rows(scene)
                .map(|row| (similarities.get(row), row))
                .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
            peaks.extend(best);
        }
        peaks.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        peaks.dedup_by_key(|peak| peak.1);

        let best_caption = caption_scores.values().copied().fold(0.0f32, f32::max);
        let mut ranges: Vec<(f32, f32, Range)> = Vec::new();
        // The `top_k` best scores so far, best first.
        let mut leading: Vec<f32> = Vec::with_capacity(top_k + 1);
        let mut covered = CoveredRows::default();
        for (similarity, frame) in peaks {
            let ceiling = similarity + config.caption_weight * best_caption;
            if leading.len() == top_k && leading[top_k - 1] > ceiling {
                break;
            }
            if covered.contains(frame) {
                continue;
            }
            let range = self.grow_range(frame, similarity, &covered, &mut similarities, config);
            covered.insert(range.first, range.last);
            let caption = range
                .scene
                .and_then(|scene| caption_scores.get(&(scene as u32)).copied())
                .unwrap_or(0.0);
            let score = range.visual + config.caption_weight * caption;
            let at = leading.partition_point(|&better| better >= score);
            leading.insert(at, score);
            leading.truncate(top_k);
            ranges.push((score, caption, range));
        }

        let times = self.times();
        ranges.sort_unstable_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then(a.2.video.cmp(&b.2.video))
                .then(a.2.first.cmp(&b.2.first))
        });
        ranges.truncate(top_k);
        Ok(ranges
            .into_iter()
            .map(|(score, caption_score, range)| SearchHit {
                video: self.metadata.videos[range.video].video.clone(),
                start: MediaTime::from_seconds(times[range.first]),
                end: MediaTime::from_seconds(self.frame_end(range.last)),
                best: MediaTime::from_seconds(times[range.peak]),
                score,
                visual_score: range.visual,
                caption_score,
                caption: range.scene.map(|scene| self.caption(scene).to_string()),
            })
            .collect())
    }

    /// The range grown around `peak`: the neighbouring frames of its scene (of its video
    /// when no scene holds it) at least `similarity - range_drop` similar, bridging lower
    /// stretches up to `merge_gap_s`, not entering `covered`.
    fn grow_range(
        &self,
        peak: usize,
        similarity: f32,
        covered: &CoveredRows,
        similarities: &mut Similarities<'_>,
        config: &SearchConfig,
    ) -> Range {
        let video = self.video_of(peak);
        let times = self.times();
        let scene = self.scene_at(video, times[peak]);
        let record = &self.metadata.videos[video];
        let bounds = match scene {
            Some(scene) => self.scene_rows(scene),
            None => record.first_row..record.first_row + record.rows,
        };
        let threshold = similarity - config.range_drop;
        let within_gap = |from: usize, to: usize| {
            (times[to] - times[from]).abs() <= config.merge_gap_s + TIME_EPSILON
        };
        let mut last = peak;
        for row in peak + 1..bounds.end.max(peak + 1) {
            if covered.contains(row) || !within_gap(last, row) {
                break;
            }
            if similarities.get(row) >= threshold {
                last = row;
            }
        }
        let mut first = peak;
        for row in (bounds.start.min(peak)..peak).rev() {
            if covered.contains(row) || !within_gap(first, row) {
                break;
            }
            if similarities.get(row) >= threshold {
                first = row;
            }
        }
        Range {
            video,
            first,
            last,
            peak,
            visual: similarity,
            scene,
        }
    }

    /// The rows of the frames inside a scene (an index into `self.scenes`).
    fn scene_rows(&self, scene: usize) -> std::ops::Range<usize> {
        let SceneRef { video, index } = self.scenes[scene];
        let record = &self.metadata.videos[video];
        let (start, end) = (record.scenes[index].start_s, record.scenes[index].end_s);
        let last_scene = index + 1 == record.scenes.len();
        let rows = record.first_row..record.first_row + record.rows;
        let times = &self.times()[rows.clone()];
        let first = times.partition_point(|&t| t < start - TIME_EPSILON);
        let after = if last_scene {
            times.partition_point(|&t| t <= end + TIME_EPSILON)
        } else {
            times.partition_point(|&t| t < end - TIME_EPSILON)
        };
        rows.start + first..rows.start + after.max(first)
    }

    /// Where a frame's stretch of video ends: the next frame of its video, or the video's end.
    fn frame_end(&self, frame: usize) -> f64 {
        let video = &self.metadata.videos[self.video_of(frame)];
        let times = self.times();
        if frame + 1 < video.first_row + video.rows {
            times[frame + 1]
        } else {
            video.duration_s.max(times[frame])
        }
    }

    /// The scene of `video` that contains `time`, as an index into `self.scenes`.
    fn scene_at(&self, video: usize, time: f64) -> Option<usize> {
        let range = self.scene_ranges[video].clone();
        let scenes = &self.metadata.videos[video].scenes;
        let after = scenes.partition_point(|scene| scene.start_s <= time + TIME_EPSILON);
        let index = after.checked_sub(1)?;
        let scene = &scenes[index];
        let last = index + 1 == scenes.len();
        let inside =
            time < scene.end_s - TIME_EPSILON || (last && time <= scene.end_s + TIME_EPSILON);
        inside.then_some(range.start + index)
    }

    fn caption(&self, scene: usize) -> &str {
        let SceneRef { video, index } = self.scenes[scene];
        &self.metadata.videos[video].scenes[index].caption
    }

    fn video_of(&self, frame: usize) -> usize {
        self.metadata
            .videos
            .partition_point(|video| video.first_row + video.rows <= frame)
    }

    /// Asks for the candidates' vectors all at once, neighbouring rows (a scene's frames)
    /// in one request, so that a cold index reads them in parallel.
    fn prefetch_vectors(&self, estimates: &[Estimate], width: usize) {
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
    fn similarity(&self, query: &[f32], row: usize) -> f32 {
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
    fn rotated_query(&self, embedding: &[f32]) -> Result<Vec<f32>, SearchError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const DIM: usize = 64;

    /// A small deterministic generator (SplitMix64) for test vectors.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        }

        fn unit(&mut self) -> Vec<f32> {
            let vector: Vec<f32> = (0..DIM).map(|_| self.next()).collect();
            unit(vector)
        }

        /// `centre` plus noise of relative size `amount`.
        fn near(&mut self, centre: &[f32], amount: f32) -> Vec<f32> {
            let noise = self.unit();
            unit(
                centre
                    .iter()
                    .zip(&noise)
                    .map(|(c, n)| c + amount * n)
                    .collect(),
            )
        }
    }

    fn unit(mut vector: Vec<f32>) -> Vec<f32> {
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        vector.iter_mut().for_each(|v| *v /= norm);
        vector
    }

    fn time(frame: usize) -> MediaTime {
        MediaTime::from_seconds(frame as f64 * 0.5)
    }

    /// A video of `frames` frames, each a fresh random picture, with one scene per 10 frames.
    struct TestVideo {
        name: String,
        times: Vec<MediaTime>,
        embeddings: Vec<Vec<f32>>,
        scenes: Vec<SceneCaption>,
    }

    impl TestVideo {
        fn random(name: &str, frames: usize, rng: &mut Rng) -> Self {
            let scenes = (0..frames.div_ceil(10))
                .map(|scene| SceneCaption {
                    start: time(scene * 10),
                    end: time(((scene + 1) * 10).min(frames)),
                    caption: format!("scene {scene} of {name}"),
                })
                .collect();
            TestVideo {
                name: name.to_string(),
                times: (0..frames).map(time).collect(),
                embeddings: (0..frames).map(|_| rng.unit()).collect(),
                scenes,
            }
        }

        fn input(&self, flat: &mut Vec<f32>) -> (String, MediaTime) {
            flat.clear();
            self.embeddings
                .iter()
                .for_each(|e| flat.extend_from_slice(e));
            (self.name.clone(), time(self.times.len()))
        }
    }

    fn builder_of(videos: &[TestVideo]) -> IndexBuilder {
        let mut builder = IndexBuilder::new();
        let mut flat = Vec::new();
        for video in videos {
            let (name, duration) = video.input(&mut flat);
            builder
                .add_video(VideoInput {
                    video: &name,
                    duration,
                    times: &video.times,
                    embeddings: &flat,
                    scenes: &video.scenes,
                })
                .unwrap();
        }
        builder
    }

    fn index_of(videos: &[TestVideo]) -> SearchIndex {
        builder_of(videos).build().unwrap()
    }

    #[test]
    fn the_planted_time_range_is_found_as_one_result() {
        let mut rng = Rng(1);
        let query = rng.unit();
        let mut videos: Vec<TestVideo> = (0..3)
            .map(|v| TestVideo::random(&format!("v{v}.mp4"), 60, &mut rng))
            .collect();
        // Frames 20..26 of the second video show what the query asks for.
        for frame in 20..26 {
            videos[1].embeddings[frame] = rng.near(&query, 0.3);
        }
        let index = index_of(&videos);
        let hits = index
            .search(&query, "", 3, &SearchConfig::default())
            .unwrap();
        let top = &hits[0];
        assert_eq!(top.video, "v1.mp4");
        assert_eq!((top.start, top.end), (time(20), time(26)));
        assert!(top.best >= time(20) && top.best < time(26));
        assert!(top.visual_score > 0.9);
        assert_eq!(top.caption.as_deref(), Some("scene 2 of v1.mp4"));
        assert!(hits[1..].iter().all(|hit| hit.score < hits[0].score - 0.3));
    }

    #[test]
    fn a_range_keeps_the_frames_near_its_peak_within_its_scene() {
        // Frames 20..30 form one scene: similarities 0.90, 0.935, 0.95 (the peak at 22),
        // 0.93, 0.80, 0.945, then 0.10; the scene before holds 0.94 at frames 18 and 19.
        let mut rng = Rng(11);
        let query = rng.unit();
        let mut video = TestVideo::random("v.mp4", 40, &mut rng);
        for (frame, embedding) in video.embeddings.iter_mut().enumerate() {
            let similarity = match frame {
                18 | 19 => 0.94,
                20 => 0.90,
                21 => 0.935,
                22 => 0.95,
                23 => 0.93,
                24 => 0.80,
                25 => 0.945,
                _ => 0.10,
            };
            *embedding = at_similarity(&query, similarity, &mut rng);
        }
        let index = index_of(&[video]);
        let ranges = |config: &SearchConfig| -> Vec<(MediaTime, MediaTime)> {
            let hits = index.search(&query, "", 3, config).unwrap();
            hits.iter().map(|hit| (hit.start, hit.end)).collect()
        };
        // Within 0.03 of the peak: 21..=23, and 25 across the dip at 24 (1 s apart); the
        // frames of the scene before belong to a range of their own.
        assert_eq!(
            ranges(&SearchConfig::default()),
            [
                (time(21), time(26)),
                (time(18), time(20)),
                (time(20), time(21))
            ]
        );
        // Without bridging, the dip ends the range and 25 makes one of its own.
        let no_gap = SearchConfig {
            merge_gap_s: 0.5,
            ..SearchConfig::default()
        };
        assert_eq!(
            ranges(&no_gap),
            [
                (time(21), time(24)),
                (time(25), time(26)),
                (time(18), time(20))
            ]
        );
        // A wider drop takes in the whole run of similar frames of the scene.
        let wide = SearchConfig {
            range_drop: 0.2,
            ..SearchConfig::default()
        };
        assert_eq!(ranges(&wide)[0], (time(20), time(26)));
    }

    #[test]
    fn the_first_results_do_not_depend_on_how_many_are_asked_for() {
        let mut rng = Rng(12);
        let mut subjects = Vec::new();
        let videos: Vec<TestVideo> = (0..4)
            .map(|v| {
                let mut video = TestVideo::random(&format!("v{v}.mp4"), 80, &mut rng);
                // A stretch that fades in and out of a subject of its own.
                let subject = rng.unit();
                for (offset, frame) in (10 * v + 5..10 * v + 25).enumerate() {
                    let amount = 0.2 + 0.15 * (offset as f32 - 9.5).abs();
                    video.embeddings[frame] = rng.near(&subject, amount);
                }
                subjects.push(subject);
                video
            })
            .collect();
        let index = index_of(&videos);
        let config = SearchConfig::default();
        for subject in subjects.iter().chain(subjects.iter()) {
            let query = rng.near(subject, 0.8);
            let all = index.search(&query, "scene 2", 20, &config).unwrap();
            assert_eq!(all.len(), 20);
            for top in [1, 2, 5, 10] {
                let first = index.search(&query, "scene 2", top, &config).unwrap();
                assert_eq!(first[..], all[..top], "top {top}");
            }
        }
    }

    #[test]
    fn the_last_frame_range_ends_with_the_video() {
        let mut rng = Rng(3);
        let query = rng.unit();
        let mut videos = vec![TestVideo::random("v.mp4", 20, &mut rng)];
        videos[0].embeddings[19] = query.clone();
        let hits = index_of(&videos)
            .search(&query, "", 1, &SearchConfig::default())
            .unwrap();
        assert_eq!((hits[0].start, hits[0].end), (time(19), time(20)));
    }

    #[test]
    fn a_caption_match_decides_between_equal_pictures() {
        let mut rng = Rng(4);
        let query = rng.unit();
        let mut first = TestVideo::random("first.mp4", 30, &mut rng);
        for frame in 10..20 {
            first.embeddings[frame] = rng.near(&query, 0.3);
        }
        let mut second = TestVideo {
            name: "second.mp4".into(),
            times: first.times.clone(),
            embeddings: first.embeddings.clone(),
            scenes: first.scenes.clone(),
        };
        first.scenes[1].caption = "A red car crosses a bridge at night.".into();
        second.scenes[1].caption = "A dog runs along the beach.".into();
        let index = index_of(&[first, second]);
        let config = SearchConfig::default();
        for (words, expected) in [("dogs on a beach", "second.mp4"), ("red car", "first.mp4")] {
            let hits = index.search(&query, words, 2, &config).unwrap();
            assert_eq!(hits[0].video, expected, "query {words:?}");
            assert_eq!(hits[0].visual_score, hits[1].visual_score);
            // The other caption shares only the word "a".
            assert!(hits[0].caption_score > hits[1].caption_score + 0.3);
            assert!(
                (hits[0].score - hits[0].visual_score - 0.1 * hits[0].caption_score).abs() < 1e-6
            );
        }
        // Without the caption weight the tie stays a tie, broken by library order.
        let visual_only = SearchConfig {
            caption_weight: 0.0,
            ..config
        };
        let hits = index
            .search(&query, "dogs on a beach", 2, &visual_only)
            .unwrap();
        assert_eq!(hits[0].video, "first.mp4");
    }

    #[test]
    fn a_caption_can_lift_a_scene_the_pictures_rank_lower() {
        // Similarities by construction: frames 50..60 score `best`, the lighthouse scene
        // (frames 30..40) `lighthouse`, every other frame 0.10.
        let library = |lighthouse: f32, best: f32| {
            let mut rng = Rng(5);
            let query = rng.unit();
            let mut video = TestVideo::random("v.mp4", 100, &mut rng);
            for (frame, embedding) in video.embeddings.iter_mut().enumerate() {
                let similarity = match frame {
                    30..40 => lighthouse,
                    50..60 => best,
                    _ => 0.10,
                };
                *embedding = at_similarity(&query, similarity, &mut rng);
            }
            video.scenes[3].caption = "a lighthouse on a cliff".into();
            (index_of(&[video]), query)
        };
        let (index, query) = library(0.25, 0.30);
        let config = SearchConfig::default();
        let hits = index.search(&query, "lighthouse", 2, &config).unwrap();
        assert_eq!(hits[0].caption.as_deref(), Some("a lighthouse on a cliff"));
        assert_eq!((hits[0].start, hits[0].end), (time(30), time(40)));
        assert!((hits[0].visual_score - 0.25).abs() < 5e-3);
        assert!((hits[0].caption_score - 1.0).abs() < 1e-6);
        assert_eq!((hits[1].start, hits[1].end), (time(50), time(60)));
        // Without the caption weight, the pictures decide.
        let visual_only = SearchConfig {
            caption_weight: 0.0,
            ..config.clone()
        };
        let hits = index.search(&query, "lighthouse", 1, &visual_only).unwrap();
        assert_eq!((hits[0].start, hits[0].end), (time(50), time(60)));

        // Pictures that match worse than any other, far from the ten re-ranked candidates
        // (frames 50..60): a caption weighted heavily still brings the scene in...
        let (index, query) = library(-0.3, 0.5);
        let few = SearchConfig {
            caption_weight: 1.0,
            rerank_candidates: 10,
            ..config
        };
        let hits = index.search(&query, "lighthouse", 1, &few).unwrap();
        assert_eq!((hits[0].start, hits[0].end), (time(30), time(40)));
        assert!((hits[0].score - (-0.3 + 1.0)).abs() < 5e-3);
        // ... unless captions may not bring in scenes.
        let no_caption_scenes = SearchConfig {
            caption_scenes: 0,
            ..few
        };
        let hits = index
            .search(&query, "lighthouse", 1, &no_caption_scenes)
            .unwrap();
        assert_eq!((hits[0].start, hits[0].end), (time(50), time(60)));
    }

    #[test]
    fn json_results_give_seconds_and_timecodes() {
        let hit = SearchHit {
            video: "clip.mp4".into(),
            start: MediaTime::from_seconds(11.0),
            end: MediaTime::from_seconds(22.0004),
            best: MediaTime::from_seconds(18.5),
            score: 0.3,
            visual_score: 0.25,
            caption_score: 0.5,
            caption: Some("a beach".into()),
        };
        let json = serde_json::to_value(&hit).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "video": "clip.mp4",
                "start_s": 11.0, "end_s": 22.0, "start": "00:00:11.000", "end": "00:00:22.000",
                "best_s": 18.5, "best": "00:00:18.500",
                "score": 0.3f32, "visual_score": 0.25f32, "caption_score": 0.5f32,
                "caption": "a beach"
            })
        );
        let back: SearchHit = serde_json::from_value(json).unwrap();
        assert_eq!(back.end, MediaTime::from_seconds(22.0));
        assert_eq!(back.best, hit.best);
    }

    /// A unit vector with exactly `similarity` to the unit vector `query`.
    fn at_similarity(query: &[f32], similarity: f32, rng: &mut Rng) -> Vec<f32> {
        let random = rng.unit();
        let along: f32 = random.iter().zip(query).map(|(r, q)| r * q).sum();
        let orthogonal = unit(
            random
                .iter()
                .zip(query)
                .map(|(r, q)| r - along * q)
                .collect(),
        );
        let rest = (1.0 - similarity * similarity).sqrt();
        query
            .iter()
            .zip(&orthogonal)
            .map(|(q, o)| similarity * q + rest * o)
            .collect()
    }

    #[test]
    fn an_index_file_round_trips() {
        let mut rng = Rng(6);
        let videos: Vec<TestVideo> = (0..4)
            .map(|v| TestVideo::random(&format!("v{v}.mp4"), 45, &mut rng))
            .collect();
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("library.index");
        builder_of(&videos).write(&path).unwrap();
        let names: Vec<String> = std::fs::read_dir(directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["library.index"]);

        let opened = SearchIndex::open(&path).unwrap();
        let in_memory = index_of(&videos);
        assert_eq!(opened.summary(), in_memory.summary());
        assert_eq!(
            opened.summary(),
            IndexSummary {
                videos: 4,
                frames: 180,
                scenes: 20
            }
        );
        assert!(opened.videos().eq(in_memory.videos()));
        assert_eq!(
            opened.total_bytes(),
            std::fs::metadata(&path).unwrap().len() as usize
        );
        let config = SearchConfig::default();
        for _ in 0..5 {
            let query = rng.unit();
            assert_eq!(
                opened.search(&query, "scene 2", 5, &config).unwrap(),
                in_memory.search(&query, "scene 2", 5, &config).unwrap()
            );
        }
    }

    #[test]
    fn an_index_can_be_extended_with_new_videos() {
        let mut rng = Rng(7);
        let query = rng.unit();
        let mut old = TestVideo::random("old.mp4", 30, &mut rng);
        old.embeddings[5] = query.clone();
        let mut new = TestVideo::random("new.mp4", 30, &mut rng);
        new.embeddings[25] = rng.near(&query, 0.1);
        let first = index_of(&[old]);
        let mut builder = IndexBuilder::new();
        builder.add_index(&first).unwrap();
        let mut flat = Vec::new();
        let (name, duration) = new.input(&mut flat);
        builder
            .add_video(VideoInput {
                video: &name,
                duration,
                times: &new.times,
                embeddings: &flat,
                scenes: &new.scenes,
            })
            .unwrap();
        let extended = builder.build().unwrap();
        assert_eq!(extended.summary().videos, 2);
        let hits = extended
            .search(&query, "", 2, &SearchConfig::default())
            .unwrap();
        assert_eq!((hits[0].video.as_str(), hits[0].best), ("old.mp4", time(5)));
        assert_eq!(
            (hits[1].video.as_str(), hits[1].best),
            ("new.mp4", time(25))
        );
    }

    #[test]
    fn with_every_frame_a_candidate_the_nearest_frames_are_exact() {
        let mut rng = Rng(8);
        let videos: Vec<TestVideo> = (0..3)
            .map(|v| TestVideo::random(&format!("v{v}.mp4"), 100, &mut rng))
            .collect();
        let index = index_of(&videos);
        let all: Vec<&Vec<f32>> = videos.iter().flat_map(|v| &v.embeddings).collect();
        for _ in 0..10 {
            let query = rng.unit();
            let found = index.nearest_frames(&query, 10, 300).unwrap();
            let mut exact: Vec<(f32, usize)> = all
                .iter()
                .enumerate()
                .map(|(row, e)| (e.iter().zip(&query).map(|(a, b)| a * b).sum(), row))
                .collect();
            exact.sort_by(|a, b| b.0.total_cmp(&a.0));
            for (hit, (similarity, _)) in found.iter().zip(&exact) {
                // 16-bit vectors: similarities within a few thousandths of the exact ones.
                assert!((hit.similarity - similarity).abs() < 4e-3);
            }
            let rows: Vec<usize> = found.iter().map(|hit| hit.frame).collect();
            assert_eq!(rows[0], exact[0].1);
            assert_eq!(found[0].video, exact[0].1 / 100);
            assert_eq!(found[0].time, time(exact[0].1 % 100));
        }
    }

    #[test]
    fn broken_files_are_refused_with_the_reason() {
        let mut rng = Rng(9);
        let videos = vec![TestVideo::random("v.mp4", 30, &mut rng)];
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("library.index");
        builder_of(&videos).write(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();

        let truncated = directory.path().join("truncated.index");
        std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
        let error = SearchIndex::open(&truncated).unwrap_err();
        assert!(matches!(error, SearchError::BadIndex { .. }), "{error}");
        assert!(error.to_string().contains("truncated.index"));

        let other = directory.path().join("other.index");
        std::fs::write(&other, b"{\"schema\": \"keyscribe.analysis/1\"}").unwrap();
        assert!(SearchIndex::open(&other)
            .unwrap_err()
            .to_string()
            .contains("bad magic"));
        assert!(matches!(
            SearchIndex::open(&directory.path().join("missing.index")),
            Err(SearchError::Io { .. })
        ));
    }

    #[test]
    fn inconsistent_inputs_and_queries_are_errors() {
        let mut builder = IndexBuilder::new();
        let times = [time(0), time(1)];
        let scenes = [];
        let video = |embeddings: &'static [f32], times: &'static [MediaTime]| VideoInput {
            video: "v.mp4",
            duration: time(2),
            times,
            embeddings,
            scenes: &scenes,
        };
        static TWO: [MediaTime; 2] = [MediaTime::ZERO, MediaTime::ZERO];
        assert!(builder.add_video(video(&[1.0, 0.0, 0.0], &TWO)).is_err());
        assert!(builder
            .add_video(video(&[1.0, 0.0, 0.0, 1.0], &TWO))
            .is_err());
        let mut good = IndexBuilder::new();
        good.add_video(VideoInput {
            video: "v.mp4",
            duration: time(2),
            times: &times,
            embeddings: &[1.0, 0.0, 0.0, 1.0],
            scenes: &scenes,
        })
        .unwrap();
        let error = good
            .add_video(VideoInput {
                video: "w.mp4",
                duration: time(2),
                times: &times,
                embeddings: &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                scenes: &scenes,
            })
            .unwrap_err();
        assert!(error.to_string().starts_with("video `w.mp4`: "), "{error}");
        assert!(good
            .add_video(VideoInput {
                video: "zero.mp4",
                duration: time(2),
                times: &times,
                embeddings: &[0.0, 0.0, 0.0, 1.0],
                scenes: &scenes,
            })
            .is_err());
        let index = good.build().unwrap();
        let config = SearchConfig::default();
        assert!(matches!(
            index.search(&[1.0, 0.0, 0.0], "", 1, &config),
            Err(SearchError::QueryDimension {
                expected: 2,
                found: 3
            })
        ));
        assert!(matches!(
            index.search(&[0.0, 0.0], "", 1, &config),
            Err(SearchError::BadQuery)
        ));
        let bad = SearchConfig {
            rerank_candidates: 0,
            ..config
        };
        assert!(matches!(
            index.search(&[1.0, 0.0], "", 1, &bad),
            Err(SearchError::Config(SearchConfigError {
                field: "rerank_candidates",
                ..
            }))
        ));
    }

    #[test]
    fn an_empty_library_answers_with_nothing() {
        let index = IndexBuilder::new().build().unwrap();
        assert_eq!(index.frames(), 0);
        assert!(index
            .search(&[1.0, 0.0], "anything", 5, &SearchConfig::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn config_reads_from_a_pipeline_table() {
        let config: SearchConfig = toml::from_str("caption_weight = 0.2").unwrap();
        assert_eq!(config.caption_weight, 0.2);
        assert_eq!(
            config.rerank_candidates,
            SearchConfig::default().rerank_candidates
        );
        assert!(toml::from_str::<SearchConfig>("caption_wieght = 0.2").is_err());
        let written = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<SearchConfig>(&written).unwrap(), config);
        let negative = SearchConfig {
            caption_weight: -1.0,
            ..SearchConfig::default()
        };
        assert_eq!(negative.validate().unwrap_err().field, "caption_weight");
    }
}
