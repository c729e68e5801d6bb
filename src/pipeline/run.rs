//! The main job: decode -> embed -> select -> caption -> collect, each stage a named function
//! on its own thread, joined by bounded queues. Captioning of a scene starts as soon as the
//! selector closes it, while later frames are still being decoded and embedded. The embed
//! and caption stages are shared with the live graph (`super::live`), which differs only in
//! its source, its selection and its sink.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use image::RgbImage;

use super::frames::gap_records;
use super::stages::{waiting_queue, Outlet};
use super::{PipelineConfig, PipelineError, Progress, Stages, StopSignal};
use crate::analysis::{
    Analysis, DecodeGapRecord, FrameEmbeddings, KeyframeRecord, ModelSource, ModelsRecord,
    SceneSpan, Timings, VideoRecord, SCHEMA,
};
use crate::caption::KeyframeCaptioner;
use crate::models::roles::Embedder;
use crate::select::{Scene, SceneSelector};
use crate::time::MediaTime;
use crate::video::{DecodeOptions, Frame, FrameReader, FrameSeeker, ResizeMode, Size, VideoInfo};

/// Decoded frames waiting for the embedder, in batches.
const FRAME_QUEUE_BATCHES: usize = 2;
/// Closed scenes waiting for the captioner.
const SCENE_QUEUE: usize = 16;

/// The loaded models of an analysis; handed back afterwards so that a library of videos
/// loads them once.
pub struct Models {
    /// The image embedder.
    pub embedder: Box<dyn Embedder>,
    /// Where the embedder's weights came from and which they are.
    pub embedder_source: ModelSource,
    /// The captioner and where its weights came from; `None` selects keyframes only.
    pub captioner: Option<(KeyframeCaptioner, ModelSource)>,
}

/// The models and settings of one analysis.
pub struct AnalysisJob {
    /// Every stage's settings; recorded in the document.
    pub config: PipelineConfig,
    /// The video file's SHA-256 (hex), for the document and the cache.
    pub video_sha256: String,
    /// The models.
    pub models: Models,
}

/// Things worth telling the user while the job runs.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// A keyframe was chosen (and captioned, when a captioner runs).
    Keyframe {
        /// Its position among the keyframes.
        index: usize,
        /// When it is shown.
        time: MediaTime,
        /// The scene it represents: the span its caption covers in subtitles.
        scene: SceneSpan,
        /// Its caption, if captioned.
        caption: Option<String>,
    },
    /// Decoding skipped damaged data or ended early (a damaged or truncated file); the
    /// frames decoded are kept.
    Warning(String),
}

/// What an analysis produced: the document (without its sidecar path set) and the per-frame
/// data for the sidecar.
pub struct AnalysisOutput {
    /// The analysis document.
    pub analysis: Analysis,
    /// Every sampled frame's time, change score and embedding.
    pub frames: FrameEmbeddings,
    /// The models, for the next video.
    pub models: Models,
}

/// Runs the analysis of `video`. `on_event` is called from the stage threads as keyframes
/// are made; progress advances by media time embedded and by keyframes captioned.
///
/// The stage graph: [`decode_file`] -> [`embed_frames`] -> [`select_scenes`] ->
/// [`caption_keyframes`] -> [`collect_keyframes`], each on its own thread.
pub fn analyse(
    video: &Path,
    job: AnalysisJob,
    signal: StopSignal,
    progress: &Progress,
    on_event: impl Fn(RunEvent) + Send + Sync + 'static,
) -> Result<AnalysisOutput, PipelineError> {
    let started = Instant::now();
    let AnalysisJob {
        config,
        video_sha256,
        models:
            Models {
                embedder,
                embedder_source,
                captioner,
            },
    } = job;
    let (size, mode) = crate::embed::frame_geometry(embedder.as_ref());
    let options = DecodeOptions {
        sample_rate: config.decode.sample_fps,
        size,
        mode,
        keyframes_only: config.decode.codec_keyframes,
        start: MediaTime::from_seconds(config.decode.start_s.unwrap_or(0.0)),
        end: config.decode.end_s.map(MediaTime::from_seconds),
        decode_every_frame: false,
    };
    let reader = FrameReader::open(video, options)?;
    let info = reader.info().clone();
    // The last scene ends where the range analysed ends.
    let duration = MediaTime::from_seconds(match options.end {
        Some(end) if info.duration_s <= 0.0 || end.seconds() < info.duration_s => end.seconds(),
        _ => info.duration_s,
    });
    let selector = SceneSelector::new(config.select.clone())
        .map_err(|error| PipelineError::Failed {
            stage: "select".into(),
            message: error.to_string(),
        })?
        .starting_at(options.start);
    let seeker = match captioner {
        Some(_) => Some(FrameSeeker::open(video, Size::Native, ResizeMode::Crop)?),
        None => None,
    };
    let embedder_name = embedder.name().to_string();
    let captioner_record = captioner
        .as_ref()
        .map(|(model, source)| source.record(model.name()));
    let (captioner, captioner_source) = captioner.unzip();
    let batch_size = config.embed.batch_size;
    let on_event = Arc::new(on_event);

    let (frame_outlet, frames) = waiting_queue(batch_size * FRAME_QUEUE_BATCHES);
    let (embedded_outlet, embedded) = waiting_queue(batch_size);
    let (scene_outlet, scenes) = waiting_queue(SCENE_QUEUE);
    let (captioned_outlet, captioned) = waiting_queue(SCENE_QUEUE);
    let mut stages = Stages::new(signal);
    let decode_events = Arc::clone(&on_event);
    let decoding = stages.spawn("decode", move |signal| {
        decode_file(signal, reader, &frame_outlet, |warning| {
            decode_events(RunEvent::Warning(warning))
        })
    });
    let embedding = stages.spawn("embed", move |signal| {
        embed_frames(
            signal,
            embedder,
            batch_size,
            Batching::Full,
            &frames,
            &embedded_outlet,
        )
    });
    let bar = progress.clone();
    let selecting = stages.spawn("select", move |signal| {
        select_scenes(signal, selector, duration, &embedded, &scene_outlet, &bar)
    });
    let caption_bar = progress.clone();
    let captioning = stages.spawn("caption", move |signal| {
        caption_keyframes(
            signal,
            captioner,
            seeker,
            &scenes,
            &captioned_outlet,
            CaptionPace::Continuous,
            || caption_bar.keyframe_captioned(),
        )
    });
    let caption_events = Arc::clone(&on_event);
    let collecting = stages.spawn("collect", move |signal| {
        collect_keyframes(signal, &captioned, |event| caption_events(event))
    });
    let (decoded, embedded, selected, captioned, keyframes) = (
        decoding.join(),
        embedding.join(),
        selecting.join(),
        captioning.join(),
        collecting.join(),
    );
    let (decoded, embedded, selected, captioned, keyframes) =
        (decoded?, embedded?, selected?, captioned?, keyframes?);
    let analysis = Analysis {
        schema: SCHEMA.to_string(),
        video: video_record(video, &info, video_sha256),
        models: ModelsRecord {
            embedder: embedder_source.record(&embedder_name),
            captioner: captioner_record,
        },
        pipeline: config.to_json(),
        keyframes,
        summary: None,
        chapters: Vec::new(),
        embeddings: None,
        timings: Timings {
            decode_s: decoded.time.as_secs_f64(),
            embed_s: embedded.time.as_secs_f64(),
            select_s: selected.time.as_secs_f64(),
            caption_s: captioned.time.as_secs_f64(),
            total_s: started.elapsed().as_secs_f64(),
        },
        decode_gaps: decoded.gaps,
        live: None,
    };
    Ok(AnalysisOutput {
        analysis,
        frames: selected.frames,
        models: Models {
            embedder: embedded.embedder,
            embedder_source,
            captioner: captioned.captioner.zip(captioner_source),
        },
    })
}

/// A sampled frame on its way to the embedder, with what travels with it: nothing for a
/// file (the captioner seeks the keyframe's picture back), the full-size picture for a live
/// stream, which cannot be seeked.
pub(super) struct SourceFrame<P> {
    /// The frame at the embedder's size.
    pub frame: Frame,
    /// What travels with it.
    pub payload: P,
}

/// A sampled frame's time and embedding, with what travelled with it.
pub(super) struct EmbeddedFrame<P> {
    /// When the frame is shown.
    pub time: MediaTime,
    /// The embedder's vector for it.
    pub embedding: Vec<f32>,
    /// What travelled with it.
    pub payload: P,
}

/// A keyframe to describe: its scene and, from a source that cannot be seeked, its picture.
pub(super) struct KeyframeJob {
    /// Its position among the keyframes.
    pub index: usize,
    /// When it is shown.
    pub time: MediaTime,
    /// Where its scene starts.
    pub scene_start: MediaTime,
    /// Where its scene ends, when known (a live scene's end is not known yet).
    pub scene_end: Option<MediaTime>,
    /// How far its scene moved from the previous one (cosine distance).
    pub change: f32,
    /// The picture, when the source cannot be seeked back to it.
    pub picture: Option<RgbImage>,
}

/// A keyframe with its caption (none without a captioner).
pub(super) struct CaptionedKeyframe {
    /// The keyframe as selected.
    pub job: KeyframeJob,
    /// Its caption.
    pub caption: Option<String>,
}

/// What the decode stage hands back.
struct Decoded {
    /// Time spent decoding.
    time: Duration,
    /// Damaged stretches, as the document records them.
    gaps: Vec<DecodeGapRecord>,
}

/// What the embed stage hands back.
pub(super) struct Embedded {
    /// The embedder, for the next video.
    pub embedder: Box<dyn Embedder>,
    /// Time spent embedding.
    pub time: Duration,
}

/// What the select stage hands back.
struct Selected {
    /// Every sampled frame's time, change score and embedding.
    frames: FrameEmbeddings,
    /// Time spent selecting.
    time: Duration,
}

/// What the caption stage hands back.
pub(super) struct Captioned {
    /// The captioner, for the next video.
    pub captioner: Option<KeyframeCaptioner>,
    /// Time spent captioning.
    pub time: Duration,
}

/// How often the caption stage may start a caption.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum CaptionPace {
    /// As soon as the previous one is done.
    Continuous,
    /// At most one caption per this interval (the rest of the time is left to the other
    /// stages); keyframes that wait too long are dropped by a dropping queue before it.
    AtMostEvery(Duration),
}

/// Source stage for a file: sampled frames in time order. Damaged stretches and an early
/// end are told to `warn` once decoding is done.
fn decode_file(
    signal: &StopSignal,
    mut reader: FrameReader,
    frames: &Outlet<SourceFrame<()>>,
    warn: impl Fn(String),
) -> Result<Decoded, PipelineError> {
    let mut time = Duration::ZERO;
    loop {
        let clock = Instant::now();
        let frame = reader.next_frame()?;
        time += clock.elapsed();
        let Some(frame) = frame else { break };
        frames.send(signal, SourceFrame { frame, payload: () })?;
    }
    let report = reader.report();
    for gap in &report.gaps {
        warn(format!("{} to {}: {}", gap.start, gap.end, gap.reason()));
    }
    if let Some(warning) = report.stopped_early.clone() {
        warn(warning);
    }
    Ok(Decoded {
        time,
        gaps: gap_records(&report.gaps),
    })
}

/// When the embed stage runs a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Batching {
    /// When `batch_size` frames are there (or the input ended): the fastest for a file.
    Full,
    /// As soon as no more frames are waiting: a live frame is not held back for later ones.
    Available,
}

/// Embed stage: frames in batches of up to `batch_size` through the embedder, handed on
/// one by one in time order.
pub(super) fn embed_frames<P>(
    signal: &StopSignal,
    embedder: Box<dyn Embedder>,
    batch_size: usize,
    batching: Batching,
    frames: &Receiver<SourceFrame<P>>,
    embedded: &Outlet<EmbeddedFrame<P>>,
) -> Result<Embedded, PipelineError> {
    let mut time = Duration::ZERO;
    let mut batch: Vec<SourceFrame<P>> = Vec::with_capacity(batch_size);
    let mut finished = false;
    while !finished {
        match signal.recv(frames)? {
            Some(frame) => batch.push(frame),
            None => finished = true,
        }
        let batch_ready = batch.len() >= batch_size
            || (!batch.is_empty()
                && (finished || batching == Batching::Available && frames.is_empty()));
        if !batch_ready {
            continue;
        }
        let pictures: Vec<_> = batch
            .iter()
            .map(|source| source.frame.image.clone())
            .collect();
        let clock = Instant::now();
        let embeddings = embedder.embed_frames(&pictures)?;
        time += clock.elapsed();
        for (source, embedding) in batch.drain(..).zip(embeddings) {
            let frame = EmbeddedFrame {
                time: source.frame.time,
                embedding,
                payload: source.payload,
            };
            embedded.send(signal, frame)?;
        }
    }
    Ok(Embedded { embedder, time })
}
fn video_record(path: &Path, info: &VideoInfo, sha256: String) -> VideoRecord {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    VideoRecord {
        path: path.display().to_string(),
        sha256,
        duration_s: info.duration_s,
        width: info.width,
        height: info.height,
        fps: info.fps,
    }
}

/// Select stage for a file: scenes out as soon as they are final, the rest when the video
/// ends at `end`; every frame's embedding and change score kept for the sidecar.
fn select_scenes(
    signal: &StopSignal,
    mut selector: SceneSelector,
    end: MediaTime,
    embedded: &Receiver<EmbeddedFrame<()>>,
    scenes: &Outlet<KeyframeJob>,
    progress: &Progress,
) -> Result<Selected, PipelineError> {
    let mut time = Duration::ZERO;
    let mut frames = FrameEmbeddings {
        time_s: Vec::new(),
        change: Vec::new(),
        embeddings: Vec::new(),
        dim: 0,
        threshold: None,
    };
    let mut index = 0;
    let mut hand_on = |scene: Scene| {
        let job = KeyframeJob {
            index,
            time: scene.keyframe,
            scene_start: scene.start,
            scene_end: Some(scene.end),
            change: scene.change,
            picture: None,
        };
        index += 1;
        progress.keyframe_found();
        scenes.send(signal, job).map(drop)
    };
    while let Some(frame) = signal.recv(embedded)? {
        frames.dim = frame.embedding.len();
        frames.time_s.push(frame.time.seconds());
        frames.embeddings.extend_from_slice(&frame.embedding);
        let clock = Instant::now();
        let closed = selector
            .push(frame.time, &frame.embedding)
            .map_err(select_failed)?;
        time += clock.elapsed();
        for scene in closed {
            hand_on(scene)?;
        }
        progress.advance_to(frame.time);
    }
    let clock = Instant::now();
    let selection = selector.finish(end);
    time += clock.elapsed();
    frames.change = selection
        .timeline
        .iter()
        .map(|sample| sample.change)
        .collect();
    frames.threshold = selection.uniform_threshold();
    for scene in selection.scenes {
        hand_on(scene)?;
    }
    progress.media_done();
    Ok(Selected { frames, time })
}

/// A selection error as the select stage's failure.
pub(super) fn select_failed(error: impl std::fmt::Display) -> PipelineError {
    PipelineError::Failed {
        stage: "select".into(),
        message: error.to_string(),
    }
}

/// Caption stage: each keyframe's picture (carried, or seeked from the video) described by
/// the captioner, handed on in order; `captioned` is called after each one.
pub(super) fn caption_keyframes<O: From<CaptionedKeyframe>>(
    signal: &StopSignal,
    captioner: Option<KeyframeCaptioner>,
    mut seeker: Option<FrameSeeker>,
    jobs: &Receiver<KeyframeJob>,
    out: &Outlet<O>,
    pace: CaptionPace,
    captioned: impl Fn(),
) -> Result<Captioned, PipelineError> {
    let mut time = Duration::ZERO;
    while let Some(mut job) = signal.recv(jobs)? {
        let clock = Instant::now();
        let caption = match &captioner {
            Some(model) => {
                let picture = match (job.picture.take(), &mut seeker) {
                    (Some(picture), _) => picture,
                    (None, Some(seeker)) => seeker.frame_at(job.time)?.image,
                    (None, None) => {
                        return Err(PipelineError::Failed {
                            stage: "caption".into(),
                            message: format!("no picture of the keyframe at {}", job.time),
                        })
                    }
                };
                Some(model.caption(&picture, &mut |_| {})?.trim().to_string())
            }
            None => None,
        };
        let spent = clock.elapsed();
        time += spent;
        captioned();
        out.send(signal, CaptionedKeyframe { job, caption }.into())?;
        if let CaptionPace::AtMostEvery(interval) = pace {
            if let Some(rest) = interval.checked_sub(spent) {
                signal.sleep(rest)?;
            }
        }
    }
    Ok(Captioned { captioner, time })
}

/// Sink stage for a file: the captioned keyframes as the document records them, each told
/// to `on_event` as it comes.
fn collect_keyframes(
    signal: &StopSignal,
    captioned: &Receiver<CaptionedKeyframe>,
    on_event: impl Fn(RunEvent),
) -> Result<Vec<KeyframeRecord>, PipelineError> {
    let mut keyframes = Vec::new();
    while let Some(CaptionedKeyframe { job, caption }) = signal.recv(captioned)? {
        let span = SceneSpan {
            start_s: job.scene_start.seconds(),
            end_s: job.scene_end.unwrap_or(job.time).seconds(),
        };
        on_event(RunEvent::Keyframe {
            index: job.index,
            time: job.time,
            scene: span,
            caption: caption.clone(),
        });
        keyframes.push(KeyframeRecord {
            index: job.index,
            time_s: job.time.seconds(),
            timecode: job.time.timecode(),
            scene: span,
            change: job.change,
            caption,
        });
    }
    Ok(keyframes)
}
