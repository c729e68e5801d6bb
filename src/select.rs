//! Keyframe selection: where the picture's meaning changes, from the stream of frame
//! embeddings (MobileCLIP2, SigLIP2 or any other image embedder).
//!
//! # How a scene change is found
//!
//! Every sampled frame is compared with the current scene's *reference*: the mean embedding
//! of the scene's most recent confirmed frames (`reference_window_s`). The cosine distance
//! between the frame and that reference is the frame's **change score**.
//!
//! # Judged against the footage's own noise
//!
//! How far frames of one shot scatter is not a property of cosine distance: a strong
//! embedder puts two frames of a shot 0.02 apart and two shots 0.5 apart, a weak or random
//! one 0.05 and 0.12, and another family (SigLIP2) lives on a scale of its own. The
//! threshold is therefore `sensitivity` times the open scene's **noise level**: the median
//! change score of its settled frames (those that arrived with no change under way and
//! stayed within the threshold) over the last `noise_window_s`. A new scene starts with an
//! estimate from its first frames (half the median distance between two of them, which is
//! about what one frame's distance from a mean of many is), and the first scene of a video
//! detects nothing until it has [`NOISE_MIN_SAMPLES`] scores. Scaling every distance by
//! the same factor scales the threshold with it, so the same settings select the same
//! scenes from any embedder. An optional `change_threshold` adds a floor in cosine
//! distance, for one embedder and footage known to be still.
//!
//! - **Gradual transitions.** A frame is confirmed into its scene only once it is older than
//!   `max_transition_s`. The reference therefore never contains the first, barely visible
//!   part of a fade or dissolve, and a transition of up to that length is measured against
//!   the picture from before it started, not against its own previous frame.
//! - **Flashes.** A change score above the threshold opens a *change candidate*. It becomes a
//!   scene change only if the picture stays away from the old scene for `persistence_s`
//!   and has settled. If the picture comes back within the threshold first, the candidate
//!   was a flash (a camera flash, a glitch, a one-frame insert): the frames that were away
//!   are left out of the scene's statistics and no scene starts.
//! - **Camera motion.** A steady pan moves the reference along with it, because confirmed
//!   frames keep entering it; only motion that covers more than the threshold within roughly
//!   `max_transition_s + reference_window_s / 2` reads as a change. Footage that is shaky or
//!   moving all the time has a proportionally higher noise level, so it needs a
//!   proportionally larger jump. A pan that reveals new content within seconds of a cut
//!   makes a scene shorter than `min_scene_s`, which merges into its nearer neighbour.
//!
//! When a change is confirmed, the frames between the old reference and the settled new
//! picture are projected on the axis from the old scene's mean to the new one's (0 = old,
//! 1 = new). The scene boundary is put at the first frame that is nearer the new scene
//! (for a cut, the first frame of the new shot; for a dissolve or a fade through black, its
//! middle). Frames that are clearly on neither side — part of the transition — join no
//! scene's statistics, so they are never chosen as keyframes.
//!
//! # Keyframes
//!
//! Each scene keeps the running sum of its confirmed frames' embeddings and a bounded, evenly
//! spaced set of candidate frames (at most [`KEYFRAME_CANDIDATES`]). Its keyframe is the
//! candidate nearest the scene's mean embedding: a stable, representative frame, never a
//! transition frame or a flash.
//!
//! # Short scenes and the keyframe cap
//!
//! A scene shorter than `min_scene_s` is merged into the neighbour whose mean embedding is
//! nearer (the following scene when it is the first scene, the preceding one when it is the
//! last). With `max_keyframes`, neighbouring scenes are merged pairwise, always the pair whose
//! mean embeddings are most alike, until at most that many remain: the boundaries that survive
//! are the strongest, the scenes still cover the whole video, and each merged scene keeps
//! whichever of its parts' keyframes is nearest the merged mean. Its `change` is that of its
//! first part.
//!
//! # Memory
//!
//! The selector holds a few seconds of embeddings (the transition and reference windows),
//! the candidates of the open scene, and the scenes that are not final yet. Without
//! `max_keyframes` that is bounded whatever the video's length; with it, two vectors per
//! scene are kept until [`SceneSelector::finish`]. The change score of every frame (a few
//! scalars per frame) is kept for the report's timeline.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::time::MediaTime;

/// The most candidate frames a scene keeps for its keyframe choice.
pub const KEYFRAME_CANDIDATES: usize = 16;

/// How far along the old-to-new axis (0 = old scene, 1 = new scene) a frame may sit and still
/// count as a stable frame of its side rather than part of the transition.
const TRANSITION_MARGIN: f32 = 0.15;

/// The fewest change scores a noise level is taken from.
const NOISE_MIN_SAMPLES: usize = 4;

/// How many times its own noise level a frame must move from its scene to count as changed,
/// when neither the pipeline nor the embedder's manifest says (see
/// [`SelectConfig::sensitivity`]).
pub const DEFAULT_SENSITIVITY: f32 = 2.0;

/// Slack for comparing media times that should be equal (one microsecond).
const TIME_EPSILON: f64 = 1e-6;

/// The largest cosine distance (opposite vectors).
const MAX_COSINE_DISTANCE: f32 = 2.0;

/// Keyframe selection settings (the `[select]` table of a pipeline file).
///
/// No setting is a fixed cosine distance: how far embeddings of one shot scatter depends on
/// the embedder (MobileCLIP2, SigLIP2, a weak or random one) and on the footage, so a change
/// is judged against the footage's own noise level, in units of it ([`sensitivity`]).
///
/// [`sensitivity`]: SelectConfig::sensitivity
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectConfig {
    /// How many times the footage's noise level a frame must move away from its scene to
    /// count as changed. The noise level is the median change score of the current scene's
    /// settled frames (frames that joined it, not transitions or flashes) over the last
    /// `noise_window_s`, so the same value works whatever the embedder's scale. Unset: the
    /// embedder's manifest decides ([`SelectDefaults`]), else [`DEFAULT_SENSITIVITY`].
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "shortest_option"
    )]
    pub sensitivity: Option<f32>,
    /// The least cosine distance that counts as a change, however calm the footage. Unset
    /// (the default): no floor, only the noise level decides. For one embedder on footage
    /// known to be still (slides, a fixed camera), a floor keeps tiny changes out.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "shortest_option"
    )]
    pub change_threshold: Option<f32>,
    /// How far back the noise level looks, in seconds.
    pub noise_window_s: f64,
    /// How much of the current scene's most recent confirmed footage forms its reference,
    /// in seconds.
    pub reference_window_s: f64,
    /// The longest fade or dissolve recognised as one transition, in seconds. Frames stay
    /// unconfirmed this long before they join their scene's reference.
    pub max_transition_s: f64,
    /// How long a change must last to be a new scene rather than a flash, in seconds.
    pub persistence_s: f64,
    /// The shortest scene; shorter ones merge into their most similar neighbour, in seconds.
    pub min_scene_s: f64,
    /// Keep at most this many keyframes, merging the least distinct neighbouring scenes.
    /// When set, scenes become final only when the video ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_keyframes: Option<usize>,
}

impl Default for SelectConfig {
    fn default() -> Self {
        SelectConfig {
            sensitivity: None,
            change_threshold: None,
            noise_window_s: 30.0,
            reference_window_s: 2.0,
            max_transition_s: 2.0,
            persistence_s: 1.0,
            min_scene_s: 2.0,
            max_keyframes: None,
        }
    }
}

/// An embedder's own selection defaults: the optional `[select]` table of a model manifest.
///
/// They apply under the pipeline's settings: a value the pipeline file or `--set` gives wins
/// ([`SelectConfig::with_model_defaults`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectDefaults {
    /// The embedder's [`SelectConfig::sensitivity`]: how many times the footage's noise
    /// level a change must be, for this embedder's spread of in-shot distances.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<f32>,
    /// The embedder's [`SelectConfig::change_threshold`]: a cosine-distance floor on its
    /// scale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_threshold: Option<f32>,
}

/// A selection setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("select.{field}: {reason}")]
pub struct SelectConfigError {
    /// The setting's name in the pipeline file.
    pub field: &'static str,
    /// Why the value is refused.
    pub reason: String,
}

impl SelectConfig {
    /// These settings with the embedder's defaults filling the ones left unset.
    pub fn with_model_defaults(mut self, defaults: &SelectDefaults) -> SelectConfig {
        self.sensitivity = self.sensitivity.or(defaults.sensitivity);
        self.change_threshold = self.change_threshold.or(defaults.change_threshold);
        self
    }

    /// The sensitivity in force: the one set, else [`DEFAULT_SENSITIVITY`].
    pub fn effective_sensitivity(&self) -> f32 {
        self.sensitivity.unwrap_or(DEFAULT_SENSITIVITY)
    }

    /// Checks every setting; the error names the first bad one and says why.
    pub fn validate(&self) -> Result<(), SelectConfigError> {
        let bad = |field: &'static str, reason: &str| {
            Err(SelectConfigError {
                field,
                reason: reason.to_string(),
            })
        };
        if let Some(sensitivity) = self.sensitivity {
            if !(sensitivity.is_finite() && sensitivity > 1.0) {
                return bad(
                    "sensitivity",
                    &format!("{sensitivity} must be a number above 1 (times the noise level)"),
                );
            }
        }
        if let Some(threshold) = self.change_threshold {
            if !(threshold > 0.0 && threshold < 2.0) {
                return bad(
                    "change_threshold",
                    &format!("{threshold} is not a cosine distance strictly between 0 and 2"),
                );
            }
        }
        if !(self.noise_window_s.is_finite() && self.noise_window_s > 0.0) {
            return bad("noise_window_s", "must be a positive number of seconds");
        }
        let seconds = [
            ("reference_window_s", self.reference_window_s),
            ("max_transition_s", self.max_transition_s),
            ("min_scene_s", self.min_scene_s),
        ];
        for (field, value) in seconds {
            if !(value.is_finite() && value >= 0.0) {
                return bad(field, "must be zero or a positive number of seconds");
            }
        }
        if !(self.persistence_s.is_finite() && self.persistence_s > 0.0) {
            return bad("persistence_s", "must be a positive number of seconds");
        }
        if self.max_keyframes == Some(0) {
            return bad(
                "max_keyframes",
                "must be at least 1; leave it out to keep every scene",
            );
        }
        Ok(())
    }
}

/// Writes a set `f32` setting as the decimals written (see [`crate::serde_f32::shortest`]);
/// unset ones are skipped before this is called.
fn shortest_option<S: serde::Serializer>(
    value: &Option<f32>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => crate::serde_f32::shortest(value, serializer),
        None => serializer.serialize_none(),
    }
}

/// What can go wrong while selecting keyframes.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SelectError {
    /// The settings are unusable.
    #[error(transparent)]
    Config(#[from] SelectConfigError),
    /// A frame's embedding has another length than the first frame's.
    #[error(
        "sampled frame {sample}: embedding has {found} values, the first frame had {expected}"
    )]
    DimensionMismatch {
        /// Index of the sampled frame.
        sample: usize,
        /// Length of the first frame's embedding.
        expected: usize,
        /// Length of this one.
        found: usize,
    },
    /// A frame's embedding is empty, all zeros, or holds a NaN or infinity.
    #[error("sampled frame {sample}: embedding is empty, zero or not finite")]
    InvalidEmbedding {
        /// Index of the sampled frame.
        sample: usize,
    },
    /// Frames must arrive in strictly increasing time order.
    #[error("sampled frame {sample} at {time} does not come after the previous one at {previous}")]
    TimeNotIncreasing {
        /// Index of the sampled frame.
        sample: usize,
        /// Its time.
        time: MediaTime,
        /// The previous frame's time.
        previous: MediaTime,
    },
}

/// One scene of the video and the frame that represents it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    /// Where the scene starts (the first scene starts at zero).
    pub start: MediaTime,
    /// Where it ends: the next scene's start, or the end of the video.
    pub end: MediaTime,
    /// The keyframe's time.
    pub keyframe: MediaTime,
    /// The keyframe's index among the sampled frames, from 0.
    pub keyframe_sample: usize,
    /// Cosine distance between the previous scene and this one where they meet (0 for the
    /// first scene).
    pub change: f32,
}

/// The change score of one sampled frame, for the report's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChangeSample {
    /// The frame's time.
    pub time: MediaTime,
    /// Cosine distance between the frame and its scene's reference.
    pub change: f32,
    /// The threshold in force at that frame.
    pub threshold: f32,
}

/// What [`SceneSelector::finish`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// The scenes not yet returned by [`SceneSelector::push`], in time order (from
    /// [`select_scenes`]: every scene).
    pub scenes: Vec<Scene>,
    /// The change score and threshold of every sampled frame, in time order.
    pub timeline: Vec<ChangeSample>,
}

impl Selection {
    /// The threshold, when it was the same at every frame (with a `change_threshold` floor,
    /// in footage calm enough that the noise level never rose above it): what a report can
    /// draw as one line.
    pub fn uniform_threshold(&self) -> Option<f32> {
        let first = self.timeline.first()?.threshold;
        self.timeline
            .iter()
            .all(|sample| sample.threshold == first)
            .then_some(first)
    }
}

/// Selects keyframes from the frames of one video in one pass.
///
/// Frames go in with [`push`](Self::push) in time order; scenes come out as soon as they can
/// no longer change, so captioning can start while later frames are still being decoded.
/// With `max_keyframes` set, no scene is final before [`finish`](Self::finish).
#[derive(Debug)]
pub struct SceneSelector {
    config: SelectConfig,
    dim: Option<usize>,
    next_sample: usize,
    last_time: Option<f64>,
    /// Frames not yet confirmed into a scene, in time order.
    pending: VecDeque<Frame>,
    /// The open scene's most recent confirmed frames.
    reference: VecDeque<Frame>,
    /// Unit mean of `reference`.
    reference_mean: Vec<f32>,
    /// The sample index of the frame that opened the current change candidate.
    candidate: Option<usize>,
    open: Option<OpenScene>,
    /// Closed scenes that are not final yet.
    closed: VecDeque<ClosedScene>,
    /// The sensitivity in force (the setting, or its default).
    sensitivity: f32,
    /// (time, change score) of the open scene's settled frames within the noise window:
    /// frames that arrived with no change candidate open and within the threshold.
    scene_scores: VecDeque<(f64, f32)>,
    /// The noise level used until the open scene has [`NOISE_MIN_SAMPLES`] settled scores:
    /// estimated from the frames that opened it, else the previous scene's.
    previous_noise: Option<f32>,
    timeline: Vec<ChangeSample>,
    /// Where the first scene starts: the start of the range analysed.
    first_scene_start: f64,
}

#[derive(Debug, Clone)]
struct Frame {
    sample: usize,
    time: f64,
    embedding: Box<[f32]>,
}

#[derive(Debug)]
struct OpenScene {
    start: f64,
    change: f32,
    sum: Vec<f32>,
    candidates: Reservoir,
    /// The keyframe fixed when a live selector announced the scene.
    announced: Option<Frame>,
}

#[derive(Debug)]
struct ClosedScene {
    start: f64,
    end: f64,
    change: f32,
    sum: Vec<f32>,
    keyframe: Frame,
    /// Whether a live selector announced it (its keyframe is then fixed).
    announced: bool,
}

/// An evenly spaced subset of a scene's confirmed frames, of bounded size.
#[derive(Debug)]
struct Reservoir {
    frames: Vec<Frame>,
    stride: usize,
    offered: usize,
}

impl Reservoir {
    fn new() -> Self {
        Reservoir {
            frames: Vec::new(),
            stride: 1,
            offered: 0,
        }
    }

    /// Keeps every `stride`-th offered frame; when full, drops every other kept frame and
    /// doubles the stride, so the kept frames stay spread over the whole scene.
    fn offer(&mut self, frame: &Frame) {
        if self.offered.is_multiple_of(self.stride) {
            self.insert(frame.clone());
        }
        self.offered += 1;
    }

    fn insert(&mut self, frame: Frame) {
        if self.frames.len() >= KEYFRAME_CANDIDATES {
            let mut index = 0;
            self.frames.retain(|_| {
                index += 1;
                index % 2 == 1
            });
            self.stride *= 2;
        }
        self.frames.push(frame);
    }
}

/// Why a change candidate was closed.
enum Resolution {
    /// The picture came back: the candidate was a flash.
    Returned,
    /// A new scene starts; its settled frames are the last `settled` pending frames.
    Changed { settled: usize },
}

impl SceneSelector {
    /// A selector for one video.
    pub fn new(config: SelectConfig) -> Result<Self, SelectConfigError> {
        config.validate()?;
        Ok(SceneSelector {
            sensitivity: config.effective_sensitivity(),
            config,
            dim: None,
            next_sample: 0,
            last_time: None,
            pending: VecDeque::new(),
            reference: VecDeque::new(),
            reference_mean: Vec::new(),
            candidate: None,
            open: None,
            closed: VecDeque::new(),
            scene_scores: VecDeque::new(),
            previous_noise: None,
            timeline: Vec::new(),
            first_scene_start: 0.0,
        })
    }

    /// The same selector for a part of a video starting at `start`: the first scene opens
    /// there rather than at 0.
    pub fn starting_at(mut self, start: MediaTime) -> Self {
        self.first_scene_start = start.seconds();
        self
    }

    /// The settings in force.
    pub fn config(&self) -> &SelectConfig {
        &self.config
    }

    /// Adds the next sampled frame and returns the scenes that became final.
    ///
    /// `embedding` is the frame's MobileCLIP2 image embedding; it is normalised here, so any
    /// non-zero length works. Frames must come in strictly increasing time order.
    pub fn push(&mut self, time: MediaTime, embedding: &[f32]) -> Result<Vec<Scene>, SelectError> {
        self.advance(time, embedding)?;
        Ok(self.take_final_scenes())
    }

    /// Adds the next sampled frame to the selection.
    fn advance(&mut self, time: MediaTime, embedding: &[f32]) -> Result<(), SelectError> {
        let sample = self.next_sample;
        let frame = self.frame(sample, time, embedding)?;
        self.next_sample += 1;
        self.last_time = Some(frame.time);

        if self.open.is_none() {
            // The first frame opens the first scene and is its first reference.
            self.timeline.push(ChangeSample {
                time,
                change: 0.0,
                threshold: self.effective_threshold(),
            });
            self.open = Some(OpenScene::new(self.first_scene_start, 0.0, &frame));
            self.set_reference(vec![frame]);
            return Ok(());
        }

        self.forget_scores_before(frame.time);
        let threshold = self.effective_threshold();
        let change = cosine_distance(&frame.embedding, &self.reference_mean);
        self.timeline.push(ChangeSample {
            time,
            change,
            threshold,
        });
        let now = frame.time;
        self.pending.push_back(frame);

        if self.candidate.is_none() {
            if change > threshold {
                self.candidate = Some(sample);
            } else {
                self.scene_scores.push_back((now, change));
            }
        }
        if self.candidate.is_some() {
            if let Some(resolution) = self.resolve_candidate(now, threshold, false) {
                self.apply(resolution, threshold);
            }
        }
        if self.candidate.is_none() {
            self.confirm_older_than(now - self.config.max_transition_s);
        }
        Ok(())
    }

    /// Ends the video at `end_of_video` and returns the scenes not yet returned, with the
    /// timeline of change scores. Returns no scenes when no frame was pushed.
    pub fn finish(mut self, end_of_video: MediaTime) -> Selection {
        let mut scenes = self.close_all(end_of_video);
        if let Some(max_keyframes) = self.config.max_keyframes {
            merge_least_distinct(&mut scenes, max_keyframes);
        }
        Selection {
            scenes: scenes.iter().map(ClosedScene::scene).collect(),
            timeline: self.timeline,
        }
    }

    /// Decides the open change candidate, confirms every frame and closes the open scene at
    /// `end_of_video`; returns the scenes not yet taken.
    fn close_all(&mut self, end_of_video: MediaTime) -> Vec<ClosedScene> {
        let Some(last_time) = self.last_time else {
            return Vec::new();
        };
        let threshold = self.effective_threshold();
        if self.candidate.is_some() {
            let resolution = self
                .resolve_candidate(last_time, threshold, true)
                .unwrap_or(Resolution::Returned);
            self.apply(resolution, threshold);
        }
        self.confirm_older_than(f64::INFINITY);
        let end = end_of_video.seconds().max(last_time);
        if let Some(open) = self.open.take() {
            let scene = open.close(end);
            let short = scene.end - scene.start < self.config.min_scene_s - TIME_EPSILON;
            match self.closed.back_mut() {
                Some(previous) if short => previous.absorb_following(scene),
                _ => self.closed.push_back(scene),
            }
        }
        self.closed.drain(..).collect()
    }

    /// Sample indices of the frames that may still become a keyframe. A pipeline that keeps
    /// decoded pictures for captioning can release every other frame.
    pub fn possible_keyframes(&self) -> Vec<usize> {
        let mut samples: Vec<usize> = self
            .closed
            .iter()
            .map(|scene| scene.keyframe.sample)
            .chain(self.pending.iter().map(|frame| frame.sample))
            .chain(
                self.open
                    .iter()
                    .flat_map(|open| open.candidates.frames.iter().map(|frame| frame.sample)),
            )
            .collect();
        samples.sort_unstable();
        samples.dedup();
        samples
    }

    /// How many embedding-sized vectors the selector holds now (its memory, in units of one
    /// embedding).
    pub fn retained_embeddings(&self) -> usize {
        let open = self
            .open
            .as_ref()
            .map_or(0, |open| 1 + open.candidates.frames.len());
        self.pending.len() + self.reference.len() + 1 + open + 2 * self.closed.len()
    }

    fn frame(
        &mut self,
        sample: usize,
        time: MediaTime,
        embedding: &[f32],
    ) -> Result<Frame, SelectError> {
        if let Some(previous) = self.last_time {
            if time.seconds() <= previous {
                return Err(SelectError::TimeNotIncreasing {
                    sample,
                    time,
                    previous: MediaTime::from_seconds(previous),
                });
            }
        }
        match self.dim {
            Some(expected) if expected != embedding.len() => {
                return Err(SelectError::DimensionMismatch {
                    sample,
                    expected,
                    found: embedding.len(),
                })
            }
            _ => {}
        }
        let norm = dot(embedding, embedding).sqrt();
        if embedding.is_empty() || !norm.is_finite() || norm == 0.0 {
            return Err(SelectError::InvalidEmbedding { sample });
        }
        self.dim = Some(embedding.len());
        Ok(Frame {
            sample,
            time: time.seconds(),
            embedding: embedding.iter().map(|value| value / norm).collect(),
        })
    }

    /// The open scene's noise level: the median change score of its settled frames, or until
    /// it has [`NOISE_MIN_SAMPLES`] of them, the estimate made when it opened; `None` before
    /// the video has any.
    fn noise_level(&self) -> Option<f32> {
        if self.scene_scores.len() < NOISE_MIN_SAMPLES {
            return self.previous_noise;
        }
        let mut scores: Vec<f32> = self.scene_scores.iter().map(|(_, c)| *c).collect();
        let middle = scores.len() / 2;
        let (_, median, _) = scores.select_nth_unstable_by(middle, f32::total_cmp);
        Some(*median)
    }

    /// The change score above which a frame counts as changed: `sensitivity` times the noise
    /// level, at least `change_threshold`. Before the first noise level is known nothing
    /// counts (the largest cosine distance, 2).
    fn effective_threshold(&self) -> f32 {
        let floor = self.config.change_threshold.unwrap_or(0.0);
        match self.noise_level() {
            Some(noise) => (self.sensitivity * noise).max(floor),
            None => MAX_COSINE_DISTANCE,
        }
    }

    /// Forgets the scene's change scores that fell out of the noise window ending at `now`.
    fn forget_scores_before(&mut self, now: f64) {
        let window = self.config.noise_window_s + TIME_EPSILON;
        while self
            .scene_scores
            .front()
            .is_some_and(|&(time, _)| now - time > window)
        {
            self.scene_scores.pop_front();
        }
    }

    /// Confirms pending frames at or before `limit` into the open scene.
    fn confirm_older_than(&mut self, limit: f64) {
        while self
            .pending
            .front()
            .is_some_and(|frame| frame.time < limit - TIME_EPSILON)
        {
            if let Some(frame) = self.pending.pop_front() {
                self.confirm(frame);
            }
        }
    }

    /// Adds a stable frame to the open scene's statistics, candidates and reference.
    fn confirm(&mut self, frame: Frame) {
        if let Some(open) = self.open.as_mut() {
            open.add(&frame);
        }
        self.push_reference(frame);
        self.update_reference_mean();
    }

    /// Makes `frames`, already counted in the open scene, its whole reference.
    fn set_reference(&mut self, frames: Vec<Frame>) {
        self.reference.clear();
        for frame in frames {
            self.push_reference(frame);
        }
        self.update_reference_mean();
    }

    fn push_reference(&mut self, frame: Frame) {
        let newest = frame.time;
        self.reference.push_back(frame);
        let window = self.config.reference_window_s + TIME_EPSILON;
        while self.reference.len() > 1
            && self
                .reference
                .front()
                .is_some_and(|oldest| newest - oldest.time > window)
        {
            self.reference.pop_front();
        }
    }

    fn update_reference_mean(&mut self) {
        self.reference_mean = unit_mean(self.reference.iter().map(|frame| &*frame.embedding));
    }

    /// Decides whether the open change candidate is a flash, a settled change, or still
    /// undecided (`None`). `forced` decides now with whatever frames there are.
    fn resolve_candidate(&self, now: f64, threshold: f32, forced: bool) -> Option<Resolution> {
        let trigger = self.candidate?;
        let trigger_index = self.pending.iter().position(|f| f.sample == trigger)?;
        let trigger_time = self.pending[trigger_index].time;
        let window_start = self
            .pending
            .iter()
            .position(|f| now - f.time < self.config.persistence_s - TIME_EPSILON)
            .unwrap_or(self.pending.len() - 1)
            .min(self.pending.len() - 1);
        let window = self.pending.range(window_start..);
        let old = &self.reference_mean;
        let new = unit_mean(window.clone().map(|f| &*f.embedding));
        let far = cosine_distance(old, &new) > threshold;
        let after_trigger = window_start > trigger_index;

        if after_trigger
            && window
                .clone()
                .all(|f| cosine_distance(&f.embedding, old) <= threshold)
        {
            return Some(Resolution::Returned);
        }
        if far && after_trigger {
            let axis = Axis::new(old, &new);
            let settled = self.pending.range(window_start - 1..).all(|f| {
                axis.position(&f.embedding) >= 1.0 - TRANSITION_MARGIN
                    && cosine_distance(&f.embedding, &new) <= threshold
            });
            if settled {
                return Some(Resolution::Changed {
                    settled: self.pending.len() - window_start,
                });
            }
        }
        let overdue = now - trigger_time
            >= self.config.max_transition_s + self.config.persistence_s - TIME_EPSILON;
        if forced || overdue {
            return Some(if far {
                Resolution::Changed {
                    settled: self.pending.len() - window_start,
                }
            } else {
                Resolution::Returned
            });
        }
        None
    }

    fn apply(&mut self, resolution: Resolution, threshold: f32) {
        self.candidate = None;
        match resolution {
            Resolution::Returned => {
                // Frames that were away from the scene are a flash: they stay in the scene's
                // time span but out of its statistics.
                let reference = &self.reference_mean;
                self.pending
                    .retain(|f| cosine_distance(&f.embedding, reference) <= threshold);
            }
            Resolution::Changed { settled } => self.start_new_scene(settled, threshold),
        }
    }

    /// Splits the pending frames between the open scene and a new one whose settled picture
    /// is the mean of the last `settled` pending frames.
    fn start_new_scene(&mut self, settled: usize, threshold: f32) {
        let frames: Vec<Frame> = self.pending.drain(..).collect();
        let Some(newest) = frames.last().cloned() else {
            return;
        };
        let old = self.reference_mean.clone();
        let new = unit_mean(
            frames[frames.len() - settled..]
                .iter()
                .map(|f| &*f.embedding),
        );
        let axis = Axis::new(&old, &new);
        let positions: Vec<f32> = frames.iter().map(|f| axis.position(&f.embedding)).collect();
        let boundary = best_split(&positions).min(frames.len() - settled);
        let start = frames[boundary].time;

        let young_noise = pair_noise(&frames[boundary..]);
        let mut new_frames = Vec::new();
        for (index, (frame, position)) in frames.into_iter().zip(positions).enumerate() {
            if index < boundary {
                if position <= TRANSITION_MARGIN
                    && cosine_distance(&frame.embedding, &old) <= threshold
                {
                    self.confirm(frame);
                }
            } else if position >= 1.0 - TRANSITION_MARGIN
                && cosine_distance(&frame.embedding, &new) <= threshold
            {
                new_frames.push(frame);
            }
        }
        if new_frames.is_empty() {
            // Nothing settled cleanly; the newest frame is the best picture of the new scene.
            new_frames.push(newest);
        }

        let Some(finished) = self.open.take().map(|open| open.close(start)) else {
            return;
        };
        let mut open = OpenScene::new(start, cosine_distance(&old, &new), &new_frames[0]);
        for frame in &new_frames[1..] {
            open.add(frame);
        }
        self.open = Some(open);
        self.set_reference(new_frames);
        self.previous_noise = young_noise.or(self.noise_level());
        self.scene_scores.clear();
        self.close_scene(finished);
    }

    /// Queues a closed scene, merging it into a neighbour first when it is too short.
    fn close_scene(&mut self, scene: ClosedScene) {
        let short = scene.end - scene.start < self.config.min_scene_s - TIME_EPSILON;
        if !short {
            self.closed.push_back(scene);
            return;
        }
        let Some(next) = self.open.as_mut() else {
            self.closed.push_back(scene);
            return;
        };
        let into_previous = self.closed.back().is_some_and(|previous| {
            cosine(&previous.sum, &scene.sum) >= cosine(&next.sum, &scene.sum)
        });
        match self.closed.back_mut() {
            Some(previous) if into_previous => previous.absorb_following(scene),
            _ => next.absorb_preceding(scene),
        }
    }

    /// Removes and returns the closed scenes that can no longer change.
    fn take_final_scenes(&mut self) -> Vec<Scene> {
        if self.config.max_keyframes.is_some() {
            return Vec::new();
        }
        self.take_final_closed()
            .iter()
            .map(ClosedScene::scene)
            .collect()
    }

    /// Whether the open scene already lasts `min_scene_s`, so that it will not be merged
    /// into a neighbour and its start is final.
    fn open_is_long(&self) -> bool {
        match (&self.open, self.last_time) {
            (Some(open), Some(last)) => {
                // The open scene's next boundary can be at the oldest unconfirmed frame.
                let earliest_end = self.pending.front().map_or(last, |frame| frame.time);
                earliest_end - open.start >= self.config.min_scene_s - TIME_EPSILON
            }
            _ => false,
        }
    }

    /// Removes and returns the closed scenes that can no longer change.
    fn take_final_closed(&mut self) -> Vec<ClosedScene> {
        let open_is_long = self.open_is_long();
        let mut scenes = Vec::new();
        while self.closed.len() > 1 || (open_is_long && !self.closed.is_empty()) {
            if let Some(scene) = self.closed.pop_front() {
                scenes.push(scene);
            }
        }
        scenes
    }
}

impl OpenScene {
    /// A scene starting at `start` whose first confirmed frame is `first`.
    fn new(start: f64, change: f32, first: &Frame) -> Self {
        let mut scene = OpenScene {
            start,
            change,
            sum: vec![0.0; first.embedding.len()],
            candidates: Reservoir::new(),
            announced: None,
        };
        scene.add(first);
        scene
    }

    fn add(&mut self, frame: &Frame) {
        add_into(&mut self.sum, &frame.embedding);
        self.candidates.offer(frame);
    }

    fn absorb_preceding(&mut self, scene: ClosedScene) {
        self.start = scene.start;
        self.change = scene.change;
        add_into(&mut self.sum, &scene.sum);
        self.candidates.insert(scene.keyframe);
    }

    /// The candidate nearest the scene's mean so far.
    fn best_candidate(&self) -> &Frame {
        self.candidates
            .frames
            .iter()
            .map(|frame| (cosine(&frame.embedding, &self.sum), frame))
            .reduce(|best, next| if next.0 > best.0 { next } else { best })
            .map(|(_, frame)| frame)
            .expect("a scene holds at least the first frame it was opened with")
    }

    /// Ends the scene at `end` with its keyframe: the one fixed when it was announced, else
    /// the candidate nearest its mean.
    fn close(self, end: f64) -> ClosedScene {
        let announced = self.announced.is_some();
        let keyframe = match self.announced {
            Some(keyframe) => keyframe,
            None => self.best_candidate().clone(),
        };
        ClosedScene {
            start: self.start,
            end,
            change: self.change,
            sum: self.sum,
            keyframe,
            announced,
        }
    }
}

impl ClosedScene {
    fn absorb_following(&mut self, scene: ClosedScene) {
        self.end = scene.end;
        add_into(&mut self.sum, &scene.sum);
        if !self.announced
            && cosine(&scene.keyframe.embedding, &self.sum)
                > cosine(&self.keyframe.embedding, &self.sum)
        {
            self.keyframe = scene.keyframe;
        }
    }

    fn scene(&self) -> Scene {
        Scene {
            start: MediaTime::from_seconds(self.start),
            end: MediaTime::from_seconds(self.end),
            keyframe: MediaTime::from_seconds(self.keyframe.time),
            keyframe_sample: self.keyframe.sample,
            change: self.change,
        }
    }
}

/// Merges neighbouring scenes, most alike first, until at most `max_scenes` remain.
fn merge_least_distinct(scenes: &mut Vec<ClosedScene>, max_scenes: usize) {
    let mut distances: Vec<f32> = scenes
        .windows(2)
        .map(|pair| 1.0 - cosine(&pair[0].sum, &pair[1].sum))
        .collect();
    while scenes.len() > max_scenes.max(1) {
        let Some((index, _)) = distances
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
        else {
            break;
        };
        let following = scenes.remove(index + 1);
        scenes[index].absorb_following(following);
        distances.remove(index);
        if index > 0 {
            distances[index - 1] = 1.0 - cosine(&scenes[index - 1].sum, &scenes[index].sum);
        }
        if index + 1 < scenes.len() {
            distances[index] = 1.0 - cosine(&scenes[index].sum, &scenes[index + 1].sum);
        }
    }
}

/// Runs a whole video through a [`SceneSelector`] and returns every scene.
pub fn select_scenes<'a, I>(
    config: SelectConfig,
    frames: I,
    end_of_video: MediaTime,
) -> Result<Selection, SelectError>
where
    I: IntoIterator<Item = (MediaTime, &'a [f32])>,
{
    let mut selector = SceneSelector::new(config)?;
    let mut scenes = Vec::new();
    for (time, embedding) in frames {
        scenes.extend(selector.push(time, embedding)?);
    }
    let mut selection = selector.finish(end_of_video);
    scenes.append(&mut selection.scenes);
    selection.scenes = scenes;
    Ok(selection)
}

/// A noise level estimated from the first frames of a scene: half the median cosine distance
/// between two of them (a frame's distance from the mean of many others is about half its
/// distance from one other), robust to one flash among them. `None` for fewer than two.
fn pair_noise(frames: &[Frame]) -> Option<f32> {
    let mut distances: Vec<f32> = frames
        .iter()
        .enumerate()
        .flat_map(|(index, a)| {
            frames[index + 1..]
                .iter()
                .map(|b| cosine_distance(&a.embedding, &b.embedding))
        })
        .collect();
    if distances.is_empty() {
        return None;
    }
    let middle = distances.len() / 2;
    let (_, median, _) = distances.select_nth_unstable_by(middle, f32::total_cmp);
    Some(*median / 2.0)
}

/// Positions along the axis from one unit vector (0) to another (1).
struct Axis {
    direction: Vec<f32>,
    offset: f32,
    scale: f32,
}

impl Axis {
    fn new(from: &[f32], to: &[f32]) -> Self {
        let direction: Vec<f32> = to.iter().zip(from).map(|(t, f)| t - f).collect();
        let length_squared = dot(&direction, &direction).max(f32::MIN_POSITIVE);
        Axis {
            offset: dot(from, &direction),
            scale: 1.0 / length_squared,
            direction,
        }
    }

    fn position(&self, embedding: &[f32]) -> f32 {
        (dot(embedding, &self.direction) - self.offset) * self.scale
    }
}

/// The index splitting `positions` into an old part (< 0.5) and a new part (>= 0.5) with the
/// fewest frames on the wrong side; the earliest such index.
fn best_split(positions: &[f32]) -> usize {
    let mut wrong: usize = positions.iter().filter(|p| **p < 0.5).count();
    let (mut best, mut best_wrong) = (0, wrong);
    for (index, position) in positions.iter().enumerate() {
        if *position < 0.5 {
            wrong -= 1;
        } else {
            wrong += 1;
        }
        if wrong < best_wrong {
            best_wrong = wrong;
            best = index + 1;
        }
    }
    best
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn add_into(sum: &mut [f32], vector: &[f32]) {
    for (s, v) in sum.iter_mut().zip(vector) {
        *s += v;
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let norms = (dot(a, a) * dot(b, b)).sqrt();
    if norms > 0.0 {
        dot(a, b) / norms
    } else {
        0.0
    }
}

/// Cosine distance between two vectors (1 - cosine similarity).
fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    1.0 - cosine(a, b)
}

fn unit_mean<'a>(vectors: impl Iterator<Item = &'a [f32]>) -> Vec<f32> {
    let mut sum: Vec<f32> = Vec::new();
    for vector in vectors {
        if sum.is_empty() {
            sum = vector.to_vec();
        } else {
            add_into(&mut sum, vector);
        }
    }
    let norm = dot(&sum, &sum).sqrt();
    if norm > 0.0 {
        sum.iter_mut().for_each(|value| *value /= norm);
    }
    sum
}

/// A scene announced by a [`LiveSelector`]: its start and keyframe are final while the
/// scene itself may still be running (its end is the next scene's start).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StartedScene {
    /// Where the scene starts.
    pub start: MediaTime,
    /// The keyframe's time.
    pub keyframe: MediaTime,
    /// The keyframe's index among the sampled frames, from 0.
    pub keyframe_sample: usize,
    /// Cosine distance between the previous scene and this one where they meet (0 for the
    /// first scene).
    pub change: f32,
}

/// Selects keyframes from a live stream, announcing each scene as soon as its start is
/// final rather than when it ends.
///
/// The rules are [`SceneSelector`]'s. A scene's start is final once the change into it has
/// persisted (`persistence_s`) and the scene is known to last `min_scene_s` beyond its
/// frames still unconfirmed (the last `max_transition_s`), so that it cannot be merged into
/// a neighbour: after a hard cut, at most [`SelectConfig::live_finality_s`] after its first
/// frame.
/// Its keyframe is then fixed: the frame nearest the mean of the scene's frames so far. A
/// scene that ends before that is announced when it closes. `max_keyframes` needs the
/// whole video and is refused.
#[derive(Debug)]
pub struct LiveSelector {
    selector: SceneSelector,
}

impl SelectConfig {
    /// The longest a scene that starts at a hard cut waits, from its first frame, to be
    /// announced by a [`LiveSelector`]: `max(persistence_s, min_scene_s + max_transition_s)`
    /// (4 s with the defaults; when the settings are not multiples of the sampling interval,
    /// up to one interval more). A cut to a picture that settles at once waits exactly that;
    /// a change that takes longer than `min_scene_s` to decide is announced as soon as it is
    /// decided. Another change under way at that moment can hold it back until that one is
    /// decided, at most `max_transition_s + persistence_s` more; a scene that starts in the
    /// middle of a fade or dissolve waits at most `max_transition_s + max(persistence_s,
    /// min_scene_s)` from its start.
    pub fn live_finality_s(&self) -> f64 {
        self.persistence_s
            .max(self.min_scene_s + self.max_transition_s)
    }
}

impl LiveSelector {
    /// A selector for a stream; refuses `max_keyframes`, which needs the whole video.
    pub fn new(config: SelectConfig) -> Result<Self, SelectConfigError> {
        if config.max_keyframes.is_some() {
            return Err(SelectConfigError {
                field: "max_keyframes",
                reason: "a live stream has no end to choose the strongest scenes by; leave \
                         it out"
                    .to_string(),
            });
        }
        Ok(LiveSelector {
            selector: SceneSelector::new(config)?,
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &SelectConfig {
        self.selector.config()
    }

    /// Adds the next sampled frame and returns the scenes announced by it, in time order.
    pub fn push(
        &mut self,
        time: MediaTime,
        embedding: &[f32],
    ) -> Result<Vec<StartedScene>, SelectError> {
        self.selector.advance(time, embedding)?;
        Ok(self.take_started())
    }

    /// Ends the stream at `end` and returns the scenes not yet announced.
    pub fn finish(mut self, end: MediaTime) -> Vec<StartedScene> {
        self.selector
            .close_all(end)
            .iter()
            .filter(|scene| !scene.announced)
            .map(ClosedScene::started)
            .collect()
    }

    /// Every scene that starts before this time has been announced.
    pub fn settled_until(&self) -> MediaTime {
        let selector = &self.selector;
        let unannounced = selector
            .closed
            .iter()
            .find(|scene| !scene.announced)
            .map(|scene| scene.start)
            .or(selector
                .open
                .as_ref()
                .filter(|open| open.announced.is_none())
                .map(|open| open.start));
        // A new scene starts at a frame not yet confirmed, or at one still to come.
        let seconds = unannounced.unwrap_or_else(|| match selector.pending.front() {
            Some(frame) => frame.time,
            None => selector.last_time.map_or(0.0, |last| last + TIME_EPSILON),
        });
        MediaTime::from_seconds(seconds)
    }

    /// Sample indices of the frames that may still become the keyframe of a scene not yet
    /// announced: a stream's pictures can be released for every other frame.
    pub fn possible_keyframes(&self) -> Vec<usize> {
        let selector = &self.selector;
        let mut samples: Vec<usize> = selector
            .closed
            .iter()
            .filter(|scene| !scene.announced)
            .map(|scene| scene.keyframe.sample)
            .chain(selector.pending.iter().map(|frame| frame.sample))
            .chain(
                selector
                    .open
                    .iter()
                    .filter(|open| open.announced.is_none())
                    .flat_map(|open| open.candidates.frames.iter().map(|frame| frame.sample)),
            )
            .collect();
        samples.sort_unstable();
        samples.dedup();
        samples
    }

    /// Removes and returns the change scores of the frames pushed so far, for a part of the
    /// stream written out (so the selector's memory stays flat).
    pub fn take_timeline(&mut self) -> Vec<ChangeSample> {
        std::mem::take(&mut self.selector.timeline)
    }

    /// The closed scenes that became final and were not announced, then the open scene
    /// once it is long enough to be final, its keyframe fixed now.
    fn take_started(&mut self) -> Vec<StartedScene> {
        let open_is_long = self.selector.open_is_long();
        let mut started: Vec<StartedScene> = self
            .selector
            .take_final_closed()
            .iter()
            .filter(|scene| !scene.announced)
            .map(ClosedScene::started)
            .collect();
        if let Some(open) = self.selector.open.as_mut() {
            if open_is_long && open.announced.is_none() {
                let keyframe = open.best_candidate().clone();
                started.push(StartedScene {
                    start: MediaTime::from_seconds(open.start),
                    keyframe: MediaTime::from_seconds(keyframe.time),
                    keyframe_sample: keyframe.sample,
                    change: open.change,
                });
                open.announced = Some(keyframe);
            }
        }
        started
    }
}

impl ClosedScene {
    fn started(&self) -> StartedScene {
        StartedScene {
            start: MediaTime::from_seconds(self.start),
            keyframe: MediaTime::from_seconds(self.keyframe.time),
            keyframe_sample: self.keyframe.sample,
            change: self.change,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIM: usize = 512;
    /// The decode stage's default: two sampled frames per second.
    const SAMPLE_INTERVAL_S: f64 = 0.5;
    /// Per-frame noise: puts a frame about 0.03 (cosine distance) from its scene's picture,
    /// and two frames of one shot about 0.06 apart.
    const FRAME_NOISE: f32 = 0.25;

    /// A small deterministic generator (SplitMix64) for synthetic embeddings.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn uniform(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        fn gaussian(&mut self) -> f32 {
            let (u, v) = (self.uniform(), self.uniform());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        }

        /// A random direction.
        fn unit(&mut self) -> Vec<f32> {
            normalized((0..DIM).map(|_| self.gaussian()).collect())
        }
    }

    fn normalized(mut vector: Vec<f32>) -> Vec<f32> {
        let norm = dot(&vector, &vector).sqrt();
        vector.iter_mut().for_each(|value| *value /= norm);
        vector
    }

    fn mix(a: &[f32], b: &[f32], amount_of_b: f32) -> Vec<f32> {
        normalized(
            a.iter()
                .zip(b)
                .map(|(x, y)| (1.0 - amount_of_b) * x + amount_of_b * y)
                .collect(),
        )
    }

    /// Builds a sampled video, frame by frame, from scene pictures and transitions.
    struct Clip {
        rng: Rng,
        /// Shared by all pictures, as real image embeddings share a common direction: two
        /// unrelated pictures are about 0.5 apart (cosine distance).
        common: Vec<f32>,
        frames: Vec<Vec<f32>>,
        /// Indices of frames that belong to a transition (fade, dissolve) or a flash.
        transitional: Vec<usize>,
    }

    impl Clip {
        fn new(seed: u64) -> Self {
            let mut rng = Rng(seed);
            let common = rng.unit();
            Clip {
                rng,
                common,
                frames: Vec::new(),
                transitional: Vec::new(),
            }
        }

        /// A new, unrelated picture.
        fn picture(&mut self) -> Vec<f32> {
            let own = self.rng.unit();
            mix(&self.common, &own, 0.5)
        }

        /// A picture at cosine similarity `similarity` to `picture`.
        fn variant(&mut self, picture: &[f32], similarity: f32) -> Vec<f32> {
            let random = self.rng.unit();
            let along = dot(&random, picture);
            let orthogonal = normalized(
                random
                    .iter()
                    .zip(picture)
                    .map(|(r, p)| r - along * p)
                    .collect(),
            );
            let sine = (1.0 - similarity * similarity).sqrt();
            normalized(
                picture
                    .iter()
                    .zip(&orthogonal)
                    .map(|(p, o)| similarity * p + sine * o)
                    .collect(),
            )
        }

        fn noisy(&mut self, picture: &[f32]) -> Vec<f32> {
            self.noisy_by(picture, FRAME_NOISE)
        }

        fn noisy_by(&mut self, picture: &[f32], noise: f32) -> Vec<f32> {
            let scale = noise / (DIM as f32).sqrt();
            normalized(
                picture
                    .iter()
                    .map(|value| value + scale * self.rng.gaussian())
                    .collect(),
            )
        }

        /// Index of the next frame.
        fn len(&self) -> usize {
            self.frames.len()
        }

        fn hold(&mut self, picture: &[f32], frames: usize) -> &mut Self {
            for _ in 0..frames {
                let frame = self.noisy(picture);
                self.frames.push(frame);
            }
            self
        }

        /// A cross-dissolve of `frames` frames; frame j shows (j+1)/(frames+1) of `to`.
        /// Returns the index of the first frame at least half `to`.
        fn dissolve(&mut self, from: &[f32], to: &[f32], frames: usize) -> usize {
            let mut first_half = None;
            for j in 0..frames {
                let amount = (j + 1) as f32 / (frames + 1) as f32;
                if amount >= 0.5 && first_half.is_none() {
                    first_half = Some(self.len());
                }
                self.transitional.push(self.len());
                let frame = self.noisy(&mix(from, to, amount));
                self.frames.push(frame);
            }
            first_half.unwrap_or(self.len())
        }

        /// A fade from `from` to `black` and from `black` to `to`, `frames` frames in all.
        /// Returns the index of the first frame of the fade's second half.
        fn fade(&mut self, from: &[f32], black: &[f32], to: &[f32], frames: usize) -> usize {
            let mut second_half = None;
            for j in 0..frames {
                let progress = (j + 1) as f32 / (frames + 1) as f32;
                let picture = if progress < 0.5 {
                    mix(from, black, 2.0 * progress)
                } else {
                    second_half.get_or_insert(self.len());
                    mix(black, to, 2.0 * progress - 1.0)
                };
                self.transitional.push(self.len());
                let frame = self.noisy(&picture);
                self.frames.push(frame);
            }
            second_half.unwrap_or(self.len())
        }

        fn flash(&mut self, frames: usize) {
            let flash = self.rng.unit();
            for _ in 0..frames {
                self.transitional.push(self.len());
                let frame = self.noisy(&flash);
                self.frames.push(frame);
            }
        }

        fn time(index: usize) -> MediaTime {
            MediaTime::from_seconds(index as f64 * SAMPLE_INTERVAL_S)
        }

        fn end(&self) -> MediaTime {
            Self::time(self.len())
        }

        fn select(&self, config: SelectConfig) -> Selection {
            let frames = self
                .frames
                .iter()
                .enumerate()
                .map(|(index, frame)| (Self::time(index), frame.as_slice()));
            select_scenes(config, frames, self.end()).unwrap()
        }
    }

    /// Asserts the scenes start at the expected samples (within one sample) and partition
    /// the video, and that every keyframe is a stable frame inside its scene.
    fn assert_scenes(clip: &Clip, selection: &Selection, expected_starts: &[usize]) {
        let starts: Vec<f64> = selection.scenes.iter().map(|s| s.start.seconds()).collect();
        assert_eq!(
            selection.scenes.len(),
            expected_starts.len() + 1,
            "scene starts {starts:?}, expected first samples {expected_starts:?}"
        );
        assert_eq!(selection.scenes[0].start, MediaTime::ZERO);
        for (scene, expected) in selection.scenes[1..].iter().zip(expected_starts) {
            let expected = Clip::time(*expected).seconds();
            assert!(
                (scene.start.seconds() - expected).abs() <= SAMPLE_INTERVAL_S + 1e-9,
                "scene starts {starts:?}, expected one at {expected}"
            );
            assert!(scene.change > 0.0);
        }
        for pair in selection.scenes.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        assert_eq!(selection.scenes.last().unwrap().end, clip.end());
        for scene in &selection.scenes {
            assert!(scene.keyframe >= scene.start && scene.keyframe < scene.end);
            assert_eq!(scene.keyframe, Clip::time(scene.keyframe_sample));
            assert!(
                !clip.transitional.contains(&scene.keyframe_sample),
                "keyframe {} is a transition frame",
                scene.keyframe_sample
            );
        }
    }

    #[test]
    fn hard_cuts_start_scenes_at_the_first_frame_of_each_shot() {
        let mut clip = Clip::new(1);
        let (a, b, c) = (clip.picture(), clip.picture(), clip.picture());
        clip.hold(&a, 20);
        let cut_b = clip.len();
        clip.hold(&b, 16);
        let cut_c = clip.len();
        clip.hold(&c, 24);
        let selection = clip.select(SelectConfig::default());
        assert_scenes(&clip, &selection, &[cut_b, cut_c]);
        assert_eq!(selection.timeline.len(), clip.len());
    }

    #[test]
    fn a_live_selector_announces_each_scene_its_finality_after_its_first_frame() {
        let mut clip = Clip::new(1);
        let (a, b, c) = (clip.picture(), clip.picture(), clip.picture());
        clip.hold(&a, 20);
        let cut_b = clip.len();
        clip.hold(&b, 16);
        let cut_c = clip.len();
        clip.hold(&c, 24);
        let config = SelectConfig::default();
        let finality = config.live_finality_s();
        assert_eq!(finality, 4.0);
        let batch = clip.select(config.clone());
        let mut live = LiveSelector::new(config).unwrap();
        let mut announced = Vec::new();
        for (index, frame) in clip.frames.iter().enumerate() {
            for scene in live.push(Clip::time(index), frame).unwrap() {
                announced.push((Clip::time(index), scene));
            }
            assert!(live.possible_keyframes().len() <= KEYFRAME_CANDIDATES + 8);
        }
        let rest = live.finish(clip.end());
        assert!(rest.is_empty(), "{rest:?}");
        let starts: Vec<MediaTime> = announced.iter().map(|(_, scene)| scene.start).collect();
        let batch_starts: Vec<MediaTime> = batch.scenes.iter().map(|s| s.start).collect();
        assert_eq!(starts, batch_starts);
        assert_eq!(starts[1], Clip::time(cut_b));
        assert_eq!(starts[2], Clip::time(cut_c));
        for (at, scene) in &announced {
            assert_eq!(
                at.seconds() - scene.start.seconds(),
                finality,
                "{announced:?}"
            );
            assert!(scene.keyframe >= scene.start && scene.keyframe <= *at);
        }
    }

    #[test]
    fn a_live_selector_refuses_a_keyframe_cap() {
        let config = SelectConfig {
            max_keyframes: Some(8),
            ..SelectConfig::default()
        };
        assert_eq!(
            LiveSelector::new(config).unwrap_err().field,
            "max_keyframes"
        );
    }

    #[test]
    fn the_same_footage_on_any_embedders_scale_selects_the_same_scenes() {
        // A weak embedder: every picture pulled towards one direction, so that all cosine
        // distances shrink about a hundredfold (frames of a shot ~0.0006 apart, shots ~0.005).
        let mut clip = Clip::new(3);
        let pictures: Vec<Vec<f32>> = (0..4).map(|_| clip.picture()).collect();
        let black = clip.picture();
        let mut starts = Vec::new();
        clip.hold(&pictures[0], 16);
        starts.push(clip.len());
        clip.hold(&pictures[1], 12);
        clip.flash(1);
        clip.hold(&pictures[1], 8);
        starts.push(clip.fade(&pictures[1], &black, &pictures[2], 3));
        clip.hold(&pictures[2], 14);
        starts.push(clip.dissolve(&pictures[2], &pictures[3], 3));
        clip.hold(&pictures[3], 14);
        let strong = clip.select(SelectConfig::default());
        assert_scenes(&clip, &strong, &starts);

        let pull = clip.rng.unit();
        let mut weak = Clip::new(3);
        weak.transitional = clip.transitional.clone();
        weak.frames = clip
            .frames
            .iter()
            .map(|frame| normalized(frame.iter().zip(&pull).map(|(f, p)| f + 10.0 * p).collect()))
            .collect();
        let (a, b) = (&weak.frames[0], &weak.frames[clip.len() - 1]);
        assert!(cosine_distance(a, b) < 0.01, "{}", cosine_distance(a, b));
        let weak_selection = weak.select(SelectConfig::default());
        let shape = |selection: &Selection| -> Vec<(MediaTime, MediaTime, usize)> {
            selection
                .scenes
                .iter()
                .map(|scene| (scene.start, scene.end, scene.keyframe_sample))
                .collect()
        };
        // Same scenes and keyframes; each `change` is on its embedder's own scale.
        assert_eq!(shape(&weak_selection), shape(&strong));
        // A fixed threshold on the strong scale would have seen nothing in the weak footage.
        let fixed = SelectConfig {
            change_threshold: Some(0.05),
            ..SelectConfig::default()
        };
        assert_eq!(weak.select(fixed).scenes.len(), 1);
    }

    #[test]
    fn fades_through_black_are_one_change_at_their_middle() {
        for fade_frames in [2, 3, 4] {
            let mut clip = Clip::new(2 + fade_frames as u64);
            let (a, b, c) = (clip.picture(), clip.picture(), clip.picture());
            let black = clip.picture();
            clip.hold(&a, 20);
            let first = clip.fade(&a, &black, &b, fade_frames);
            clip.hold(&b, 20);
            let second = clip.fade(&b, &black, &c, fade_frames);
            clip.hold(&c, 20);
            let selection = clip.select(SelectConfig::default());
            assert_scenes(&clip, &selection, &[first, second]);
        }
    }

    #[test]
    fn cross_dissolves_are_one_change_at_their_middle() {
        for dissolve_frames in [2, 3, 4] {
            let mut clip = Clip::new(10 + dissolve_frames as u64);
            let (a, b, c) = (clip.picture(), clip.picture(), clip.picture());
            clip.hold(&a, 20);
            let first = clip.dissolve(&a, &b, dissolve_frames);
            clip.hold(&b, 20);
            let second = clip.dissolve(&b, &c, dissolve_frames);
            clip.hold(&c, 20);
            let selection = clip.select(SelectConfig::default());
            assert_scenes(&clip, &selection, &[first, second]);
        }
    }

    #[test]
    fn flashes_that_do_not_last_are_not_scenes() {
        for flash_frames in [1, 2] {
            let mut clip = Clip::new(20 + flash_frames as u64);
            let (a, b) = (clip.picture(), clip.picture());
            clip.hold(&a, 20);
            clip.flash(flash_frames);
            clip.hold(&a, 20);
            let cut = clip.len();
            clip.hold(&b, 10);
            clip.flash(flash_frames);
            clip.hold(&b, 20);
            let selection = clip.select(SelectConfig::default());
            assert_scenes(&clip, &selection, &[cut]);
        }
    }

    #[test]
    fn a_steady_pan_is_one_scene() {
        let mut clip = Clip::new(30);
        let start = clip.picture();
        let turned = clip.variant(&start, 0.0);
        clip.hold(&start, 10);
        // Turn by a quarter circle over 20 seconds, 2.25 degrees per sample.
        let steps = 40;
        for step in 1..=steps {
            let angle = std::f32::consts::FRAC_PI_2 * step as f32 / steps as f32;
            let picture: Vec<f32> = start
                .iter()
                .zip(&turned)
                .map(|(s, t)| angle.cos() * s + angle.sin() * t)
                .collect();
            clip.hold(&picture, 1);
        }
        clip.hold(&turned, 10);
        // The two ends are further apart than any cut threshold...
        assert!(cosine_distance(&start, &turned) > 0.9);
        // ...yet nothing in the pan is a change.
        let selection = clip.select(SelectConfig::default());
        assert_scenes(&clip, &selection, &[]);
    }

    #[test]
    fn scenes_shorter_than_the_minimum_join_their_most_similar_neighbour() {
        // A 1.5 s shot between two long ones, closer to the following shot (similarity 0.7)
        // than to the preceding one (0.5): it joins the following one, and the other way round.
        for joins_following in [true, false] {
            let mut clip = Clip::new(40 + joins_following as u64);
            let (a, c) = (clip.picture(), clip.picture());
            let b = clip.variant(if joins_following { &c } else { &a }, 0.7);
            clip.hold(&a, 20);
            let cut_b = clip.len();
            clip.hold(&b, 3);
            let cut_c = clip.len();
            clip.hold(&c, 20);
            let config = SelectConfig {
                min_scene_s: 2.0,
                ..SelectConfig::default()
            };
            let selection = clip.select(config);
            let expected = if joins_following { cut_b } else { cut_c };
            assert_scenes(&clip, &selection, &[expected]);
        }
    }

    #[test]
    fn short_shots_are_scenes_when_the_minimum_allows() {
        let mut clip = Clip::new(45);
        let (a, b, c) = (clip.picture(), clip.picture(), clip.picture());
        clip.hold(&a, 20);
        let cut_b = clip.len();
        clip.hold(&b, 3);
        let cut_c = clip.len();
        clip.hold(&c, 20);
        let config = SelectConfig {
            min_scene_s: 1.0,
            ..SelectConfig::default()
        };
        assert_scenes(&clip, &clip.select(config), &[cut_b, cut_c]);
    }

    #[test]
    fn keyframes_are_stable_frames_near_the_scene_mean() {
        let mut clip = Clip::new(50);
        let pictures: Vec<Vec<f32>> = (0..5).map(|_| clip.picture()).collect();
        let black = clip.picture();
        let mut starts = Vec::new();
        clip.hold(&pictures[0], 12);
        starts.push(clip.dissolve(&pictures[0], &pictures[1], 4));
        clip.hold(&pictures[1], 8);
        starts.push(clip.fade(&pictures[1], &black, &pictures[2], 4));
        clip.hold(&pictures[2], 6);
        starts.push(clip.dissolve(&pictures[2], &pictures[3], 3));
        clip.hold(&pictures[3], 9);
        starts.push(clip.fade(&pictures[3], &black, &pictures[4], 3));
        clip.hold(&pictures[4], 12);
        let selection = clip.select(SelectConfig::default());
        assert_scenes(&clip, &selection, &starts);
        for (scene, picture) in selection.scenes.iter().zip(&pictures) {
            let keyframe = &clip.frames[scene.keyframe_sample];
            // A clean frame of the scene's own picture: within frame noise of it.
            assert!(cosine_distance(keyframe, picture) < 0.06);
        }
    }

    #[test]
    fn the_keyframe_cap_keeps_the_most_distinct_scenes() {
        // Twelve shots; four of them are another angle on the shot before (similarity 0.7,
        // a cut of 0.3) while the others are unrelated (about 0.5). Capped at eight, exactly
        // the four weak cuts go.
        let mut clip = Clip::new(60);
        let weak = [2, 5, 7, 10];
        let mut all_cuts = Vec::new();
        let mut strong_cuts = Vec::new();
        let mut previous: Option<Vec<f32>> = None;
        for shot in 0..12 {
            let picture = match &previous {
                Some(before) if weak.contains(&shot) => clip.variant(before, 0.7),
                _ => clip.picture(),
            };
            if shot > 0 {
                all_cuts.push(clip.len());
                if !weak.contains(&shot) {
                    strong_cuts.push(clip.len());
                }
            }
            clip.hold(&picture, 12);
            previous = Some(picture);
        }
        assert_scenes(&clip, &clip.select(SelectConfig::default()), &all_cuts);
        let capped = SelectConfig {
            max_keyframes: Some(8),
            ..SelectConfig::default()
        };
        assert_scenes(&clip, &clip.select(capped.clone()), &strong_cuts);

        // With a cap, nothing is final before the end.
        let mut selector = SceneSelector::new(capped).unwrap();
        for (index, frame) in clip.frames.iter().enumerate() {
            assert!(selector.push(Clip::time(index), frame).unwrap().is_empty());
        }
        assert_eq!(selector.finish(clip.end()).scenes.len(), 8);
    }

    #[test]
    fn a_two_hour_stream_keeps_bounded_state_and_emits_scenes_as_it_goes() {
        // 14,400 frames at 2 per second, a cut every 10 seconds.
        let mut clip = Clip::new(70);
        let mut selector = SceneSelector::new(SelectConfig::default()).unwrap();
        let mut emitted = Vec::new();
        let mut most_retained = 0;
        let mut picture = clip.picture();
        for index in 0..14_400 {
            if index % 20 == 0 && index > 0 {
                picture = clip.picture();
            }
            let frame = clip.noisy(&picture);
            let scenes = selector.push(Clip::time(index), &frame).unwrap();
            if index == 1000 {
                // Captioning can start long before the end.
                assert!(emitted.len() >= 40);
            }
            emitted.extend(scenes);
            most_retained = most_retained.max(selector.retained_embeddings());
            assert!(selector.possible_keyframes().len() <= 2 * KEYFRAME_CANDIDATES + 16);
        }
        // Transition window (5) + reference (5) + candidates (17) + a few scenes' vectors.
        assert!(
            most_retained <= 40,
            "selector held {most_retained} embeddings"
        );
        let selection = selector.finish(Clip::time(14_400));
        emitted.extend(selection.scenes);
        assert_eq!(emitted.len(), 720);
        for (index, scene) in emitted.iter().enumerate() {
            assert!((scene.start.seconds() - 10.0 * index as f64).abs() <= SAMPLE_INTERVAL_S);
        }
        assert_eq!(selection.timeline.len(), 14_400);
    }

    #[test]
    fn the_threshold_follows_each_scenes_own_noise() {
        // A calm shot, then two grainy low-light shots whose frames scatter about 0.15 from
        // their picture (five times the calm shots' 0.03), each cut unrelated to the last.
        let mut clip = Clip::new(80);
        let calm = clip.picture();
        let grainy = clip.variant(&calm, 0.0);
        let other_grainy = clip.variant(&grainy, 0.0);
        clip.hold(&calm, 40);
        let first_cut = clip.len();
        for picture in [&grainy, &other_grainy] {
            for _ in 0..60 {
                let frame = clip.noisy_by(picture, 2.3 * FRAME_NOISE);
                clip.frames.push(frame);
            }
        }
        let second_cut = first_cut + 60;
        let config = SelectConfig::default();
        let selection = clip.select(config.clone());
        assert_scenes(&clip, &selection, &[first_cut, second_cut]);

        let timeline = &selection.timeline;
        // Nothing counts before the first scene has a noise level.
        assert!(timeline[..NOISE_MIN_SAMPLES]
            .iter()
            .all(|c| c.threshold == MAX_COSINE_DISTANCE));
        // Later in each shot, the threshold is the sensitivity times the median change score
        // of the shot's own settled frames (every frame of these shots is settled).
        let sensitivity = config.effective_sensitivity();
        for (start, end) in [(20, first_cut), (first_cut + 30, second_cut)] {
            let mut scores: Vec<f32> = timeline[start - 8..end - 1]
                .iter()
                .map(|c| c.change)
                .collect();
            scores.sort_by(f32::total_cmp);
            let at = &timeline[end - 1];
            let median = scores[scores.len() / 2];
            assert!(
                (at.threshold / sensitivity - median).abs() < 0.2 * median,
                "threshold {} against noise {median}",
                at.threshold
            );
        }
        assert!(timeline[second_cut - 1].threshold > 3.0 * timeline[first_cut - 1].threshold);
        assert_eq!(selection.uniform_threshold(), None);
    }

    #[test]
    fn config_reads_from_a_pipeline_table_with_defaults() {
        let config: SelectConfig =
            toml::from_str("change_threshold = 0.3\nmax_keyframes = 8\n").unwrap();
        assert_eq!(config.change_threshold, Some(0.3));
        assert_eq!(config.sensitivity, None);
        assert_eq!(config.max_keyframes, Some(8));
        assert_eq!(config.min_scene_s, SelectConfig::default().min_scene_s);
        let written = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<SelectConfig>(&written).unwrap(), config);
        assert!(toml::from_str::<SelectConfig>("change_treshold = 0.3").is_err());
        SelectConfig::default().validate().unwrap();
    }

    #[test]
    fn the_embedders_defaults_fill_only_what_the_pipeline_leaves_unset() {
        let manifest: SelectDefaults =
            toml::from_str("sensitivity = 2.5\nchange_threshold = 0.01\n").unwrap();
        let pipeline: SelectConfig = toml::from_str("sensitivity = 4.0\n").unwrap();
        let config = pipeline.with_model_defaults(&manifest);
        assert_eq!(config.sensitivity, Some(4.0));
        assert_eq!(config.change_threshold, Some(0.01));
        let config = SelectConfig::default().with_model_defaults(&manifest);
        assert_eq!(config.effective_sensitivity(), 2.5);
        let none = SelectConfig::default().with_model_defaults(&SelectDefaults::default());
        assert_eq!(none.effective_sensitivity(), DEFAULT_SENSITIVITY);
        assert!(toml::from_str::<SelectDefaults>("min_scene_s = 1.0").is_err());
        // Written back as given.
        let written = toml::to_string(&config).unwrap();
        assert!(written.contains("sensitivity = 2.5\n"), "{written}");
    }

    #[test]
    fn validation_names_the_bad_setting() {
        let cases = [
            (
                SelectConfig {
                    change_threshold: Some(0.0),
                    ..SelectConfig::default()
                },
                "change_threshold",
            ),
            (
                SelectConfig {
                    sensitivity: Some(1.0),
                    ..SelectConfig::default()
                },
                "sensitivity",
            ),
            (
                SelectConfig {
                    persistence_s: 0.0,
                    ..SelectConfig::default()
                },
                "persistence_s",
            ),
            (
                SelectConfig {
                    min_scene_s: f64::NAN,
                    ..SelectConfig::default()
                },
                "min_scene_s",
            ),
            (
                SelectConfig {
                    max_keyframes: Some(0),
                    ..SelectConfig::default()
                },
                "max_keyframes",
            ),
        ];
        for (config, field) in cases {
            let error = config.validate().unwrap_err();
            assert_eq!(error.field, field);
            assert!(error.to_string().starts_with(&format!("select.{field}: ")));
            assert!(SceneSelector::new(config).is_err());
        }
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut selector = SceneSelector::new(SelectConfig::default()).unwrap();
        selector
            .push(MediaTime::from_seconds(1.0), &[1.0, 0.0])
            .unwrap();
        assert!(matches!(
            selector.push(MediaTime::from_seconds(1.0), &[1.0, 0.0]),
            Err(SelectError::TimeNotIncreasing { sample: 1, .. })
        ));
        assert!(matches!(
            selector.push(MediaTime::from_seconds(2.0), &[1.0, 0.0, 0.0]),
            Err(SelectError::DimensionMismatch {
                expected: 2,
                found: 3,
                ..
            })
        ));
        assert!(matches!(
            selector.push(MediaTime::from_seconds(2.0), &[0.0, 0.0]),
            Err(SelectError::InvalidEmbedding { .. })
        ));
        assert!(matches!(
            selector.push(MediaTime::from_seconds(2.0), &[f32::NAN, 1.0]),
            Err(SelectError::InvalidEmbedding { .. })
        ));
        // The selector is still usable after refusing frames.
        selector
            .push(MediaTime::from_seconds(2.0), &[0.0, 1.0])
            .unwrap();
        let selection = selector.finish(MediaTime::from_seconds(3.0));
        assert_eq!(selection.scenes.len(), 1);
        assert_eq!(selection.timeline.len(), 2);
    }

    #[test]
    fn no_frames_means_no_scenes() {
        let selector = SceneSelector::new(SelectConfig::default()).unwrap();
        let selection = selector.finish(MediaTime::from_seconds(5.0));
        assert!(selection.scenes.is_empty() && selection.timeline.is_empty());
    }
}
