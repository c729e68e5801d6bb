//! The main job: decode -> embed -> select -> caption, each stage on its own thread, joined
//! by bounded channels. Captioning of a scene starts as soon as the selector closes it, while
//! later frames are still being decoded and embedded.

use std::path::Path;
use std::time::{Duration, Instant};

use super::frames::gap_records;
use super::{PipelineConfig, PipelineError, Progress, Stages, StopSignal};
use crate::analysis::{
    Analysis, FrameEmbeddings, KeyframeRecord, ModelSource, ModelsRecord, SceneSpan, Timings,
    VideoRecord, SCHEMA,
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

/// Time spent in each stage, summed inside the stage threads.
#[derive(Debug, Default, Clone, Copy)]
struct StageTimes {
    embed: Duration,
    select: Duration,
}

/// Runs the analysis of `video`. `on_event` is called from the stage threads as keyframes
/// are made; progress advances by media time embedded and by keyframes captioned.
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
    };
    let reader = FrameReader::open(video, options)?;
    let info = reader.info().clone();
    // The last scene ends where the range analysed ends.
    let duration = MediaTime::from_seconds(match options.end {
        Some(end) if info.duration_s <= 0.0 || end.seconds() < info.duration_s => end.seconds(),
        _ => info.duration_s,
    });
    let range_start = options.start;
    let batch_size = config.embed.batch_size;
    let on_event = std::sync::Arc::new(on_event);

    let (frame_sender, frame_receiver) =
        crossbeam_channel::bounded::<Frame>(batch_size * FRAME_QUEUE_BATCHES);
    let (scene_sender, scene_receiver) = crossbeam_channel::bounded::<Scene>(SCENE_QUEUE);
    let (keyframe_sender, keyframe_receiver) = crossbeam_channel::unbounded::<KeyframeRecord>();
    let (frames_sender, frames_receiver) = crossbeam_channel::bounded(1);
    let (times_sender, times_receiver) = crossbeam_channel::bounded(1);
    let (gaps_sender, gaps_receiver) = crossbeam_channel::bounded(1);
    let (caption_time_sender, caption_time_receiver) = crossbeam_channel::bounded(1);
    let (embedder_sender, embedder_receiver) = crossbeam_channel::bounded(1);
    let (captioner_sender, captioner_receiver) = crossbeam_channel::bounded(1);
    let mut stages = Stages::new(signal);

    let decode_events = std::sync::Arc::clone(&on_event);
    stages.spawn("decode", move |signal| {
        let mut reader = reader;
        let mut decoding = Duration::ZERO;
        loop {
            let clock = Instant::now();
            let frame = reader.next_frame()?;
            decoding += clock.elapsed();
            let Some(frame) = frame else { break };
            signal.send(&frame_sender, frame)?;
        }
        let report = reader.report();
        for gap in &report.gaps {
            decode_events(RunEvent::Warning(format!(
                "{} to {}: {}",
                gap.start,
                gap.end,
                gap.reason()
            )));
        }
        if let Some(warning) = report.stopped_early.clone() {
            decode_events(RunEvent::Warning(warning));
        }
        let _ = gaps_sender.send(gap_records(&report.gaps));
        let _ = times_sender.send(decoding);
        Ok(())
    });

    let bar = progress.clone();
    let embedder_name = embedder.name().to_string();
    let select = config.select.clone();
    stages.spawn("embed", move |signal| {
        let mut selector = SceneSelector::new(select)
            .map_err(|error| PipelineError::Failed {
                stage: "select".into(),
                message: error.to_string(),
            })?
            .starting_at(range_start);
        let mut times = StageTimes::default();
        let mut frames = FrameEmbeddings {
            time_s: Vec::new(),
            change: Vec::new(),
            embeddings: Vec::new(),
            dim: 0,
            threshold: None,
        };
        let mut batch: Vec<Frame> = Vec::with_capacity(batch_size);
        let mut finished = false;
        while !finished {
            match signal.recv(&frame_receiver)? {
                Some(frame) => batch.push(frame),
                None => finished = true,
            }
            let batch_ready = batch.len() >= batch_size || (finished && !batch.is_empty());
            if !batch_ready {
                continue;
            }
            let pictures: Vec<_> = batch.iter().map(|frame| frame.image.clone()).collect();
            let clock = Instant::now();
            let embeddings = embedder.embed_frames(&pictures)?;
            times.embed += clock.elapsed();
            for (frame, embedding) in batch.drain(..).zip(embeddings) {
                frames.dim = embedding.len();
                frames.time_s.push(frame.time.seconds());
                frames.embeddings.extend_from_slice(&embedding);
                let clock = Instant::now();
                let closed = selector.push(frame.time, &embedding).map_err(|error| {
                    PipelineError::Failed {
                        stage: "select".into(),
                        message: error.to_string(),
                    }
                })?;
                times.select += clock.elapsed();
                for scene in closed {
                    signal.send(&scene_sender, scene)?;
                    bar.keyframe_found();
                }
                bar.advance_to(frame.time);
            }
        }
        let clock = Instant::now();
        let selection = selector.finish(duration);
        times.select += clock.elapsed();
        frames.change = selection
            .timeline
            .iter()
            .map(|sample| sample.change)
            .collect();
        frames.threshold = selection.uniform_threshold();
        for scene in selection.scenes {
            signal.send(&scene_sender, scene)?;
            bar.keyframe_found();
        }
        bar.media_done();
        let _ = frames_sender.send((frames, times));
        let _ = embedder_sender.send(embedder);
        Ok(())
    });

    let captioner_record = captioner
        .as_ref()
        .map(|(model, source)| source.record(model.name()));
    let captioner_source = captioner.as_ref().map(|(_, source)| source.clone());
    let caption_events = std::sync::Arc::clone(&on_event);
    let video_path = video.to_path_buf();
    let caption_bar = progress.clone();
    stages.spawn("caption", move |signal| {
        let captioner = captioner.map(|(model, _)| model);
        let mut seeker = match captioner {
            Some(_) => Some(FrameSeeker::open(
                &video_path,
                Size::Native,
                ResizeMode::Crop,
            )?),
            None => None,
        };
        let mut captioning = Duration::ZERO;
        let mut index = 0;
        while let Some(scene) = signal.recv(&scene_receiver)? {
            let clock = Instant::now();
            let caption = match (&captioner, &mut seeker) {
                (Some(model), Some(seeker)) => {
                    let frame = seeker.frame_at(scene.keyframe)?;
                    Some(model.caption(&frame.image, &mut |_| {})?.trim().to_string())
                }
                _ => None,
            };
            captioning += clock.elapsed();
            caption_bar.keyframe_captioned();
            let span = SceneSpan {
                start_s: scene.start.seconds(),
                end_s: scene.end.seconds(),
            };
            caption_events(RunEvent::Keyframe {
                index,
                time: scene.keyframe,
                scene: span,
                caption: caption.clone(),
            });
            let _ = keyframe_sender.send(KeyframeRecord {
                index,
                time_s: scene.keyframe.seconds(),
                timecode: scene.keyframe.timecode(),
                scene: span,
                change: scene.change,
                caption,
            });
            index += 1;
        }
        let _ = caption_time_sender.send(captioning);
        let _ = captioner_sender.send(captioner);
        Ok(())
    });

    stages.join()?;
    let (frames, times) = frames_receiver.recv().map_err(|_| PipelineError::Stopped)?;
    let decode_time = times_receiver.recv().unwrap_or_default();
    let decode_gaps = gaps_receiver.recv().unwrap_or_default();
    let caption_time = caption_time_receiver.recv().unwrap_or_default();
    let keyframes: Vec<KeyframeRecord> = keyframe_receiver.try_iter().collect();
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
            decode_s: decode_time.as_secs_f64(),
            embed_s: times.embed.as_secs_f64(),
            select_s: times.select.as_secs_f64(),
            caption_s: caption_time.as_secs_f64(),
            total_s: started.elapsed().as_secs_f64(),
        },
        decode_gaps,
    };
    let embedder = embedder_receiver
        .recv()
        .map_err(|_| PipelineError::Stopped)?;
    let captioner = captioner_receiver
        .recv()
        .map_err(|_| PipelineError::Stopped)?
        .zip(captioner_source);
    Ok(AnalysisOutput {
        analysis,
        frames,
        models: Models {
            embedder,
            embedder_source,
            captioner,
        },
    })
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
