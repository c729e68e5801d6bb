//! A search: peaks from the sign-code scan and the captions, time ranges grown around them,
//! ranked by the combined score (see the module's documentation).

use std::collections::{BTreeMap, HashMap};

use super::index::SceneRef;
use super::{SearchConfig, SearchError, SearchHit, SearchIndex, TIME_EPSILON};
use crate::time::MediaTime;

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

    pub(super) fn video_of(&self, frame: usize) -> usize {
        self.metadata
            .videos
            .partition_point(|video| video.first_row + video.rows <= frame)
    }
}
