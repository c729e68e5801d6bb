//! What a search finds: frames and time ranges, and the JSON form of a result.

use serde::{Deserialize, Serialize};

use crate::time::MediaTime;

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
