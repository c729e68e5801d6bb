//! The live watch: the stage graph of a file run with a live source and a segmenting sink.
//!
//! ```text
//! read_live ──► embed_frames ──► select_live ──► caption_keyframes ──► write_live
//!  (reconnects)  (shared)       (LiveSelector)    (shared)            JSON events,
//!        └─ drops the oldest frame     └─ drops the oldest keyframe   segment documents
//! ```
//!
//! Frames are sampled by the stream's presentation time; times count from the start of the
//! session and continue on the wall clock across reconnections. The queues in front of the
//! embedder and the captioner drop their oldest item when full, so the watch never falls
//! behind the source; drops are counted. A keyframe is announced as soon as its scene's
//! start is final ([`SelectConfig::live_finality_s`](crate::select::SelectConfig::live_finality_s)),
//! and told as soon as it is captioned. Every `segment` of session time, an analysis
//! document and its embeddings sidecar are written atomically.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Receiver;
use image::RgbImage;

use super::job::store_analysis;
use super::run::{
    caption_keyframes, embed_frames, select_failed, Batching, CaptionPace, CaptionedKeyframe,
    EmbeddedFrame, KeyframeJob, SourceFrame,
};
use super::stages::{dropping_queue, waiting_queue, Outlet};
use super::{Models, PipelineConfig, PipelineError, Stages, StopSignal};
use crate::analysis::{
    Analysis, DecodeGapRecord, FrameEmbeddings, KeyframeRecord, LiveRecord, ModelsRecord,
    SceneSpan, Timings, VideoRecord, SCHEMA,
};
use crate::select::{LiveSelector, StartedScene};
use crate::time::{rfc3339, MediaTime};
use crate::video::{DecodeOptions, FrameReader, LiveSource, VideoInfo, Watchdog};

/// Sampled frames waiting for the embedder; older ones are dropped.
const FRAME_QUEUE: usize = 8;
/// Keyframes waiting for the captioner; older ones are dropped (left without a caption).
const KEYFRAME_QUEUE: usize = 2;
/// Items waiting for the sink.
const SINK_QUEUE: usize = 64;
/// The first wait before reconnecting; it doubles after each failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// How often the sink hands freed memory back to the system.
const RELEASE_INTERVAL: Duration = Duration::from_secs(5);

/// How to watch a live source.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// The source.
    pub source: LiveSource,
    /// A source silent this long is taken as lost.
    pub stall: Duration,
    /// Whether a lost source is reconnected (stdin never is).
    pub reconnect: bool,
    /// Session time covered by each analysis document.
    pub segment: Duration,
    /// Segment documents are written as `PREFIX-000.analysis.json`, ...
    pub prefix: PathBuf,
    /// How often the captioner may start a caption (`None`: as soon as it is free).
    pub caption_interval: Option<Duration>,
}

impl WatchSettings {
    /// The document of segment `index`: `PREFIX-000.analysis.json`, ...
    pub fn segment_document(&self, index: usize) -> PathBuf {
        let mut name = self.prefix.as_os_str().to_os_string();
        name.push(format!("-{index:03}.analysis.json"));
        PathBuf::from(name)
    }
}

/// What a watch tells as it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveEvent {
    /// A keyframe was captioned, or its caption was dropped.
    Keyframe(LiveKeyframe),
    /// The source came back after it was lost: nothing was seen from `start` to `end`.
    Gap {
        /// The last frame's time before the loss (session seconds).
        start: MediaTime,
        /// The first frame's time after it.
        end: MediaTime,
        /// Why the source was lost.
        reason: String,
    },
    /// The source was lost; the watch reconnects.
    Lost {
        /// Why.
        reason: String,
    },
    /// A segment's document and sidecar were written.
    SegmentWritten {
        /// Its number.
        index: usize,
        /// The document.
        document: PathBuf,
        /// Keyframes in it.
        keyframes: usize,
        /// Frames dropped in it before embedding.
        dropped_frames: u64,
        /// Keyframes in it left without a caption.
        dropped_captions: u64,
    },
}

/// A keyframe of the stream as it is told.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveKeyframe {
    /// Its position among the session's keyframes.
    pub index: usize,
    /// When it was shown, in session seconds.
    pub time: MediaTime,
    /// When it was shown, on the wall clock.
    pub wall_clock: SystemTime,
    /// Where its scene starts, in session seconds.
    pub scene_start: MediaTime,
    /// How far its scene moved from the previous one (cosine distance).
    pub change: f32,
    /// Its caption; `None` when captioning is off or its caption was dropped.
    pub caption: Option<String>,
    /// Whether the caption was dropped because the captioner could not keep up.
    pub caption_dropped: bool,
    /// Seconds from the arrival of the scene's first frame (as it came out of the demuxer)
    /// to now, when the keyframe is told.
    pub latency_s: f64,
    /// Frames dropped so far in the session before embedding.
    pub dropped_frames: u64,
    /// Captions dropped so far in the session.
    pub dropped_captions: u64,
}

/// What a finished watch reports.
pub struct WatchReport {
    /// Keyframes told.
    pub keyframes: usize,
    /// The segment documents written, in order.
    pub documents: Vec<PathBuf>,
    /// Where the session ended, in session seconds.
    pub end: MediaTime,
    /// Frames dropped before embedding.
    pub dropped_frames: u64,
    /// Keyframes left without a caption.
    pub dropped_captions: u64,
    /// The models, handed back.
    pub models: Models,
}

/// What travels with a live frame: its picture at native size, for the captioner, and when
/// it came out of the demuxer.
struct LivePayload {
    picture: RgbImage,
    arrived: MediaTime,
}

/// The session's clock: time 0 is when the watch started.
#[derive(Debug, Clone, Copy)]
struct SessionClock {
    started: Instant,
    started_at: SystemTime,
}

impl SessionClock {
    fn now(&self) -> MediaTime {
        MediaTime::from_seconds(self.started.elapsed().as_secs_f64())
    }

    fn wall_clock(&self, time: MediaTime) -> SystemTime {
        self.started_at + Duration::from_secs_f64(time.seconds().max(0.0))
    }
}

/// What the stages hand the sink, in the order each stage makes them.
enum LiveItem {
    /// The source connected; what FFmpeg reports about it.
    Connected(VideoInfo),
    /// The source was lost, for this reason; the watch reconnects.
    Lost(String),
    /// The source came back after a loss.
    Gap(DecodeGapRecord),
    /// A sampled frame was selected on.
    Frame {
        time: MediaTime,
        arrived: MediaTime,
        embedding: Vec<f32>,
        change: f32,
    },
    /// Every scene starting before this time has been announced.
    Settled(MediaTime),
    /// A scene was announced; its keyframe goes to the captioner.
    Scene { index: usize, scene: StartedScene },
    /// A keyframe was captioned.
    Captioned(CaptionedKeyframe),
    /// A keyframe's caption was dropped.
    CaptionDropped(usize),
}

impl From<CaptionedKeyframe> for LiveItem {
    fn from(keyframe: CaptionedKeyframe) -> Self {
        LiveItem::Captioned(keyframe)
    }
}

/// Drop counters shared by the queues and the sink.
#[derive(Debug, Default, Clone)]
struct Drops {
    frames: Arc<AtomicU64>,
    captions: Arc<AtomicU64>,
}

/// Watches `settings.source` with `models` until it ends, or until Ctrl-C when `signal`
/// was made to end gracefully; `on_event` is called from the sink's thread.
pub fn watch(
    config: &PipelineConfig,
    models: Models,
    settings: &WatchSettings,
    signal: StopSignal,
    on_event: impl Fn(LiveEvent) + Send + 'static,
) -> Result<WatchReport, PipelineError> {
    let clock = SessionClock {
        started: Instant::now(),
        started_at: SystemTime::now(),
    };
    let Models {
        embedder,
        embedder_source,
        captioner,
    } = models;
    let (size, mode) = crate::embed::frame_geometry(embedder.as_ref());
    let options = DecodeOptions {
        sample_rate: config.decode.sample_fps,
        size,
        mode,
        keyframes_only: config.decode.codec_keyframes,
        ..DecodeOptions::default()
    };
    let selector = LiveSelector::new(config.select.clone()).map_err(select_failed)?;
    let models_record = ModelsRecord {
        embedder: embedder_source.record(embedder.name()),
        captioner: captioner
            .as_ref()
            .map(|(model, source)| source.record(model.name())),
    };
    let (captioner, captioner_source) = captioner.unzip();
    let (reader, watchdog) = connect_first(&signal, settings, options)?;

    let drops = Drops::default();
    let (frame_outlet, frames) = dropping_queue(FRAME_QUEUE, Arc::clone(&drops.frames));
    let (embedded_outlet, embedded) = waiting_queue(FRAME_QUEUE);
    let (job_outlet, jobs) = dropping_queue(KEYFRAME_QUEUE, Arc::clone(&drops.captions));
    let (sink_outlet, items) = waiting_queue(SINK_QUEUE);
    let (source_sink, select_sink, caption_sink) =
        (sink_outlet.clone(), sink_outlet.clone(), sink_outlet);
    let batch_size = config.embed.batch_size;
    let pace = match settings.caption_interval {
        Some(interval) => CaptionPace::AtMostEvery(interval),
        None => CaptionPace::Continuous,
    };
    let mut stages = Stages::new(signal);
    let source_settings = settings.clone();
    let reading = stages.spawn("source", move |signal| {
        read_live(
            signal,
            &source_settings,
            Source {
                reader,
                watchdog,
                options,
                clock,
            },
            &frame_outlet,
            &source_sink,
        )
    });
    let embedding = stages.spawn("embed", move |signal| {
        embed_frames(
            signal,
            embedder,
            batch_size,
            Batching::Available,
            &frames,
            &embedded_outlet,
        )
    });
    let selecting = stages.spawn("select", move |signal| {
        select_live(signal, selector, &embedded, &job_outlet, &select_sink)
    });
    let captioning = stages.spawn("caption", move |signal| {
        caption_keyframes(signal, captioner, None, &jobs, &caption_sink, pace, || {})
    });
    let segments = Segments {
        settings: settings.clone(),
        pipeline: config.to_json(),
        models: models_record,
        clock,
        drops: drops.clone(),
    };
    let writing = stages.spawn("write", move |signal| {
        write_live(signal, &items, segments, on_event)
    });
    let (read, embedded, selected, captioned, written) = (
        reading.join(),
        embedding.join(),
        selecting.join(),
        captioning.join(),
        writing.join(),
    );
    let (end, embedded, (), captioned, written) =
        (read?, embedded?, selected?, captioned?, written?);
    Ok(WatchReport {
        keyframes: written.keyframes,
        documents: written.documents,
        end,
        dropped_frames: drops.frames.load(Ordering::SeqCst),
        dropped_captions: drops.captions.load(Ordering::SeqCst),
        models: Models {
            embedder: embedded.embedder,
            embedder_source,
            captioner: captioned.captioner.zip(captioner_source),
        },
    })
}

/// A watchdog that gives up on a stop, an end asked for, or `stall` of silence.
fn watchdog_for(signal: &StopSignal, stall: Duration) -> Arc<Watchdog> {
    let signal = signal.clone();
    Watchdog::new(move || signal.is_stopped() || signal.is_ending(), stall)
}

/// The live source's first connection and what reconnecting needs.
struct Source {
    reader: FrameReader,
    watchdog: Arc<Watchdog>,
    options: DecodeOptions,
    clock: SessionClock,
}

/// Source stage: sampled frames (with their native pictures) on the session's time, across
/// reconnections; returns where the session ended.
fn read_live(
    signal: &StopSignal,
    settings: &WatchSettings,
    source: Source,
    frames: &Outlet<SourceFrame<LivePayload>>,
    sink: &Outlet<LiveItem>,
) -> Result<MediaTime, PipelineError> {
    let Source {
        mut reader,
        mut watchdog,
        options,
        clock,
    } = source;
    let mut last_time: Option<MediaTime> = None;
    loop {
        sink.send(signal, LiveItem::Connected(reader.info().clone()))?;
        // Stream time 0 of this connection, on the session's time.
        let mut offset: Option<f64> = None;
        // A decoding error ends this connection as a read error does.
        let mut failure = None;
        loop {
            let (frame, picture) = match reader.next_frame_with_picture() {
                Ok(Some(delivered)) => delivered,
                Ok(None) => break,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            };
            let stream_time = frame.time.seconds();
            let arrived = clock.now();
            let offset = *offset.get_or_insert_with(|| arrived.seconds() - stream_time);
            let time = MediaTime::from_seconds(offset + stream_time);
            if last_time.is_some_and(|last| time <= last) {
                continue;
            }
            last_time = Some(time);
            let Some(picture) = picture else { continue };
            let frame = crate::video::Frame { time, ..frame };
            frames.send(
                signal,
                SourceFrame {
                    frame,
                    payload: LivePayload { picture, arrived },
                },
            )?;
        }
        signal.check()?;
        let end = last_time.unwrap_or_else(|| clock.now());
        if signal.is_ending() {
            return Ok(end);
        }
        if !settings.reconnect || !settings.source.can_reconnect() {
            return match failure {
                Some(error) => Err(error.into()),
                None => Ok(end),
            };
        }
        let reason = if watchdog.stalled() {
            format!("no data for {} s", settings.stall.as_secs_f64())
        } else {
            match (failure, reader.read_error()) {
                (Some(error), _) => error.to_string(),
                (None, Some(error)) => format!("read error: {error}"),
                (None, None) => "the stream ended".to_string(),
            }
        };
        sink.send(signal, LiveItem::Lost(reason.clone()))?;
        drop(reader);
        let Some((next, next_watchdog)) = reconnect(signal, settings, options)? else {
            return Ok(end);
        };
        sink.send(
            signal,
            LiveItem::Gap(DecodeGapRecord {
                start_s: end.seconds(),
                end_s: clock.now().seconds(),
                reason: format!("the source was lost ({reason}) and reconnected"),
            }),
        )?;
        reader = next;
        watchdog = next_watchdog;
    }
}

/// Opens the source for the first time, trying again (a camera or server still starting)
/// until `settings.stall` has passed: then the watch fails with the last error, so a wrong
/// URL is not retried for ever.
fn connect_first(
    signal: &StopSignal,
    settings: &WatchSettings,
    options: DecodeOptions,
) -> Result<(FrameReader, Arc<Watchdog>), PipelineError> {
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let watchdog = watchdog_for(signal, settings.stall);
        match FrameReader::open_live(&settings.source, options, Arc::clone(&watchdog)) {
            Ok(reader) => return Ok((reader.with_native_pictures(), watchdog)),
            Err(error)
                if !settings.source.can_reconnect()
                    || started.elapsed() + backoff > settings.stall =>
            {
                return Err(error.into())
            }
            Err(_) => {
                signal.sleep(backoff)?;
                signal.check()?;
                if signal.is_ending() {
                    return Err(PipelineError::Interrupted);
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Opens the source again, waiting longer after each failed attempt; `None` when the
/// watch was asked to end meanwhile.
fn reconnect(
    signal: &StopSignal,
    settings: &WatchSettings,
    options: DecodeOptions,
) -> Result<Option<(FrameReader, Arc<Watchdog>)>, PipelineError> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        signal.sleep(backoff)?;
        if signal.is_ending() {
            return Ok(None);
        }
        let watchdog = watchdog_for(signal, settings.stall);
        match FrameReader::open_live(&settings.source, options, Arc::clone(&watchdog)) {
            Ok(reader) => return Ok(Some((reader.with_native_pictures(), watchdog))),
            Err(_) if signal.is_ending() => return Ok(None),
            Err(_) => backoff = (backoff * 2).min(MAX_BACKOFF),
        }
    }
}

/// Select stage for a stream: announces scenes as their starts become final and hands
/// their keyframes (with the pictures, kept for as long as a frame may become a keyframe)
/// to the captioner's dropping queue; tells the sink every frame, scene and drop.
fn select_live(
    signal: &StopSignal,
    mut selector: LiveSelector,
    embedded: &Receiver<EmbeddedFrame<LivePayload>>,
    jobs: &Outlet<KeyframeJob>,
    sink: &Outlet<LiveItem>,
) -> Result<(), PipelineError> {
    let mut pictures: VecDeque<(usize, RgbImage)> = VecDeque::new();
    let mut sample = 0;
    let mut index = 0;
    let mut last_time = None;
    let mut announce = |scenes: Vec<StartedScene>,
                        pictures: &VecDeque<(usize, RgbImage)>|
     -> Result<(), PipelineError> {
        for scene in scenes {
            let picture = pictures
                .iter()
                .find(|(kept, _)| *kept == scene.keyframe_sample)
                .map(|(_, picture)| picture.clone());
            sink.send(signal, LiveItem::Scene { index, scene })?;
            let job = KeyframeJob {
                index,
                time: scene.keyframe,
                scene_start: scene.start,
                scene_end: None,
                change: scene.change,
                picture,
            };
            index += 1;
            if let Some(dropped) = jobs.send(signal, job)? {
                sink.send(signal, LiveItem::CaptionDropped(dropped.index))?;
            }
        }
        Ok(())
    };
    while let Some(frame) = signal.recv(embedded)? {
        pictures.push_back((sample, frame.payload.picture));
        sample += 1;
        last_time = Some(frame.time);
        let started = selector
            .push(frame.time, &frame.embedding)
            .map_err(select_failed)?;
        let change = selector
            .take_timeline()
            .last()
            .map_or(0.0, |scored| scored.change);
        sink.send(
            signal,
            LiveItem::Frame {
                time: frame.time,
                arrived: frame.payload.arrived,
                embedding: frame.embedding,
                change,
            },
        )?;
        announce(started, &pictures)?;
        let possible = selector.possible_keyframes();
        pictures.retain(|(kept, _)| possible.binary_search(kept).is_ok());
        sink.send(signal, LiveItem::Settled(selector.settled_until()))?;
    }
    let end = last_time.unwrap_or(MediaTime::ZERO);
    let rest = selector.finish(end);
    announce(rest, &pictures)
}

/// What the sink needs to write segment documents.
struct Segments {
    settings: WatchSettings,
    pipeline: serde_json::Value,
    models: ModelsRecord,
    clock: SessionClock,
    drops: Drops,
}

/// What the sink hands back.
struct Written {
    keyframes: usize,
    documents: Vec<PathBuf>,
}

/// A scene announced to the sink, until its segment is written.
struct Announced {
    index: usize,
    scene: StartedScene,
    caption: Option<String>,
    /// Captioned or dropped.
    resolved: bool,
    dropped: bool,
    told: bool,
}

/// A sampled frame kept for its segment's sidecar.
struct KeptFrame {
    time: MediaTime,
    /// When it came out of the demuxer, in session seconds.
    arrived: MediaTime,
    embedding: Vec<f32>,
    change: f32,
}

/// The sink's state: what is not yet in a written segment.
struct Sink<F: Fn(LiveEvent)> {
    segments: Segments,
    on_event: F,
    info: Option<VideoInfo>,
    /// The open segment's number.
    segment: usize,
    frames: VecDeque<KeptFrame>,
    gaps: Vec<DecodeGapRecord>,
    announced: VecDeque<Announced>,
    settled: MediaTime,
    last_frame: Option<MediaTime>,
    /// The session's frame drops when the open segment started.
    dropped_frames_before: u64,
    written: Written,
    /// When freed memory was last handed back to the system.
    released: Instant,
}

/// Sink stage: tells each keyframe as soon as it is captioned (in order), tells gaps, and
/// writes each segment's document and sidecar once everything in it is final. After a hard
/// stop, what was made so far is written before the stop is reported.
fn write_live(
    signal: &StopSignal,
    items: &Receiver<LiveItem>,
    segments: Segments,
    on_event: impl Fn(LiveEvent),
) -> Result<Written, PipelineError> {
    let mut sink = Sink {
        segments,
        on_event,
        info: None,
        segment: 0,
        frames: VecDeque::new(),
        gaps: Vec::new(),
        announced: VecDeque::new(),
        settled: MediaTime::ZERO,
        last_frame: None,
        dropped_frames_before: 0,
        written: Written {
            keyframes: 0,
            documents: Vec::new(),
        },
        released: Instant::now(),
    };
    loop {
        match signal.recv(items) {
            Ok(Some(item)) => sink.take(item)?,
            Ok(None) => break,
            Err(stop) => {
                sink.close_all()?;
                return Err(stop);
            }
        }
    }
    sink.close_all()?;
    Ok(sink.written)
}

impl<F: Fn(LiveEvent)> Sink<F> {
    fn segment_span(&self, index: usize) -> (MediaTime, MediaTime) {
        let length = self.segments.settings.segment.as_secs_f64();
        (
            MediaTime::from_seconds(index as f64 * length),
            MediaTime::from_seconds((index + 1) as f64 * length),
        )
    }

    fn take(&mut self, item: LiveItem) -> Result<(), PipelineError> {
        match item {
            LiveItem::Connected(info) => self.info = Some(info),
            LiveItem::Lost(reason) => (self.on_event)(LiveEvent::Lost { reason }),
            LiveItem::Gap(gap) => {
                (self.on_event)(LiveEvent::Gap {
                    start: MediaTime::from_seconds(gap.start_s),
                    end: MediaTime::from_seconds(gap.end_s),
                    reason: gap.reason.clone(),
                });
                self.gaps.push(gap);
            }
            LiveItem::Frame {
                time,
                arrived,
                embedding,
                change,
            } => {
                self.last_frame = Some(time);
                self.frames.push_back(KeptFrame {
                    time,
                    arrived,
                    embedding,
                    change,
                });
            }
            LiveItem::Settled(time) => self.settled = time,
            LiveItem::Scene { index, scene } => self.announced.push_back(Announced {
                index,
                scene,
                caption: None,
                resolved: false,
                dropped: false,
                told: false,
            }),
            LiveItem::Captioned(CaptionedKeyframe { job, caption }) => {
                if let Some(announced) = self.find(job.index) {
                    announced.caption = caption;
                    announced.resolved = true;
                }
            }
            LiveItem::CaptionDropped(index) => {
                if let Some(announced) = self.find(index) {
                    announced.dropped = true;
                    announced.resolved = true;
                }
            }
        }
        self.tell_resolved();
        self.close_finished()?;
        if self.released.elapsed() >= RELEASE_INTERVAL {
            crate::allocator::release_freed_memory();
            self.released = Instant::now();
        }
        Ok(())
    }

    fn find(&mut self, index: usize) -> Option<&mut Announced> {
        self.announced.iter_mut().find(|scene| scene.index == index)
    }

    /// Tells the resolved keyframes not yet told, in order, up to the first unresolved.
    fn tell_resolved(&mut self) {
        let clock = self.segments.clock;
        let drops = &self.segments.drops;
        for announced in self.announced.iter_mut() {
            if !announced.resolved {
                break;
            }
            if announced.told {
                continue;
            }
            announced.told = true;
            self.written.keyframes += 1;
            let scene = announced.scene;
            // From the arrival of the scene's first frame, else from its time.
            let seen = self
                .frames
                .iter()
                .find(|frame| frame.time == scene.start)
                .map_or(scene.start, |frame| frame.arrived);
            (self.on_event)(LiveEvent::Keyframe(LiveKeyframe {
                index: announced.index,
                time: scene.keyframe,
                wall_clock: clock.wall_clock(scene.keyframe),
                scene_start: scene.start,
                change: scene.change,
                caption: announced.caption.clone(),
                caption_dropped: announced.dropped,
                latency_s: clock.now().seconds() - seen.seconds(),
                dropped_frames: drops.frames.load(Ordering::SeqCst),
                dropped_captions: drops.captions.load(Ordering::SeqCst),
            }));
        }
    }

    /// Writes every segment whose content is final: every scene starting in it announced,
    /// every keyframe in it told.
    fn close_finished(&mut self) -> Result<(), PipelineError> {
        loop {
            let (_, end) = self.segment_span(self.segment);
            let told = self
                .announced
                .iter()
                .take_while(|scene| scene.scene.keyframe < end)
                .all(|scene| scene.told);
            if self.settled < end || !told {
                return Ok(());
            }
            self.write_segment(end, false)?;
        }
    }

    /// Writes the open segment and every later one up to where the session ended.
    fn close_all(&mut self) -> Result<(), PipelineError> {
        self.tell_resolved();
        let last = self.last_frame.unwrap_or(MediaTime::ZERO);
        loop {
            let (start, end) = self.segment_span(self.segment);
            if last < end {
                let session_end = MediaTime::from_seconds(last.seconds().max(start.seconds()));
                return self.write_segment(session_end, true);
            }
            self.write_segment(end, false)?;
        }
    }

    /// Writes the open segment, ending at `end`, and opens the next; the `last` segment
    /// takes every keyframe left.
    fn write_segment(&mut self, end: MediaTime, last: bool) -> Result<(), PipelineError> {
        let (start, _) = self.segment_span(self.segment);
        let mut frames = FrameEmbeddings {
            time_s: Vec::new(),
            change: Vec::new(),
            embeddings: Vec::new(),
            dim: 0,
            threshold: None,
        };
        while self.frames.front().is_some_and(|frame| frame.time < end) {
            if let Some(frame) = self.frames.pop_front() {
                frames.dim = frame.embedding.len();
                frames.time_s.push(frame.time.seconds());
                frames.change.push(frame.change);
                frames.embeddings.extend_from_slice(&frame.embedding);
            }
        }
        let mut keyframes = Vec::new();
        let mut dropped_captions = 0;
        while self
            .announced
            .front()
            .is_some_and(|scene| last || scene.scene.keyframe < end)
        {
            let Some(announced) = self.announced.pop_front() else {
                break;
            };
            let scene_end = self.announced.front().map_or(end.seconds(), |next| {
                next.scene.start.seconds().min(end.seconds())
            });
            let keyframe = announced.scene.keyframe;
            dropped_captions += u64::from(announced.dropped);
            keyframes.push(KeyframeRecord {
                index: keyframes.len(),
                time_s: keyframe.seconds(),
                timecode: keyframe.timecode(),
                scene: SceneSpan {
                    start_s: announced.scene.start.seconds().max(start.seconds()),
                    end_s: scene_end.max(keyframe.seconds()),
                },
                change: announced.scene.change,
                caption: announced.caption,
            });
        }
        let (gaps, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.gaps)
            .into_iter()
            .partition(|gap| gap.start_s < end.seconds());
        self.gaps = later;
        let dropped_so_far = self.segments.drops.frames.load(Ordering::SeqCst);
        let dropped_frames = dropped_so_far - self.dropped_frames_before;
        self.dropped_frames_before = dropped_so_far;
        let info = self.info.as_ref();
        let settings = &self.segments.settings;
        let mut analysis = Analysis {
            schema: SCHEMA.to_string(),
            video: VideoRecord {
                path: settings.source.to_string(),
                sha256: String::new(),
                duration_s: end.seconds(),
                width: info.map_or(0, |info| info.width),
                height: info.map_or(0, |info| info.height),
                fps: info.map_or(0.0, |info| info.fps),
            },
            models: self.segments.models.clone(),
            pipeline: self.segments.pipeline.clone(),
            keyframes,
            summary: None,
            chapters: Vec::new(),
            embeddings: None,
            timings: Timings {
                decode_s: 0.0,
                embed_s: 0.0,
                select_s: 0.0,
                caption_s: 0.0,
                total_s: end.seconds() - start.seconds(),
            },
            decode_gaps: gaps,
            live: Some(LiveRecord {
                session_started: rfc3339(self.segments.clock.started_at),
                segment: self.segment,
                start_s: start.seconds(),
                end_s: end.seconds(),
                dropped_frames,
                dropped_captions,
            }),
        };
        let document = settings.segment_document(self.segment);
        store_analysis(&mut analysis, &frames, &document)?;
        (self.on_event)(LiveEvent::SegmentWritten {
            index: self.segment,
            document: document.clone(),
            keyframes: analysis.keyframes.len(),
            dropped_frames,
            dropped_captions,
        });
        self.written.documents.push(document);
        self.segment += 1;
        Ok(())
    }
}
