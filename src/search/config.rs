//! The `[search]` settings of a pipeline file.

use serde::{Deserialize, Serialize};
use thiserror::Error;

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
