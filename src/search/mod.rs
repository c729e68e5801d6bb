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
mod config;
mod error;
mod fan_out;
mod hits;
mod index;
mod input;
mod ranges;
mod store;
#[cfg(test)]
mod tests;
mod text;

pub use config::{SearchConfig, SearchConfigError};
pub use error::SearchError;
pub use fan_out::search_all;
pub use hits::{FrameMatch, SearchHit};
pub use index::{IndexSummary, SearchIndex};
pub use input::{SceneCaption, VideoInput};
pub use store::IndexBuilder;

/// Slack for comparing media times that should be equal (one microsecond).
const TIME_EPSILON: f64 = 1e-6;
