//! Cutting a video at its scene boundaries into one file per scene, with FFmpeg's libraries.
//!
//! Two ways to cut:
//!
//! - [`CutMode::KeyFrames`] (the default) copies the compressed streams (stream copy: fast,
//!   no loss). A copied piece can only start on a key frame, so each cut moves to the key
//!   frame nearest the scene boundary; the pieces still tile the video exactly (each packet
//!   lands in one piece), but a piece may begin or end up to half a key-frame interval away
//!   from its scene's boundary. Scenes whose boundaries meet the same key frame share one
//!   piece.
//! - [`CutMode::Exact`] re-encodes the video (H.264 with libx264) so that every piece holds
//!   exactly its scene's frames; audio is copied, packet by packet, by time.
//!
//! Pieces are named `NAME-Scene-001.EXT` after the first scene they hold, in the input's
//! container (MP4, MOV, MKV, WebM, MPEG-TS or AVI; anything else becomes MKV), and written
//! atomically: under a temporary name, renamed when complete. The video stream and the audio
//! streams are kept; subtitle and data streams are left out.

use std::path::{Path, PathBuf};

use ffmpeg_next::format::context::{Input, Output};
use ffmpeg_next::{codec, encoder, format, media, picture, Dictionary, Packet, Rational};
use thiserror::Error;

use crate::analysis::Analysis;
use crate::output::scenes::{scene_list, SceneList};
use crate::time::MediaTime;
use crate::video::VideoError;

/// Containers a piece keeps when the input is one (by file extension).
const KEPT_CONTAINERS: [&str; 8] = ["mp4", "m4v", "mov", "mkv", "webm", "ts", "avi", "flv"];

/// How long past a piece's end the demuxer reads on for audio packets that are interleaved
/// late, in seconds.
const INTERLEAVE_SECONDS: f64 = 5.0;

/// libx264 settings of `--exact`: fast, and visually lossless for most material.
const X264_OPTIONS: [(&str, &str); 2] = [("preset", "veryfast"), ("crf", "18")];

/// How the video is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CutMode {
    /// Stream copy, each cut at the key frame nearest the scene boundary.
    #[default]
    KeyFrames,
    /// Re-encode the video so that each piece holds exactly its scene.
    Exact,
}

/// Where and how to write the pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitOptions {
    /// The directory for the pieces (created if missing).
    pub out_dir: PathBuf,
    /// The pieces' names start with this (usually the video's file stem).
    pub name: String,
    /// How to cut.
    pub mode: CutMode,
}

/// One written piece.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The number of the first scene it holds (scenes are numbered from 1, as in
    /// [`crate::output::scenes`]).
    pub first_scene: usize,
    /// The number of the last scene it holds (more than `first_scene` when key frames are
    /// too sparse to cut between them).
    pub last_scene: usize,
    /// The file.
    pub path: PathBuf,
    /// Where the piece starts in the video.
    pub start: MediaTime,
    /// Where it ends in the video.
    pub end: MediaTime,
}

/// What can go wrong cutting a video.
#[derive(Debug, Error)]
pub enum SplitError {
    /// The video cannot be opened or read.
    #[error(transparent)]
    Video(#[from] VideoError),
    /// Scenes cannot be placed on frames.
    #[error("the analysis records no usable frame rate (fps {0}), so its scenes cannot be cut")]
    NoFrameRate(f64),
    /// There is nothing to cut.
    #[error("the analysis has no scenes")]
    NoScenes,
    /// FFmpeg failed on a file.
    #[error("{}: {problem}", path.display())]
    Ffmpeg {
        /// The input or the piece being written.
        path: PathBuf,
        /// What failed.
        problem: String,
    },
    /// A file or the directory could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// `--exact` needs an H.264 encoder.
    #[error("this FFmpeg has no H.264 encoder (libx264), which an exact cut needs")]
    NoEncoder,
}

/// A piece before it is written: which scenes, and where it starts and ends in seconds from
/// the start of the video (`None`: the start or the end of the file).
#[derive(Debug, Clone, Copy, PartialEq)]
struct PlannedPiece {
    first_scene: usize,
    last_scene: usize,
    start: Bound,
    end: Bound,
}

/// One end of a piece.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bound {
    /// The start or the end of the file.
    File,
    /// A key frame: its presentation timestamp in the video stream and its time in seconds.
    KeyFrame { pts: i64, seconds: f64 },
    /// A frame start, in seconds from the start of the video.
    Time(f64),
}

impl Bound {
    fn seconds(self, file_end: f64) -> f64 {
        match self {
            Bound::File => file_end,
            Bound::KeyFrame { seconds, .. } | Bound::Time(seconds) => seconds,
        }
    }
}

/// Cuts `video` at the scene boundaries of `analysis` and returns the pieces in order.
pub fn split_video(
    video: &Path,
    analysis: &Analysis,
    options: &SplitOptions,
) -> Result<Vec<Piece>, SplitError> {
    let scenes = scene_list(analysis).ok_or(SplitError::NoFrameRate(analysis.video.fps))?;
    if scenes.scenes.is_empty() {
        return Err(SplitError::NoScenes);
    }
    let info = crate::video::probe(video)?;
    std::fs::create_dir_all(&options.out_dir).map_err(|source| SplitError::Io {
        path: options.out_dir.clone(),
        source,
    })?;
    let source = Source::open(video, info.start_time_s)?;
    let plan = match options.mode {
        CutMode::KeyFrames => plan_at_key_frames(&scenes, &source.key_frames()?),
        CutMode::Exact => plan_exact(&scenes),
    };
    let extension = piece_extension(video);
    let mut pieces = Vec::with_capacity(plan.len());
    for planned in plan {
        let path = options.out_dir.join(format!(
            "{}-Scene-{:03}.{extension}",
            options.name, planned.first_scene
        ));
        let temporary = TemporaryFile::beside(&path, extension);
        match options.mode {
            CutMode::KeyFrames => source.copy_piece(&planned, temporary.path())?,
            CutMode::Exact => source.encode_piece(&planned, temporary.path())?,
        }
        temporary.commit(&path)?;
        pieces.push(Piece {
            first_scene: planned.first_scene,
            last_scene: planned.last_scene,
            path,
            start: MediaTime::from_seconds(planned.start.seconds(0.0)),
            end: MediaTime::from_seconds(planned.end.seconds(info.duration_s)),
        });
    }
    Ok(pieces)
}

/// The pieces of a stream copy: each scene boundary moves to the nearest key frame (the
/// earlier on a tie); a boundary that lands on the first key frame or on the previous
/// piece's start joins its scene to the previous piece.
fn plan_at_key_frames(scenes: &SceneList, key_frames: &[(i64, f64)]) -> Vec<PlannedPiece> {
    let mut pieces = vec![PlannedPiece {
        first_scene: scenes.scenes[0].number,
        last_scene: scenes.scenes[0].number,
        start: Bound::File,
        end: Bound::File,
    }];
    let mut previous_key = 0;
    for scene in &scenes.scenes[1..] {
        let boundary = scenes.time(scene.start_frame).seconds();
        let nearest = key_frames
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| (a.1 - boundary).abs().total_cmp(&(b.1 - boundary).abs()))
            .map_or(0, |(position, _)| position);
        let last = pieces.len() - 1;
        if nearest <= previous_key {
            pieces[last].last_scene = scene.number;
            continue;
        }
        let (pts, seconds) = key_frames[nearest];
        let bound = Bound::KeyFrame { pts, seconds };
        pieces[last].end = bound;
        pieces.push(PlannedPiece {
            first_scene: scene.number,
            last_scene: scene.number,
            start: bound,
            end: Bound::File,
        });
        previous_key = nearest;
    }
    pieces
}

/// The pieces of an exact cut: one per scene, from its first frame to the next scene's.
fn plan_exact(scenes: &SceneList) -> Vec<PlannedPiece> {
    let count = scenes.scenes.len();
    scenes
        .scenes
        .iter()
        .enumerate()
        .map(|(position, scene)| PlannedPiece {
            first_scene: scene.number,
            last_scene: scene.number,
            start: if position == 0 {
                Bound::File
            } else {
                Bound::Time(scenes.time(scene.start_frame).seconds())
            },
            end: if position + 1 == count {
                Bound::File
            } else {
                Bound::Time(scenes.time(scene.end_frame).seconds())
            },
        })
        .collect()
}

/// The pieces' container: the input's when it is one of [`KEPT_CONTAINERS`], else MKV.
fn piece_extension(video: &Path) -> &'static str {
    let extension = video
        .extension()
        .map(|extension| extension.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    KEPT_CONTAINERS
        .into_iter()
        .find(|kept| *kept == extension)
        .unwrap_or("mkv")
}

/// A piece being written: removed on drop unless renamed into place.
struct TemporaryFile {
    path: PathBuf,
    committed: bool,
}

impl TemporaryFile {
    /// A hidden name beside `path` that keeps its extension (FFmpeg picks the container by
    /// the extension).
    fn beside(path: &Path, extension: &str) -> TemporaryFile {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        TemporaryFile {
            path: path.with_file_name(format!(
                ".{name}.{}.partial.{extension}",
                std::process::id()
            )),
            committed: false,
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn commit(mut self, destination: &Path) -> Result<(), SplitError> {
        std::fs::rename(&self.path, destination).map_err(|source| SplitError::Io {
            path: destination.to_path_buf(),
            source,
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The input video: where it is, which stream is the picture and which are sound.
struct Source {
    path: PathBuf,
    /// Seconds of presentation time that count as 0 (the container's start time).
    start_time_s: f64,
    video_stream: usize,
    video_time_base: Rational,
}

impl Source {
    fn open(path: &Path, start_time_s: f64) -> Result<Source, SplitError> {
        let input = open_input(path)?;
        let stream =
            input
                .streams()
                .best(media::Type::Video)
                .ok_or_else(|| SplitError::Ffmpeg {
                    path: path.to_path_buf(),
                    problem: "no video stream".into(),
                })?;
        Ok(Source {
            path: path.to_path_buf(),
            start_time_s,
            video_stream: stream.index(),
            video_time_base: stream.time_base(),
        })
    }

    /// Seconds from the start of the video of a timestamp in `time_base`.
    fn seconds(&self, timestamp: i64, time_base: Rational) -> f64 {
        timestamp as f64 * f64::from(time_base) - self.start_time_s
    }

    /// Every key frame of the video stream: presentation timestamp and seconds, in order.
    fn key_frames(&self) -> Result<Vec<(i64, f64)>, SplitError> {
        let mut input = open_input(&self.path)?;
        let mut keys = Vec::new();
        for (stream, packet) in input.packets() {
            if stream.index() != self.video_stream || !packet.is_key() {
                continue;
            }
            if let Some(pts) = packet.pts() {
                keys.push((pts, self.seconds(pts, self.video_time_base)));
            }
        }
        keys.sort_by_key(|&(pts, _)| pts);
        Ok(keys)
    }

    /// Adds to `output` the video stream (copied, or encoded by `encoded_video`) and every
    /// audio stream (copied), writes the header, and returns for each input stream its
    /// output stream (or `None`).
    fn add_streams(
        &self,
        input: &Input,
        output: &mut Output,
        output_path: &Path,
        mut encoded_video: Option<&mut VideoEncoder>,
    ) -> Result<Vec<Option<usize>>, SplitError> {
        let mut mapping = vec![None; input.nb_streams() as usize];
        let mut next = 0;
        for stream in input.streams() {
            let is_video = stream.index() == self.video_stream;
            if !is_video && stream.parameters().medium() != media::Type::Audio {
                continue;
            }
            match (is_video, encoded_video.as_deref_mut()) {
                (true, Some(video)) => video.add_stream(output, output_path)?,
                _ => {
                    let mut copied = output
                        .add_stream(encoder::find(codec::Id::None))
                        .map_err(|error| failed(output_path, "cannot add a stream", error))?;
                    copied.set_parameters(stream.parameters());
                    // SAFETY: the stream's codec parameters belong to `output`, alive here;
                    // a zero tag lets the muxer pick the tag its container uses.
                    unsafe {
                        (*copied.parameters().as_mut_ptr()).codec_tag = 0;
                    }
                }
            }
            mapping[stream.index()] = Some(next);
            next += 1;
        }
        output
            .write_header()
            .map_err(|error| failed(output_path, "cannot write the header", error))?;
        Ok(mapping)
    }

    /// Seeks `input` to the key frame at or before `seconds`.
    fn seek_before(&self, input: &mut Input, seconds: f64) -> Result<(), SplitError> {
        let target = ((seconds + self.start_time_s) * f64::from(ffmpeg_next::ffi::AV_TIME_BASE))
            .floor() as i64;
        input
            .seek(target, ..target)
            .map_err(|error| failed(&self.path, "cannot seek", error))
    }

    /// Writes one piece by stream copy.
    fn copy_piece(&self, piece: &PlannedPiece, output_path: &Path) -> Result<(), SplitError> {
        let mut input = open_input(&self.path)?;
        let mut output = create_output(output_path)?;
        let mapping = self.add_streams(&input, &mut output, output_path, None)?;
        let (start_pts, start_seconds) = match piece.start {
            Bound::KeyFrame { pts, seconds } => (Some(pts), seconds),
            _ => (None, 0.0),
        };
        let end_pts = match piece.end {
            Bound::KeyFrame { pts, .. } => Some(pts),
            _ => None,
        };
        let end_seconds = piece.end.seconds(f64::INFINITY);
        if start_pts.is_some() {
            self.seek_before(&mut input, start_seconds)?;
        }
        let time_bases: Vec<Rational> = input.streams().map(|stream| stream.time_base()).collect();
        let has_audio = mapping
            .iter()
            .enumerate()
            .any(|(index, mapped)| mapped.is_some() && index != self.video_stream);
        let mut video_started = start_pts.is_none();
        let mut video_done = false;
        for (stream, mut packet) in input.packets() {
            let index = stream.index();
            let Some(output_index) = mapping[index] else {
                continue;
            };
            let time_base = time_bases[index];
            let seconds = packet
                .pts()
                .or(packet.dts())
                .map_or(start_seconds, |timestamp| {
                    self.seconds(timestamp, time_base)
                });
            if index == self.video_stream {
                if video_done {
                    continue;
                }
                if packet.is_key() && end_pts.is_some() && packet.pts() == end_pts {
                    video_done = true;
                    if !has_audio {
                        break;
                    }
                    continue;
                }
                if !video_started {
                    if packet.is_key() && packet.pts() == start_pts {
                        video_started = true;
                    } else {
                        continue;
                    }
                }
            } else {
                if video_done && seconds >= end_seconds + INTERLEAVE_SECONDS {
                    break;
                }
                let in_piece =
                    (start_pts.is_none() || seconds >= start_seconds) && seconds < end_seconds;
                if !in_piece {
                    continue;
                }
            }
            let offset = start_pts.map_or(0, |pts| rescale(pts, self.video_time_base, time_base));
            self.write_packet(
                &mut packet,
                offset,
                time_base,
                output_index,
                &mut output,
                output_path,
            )?;
        }
        output
            .write_trailer()
            .map_err(|error| failed(output_path, "cannot finish the piece", error))
    }

    /// Shifts a packet by `offset` (in its `time_base`) and writes it as `output_index`.
    fn write_packet(
        &self,
        packet: &mut Packet,
        offset: i64,
        time_base: Rational,
        output_index: usize,
        output: &mut Output,
        output_path: &Path,
    ) -> Result<(), SplitError> {
        packet.set_pts(packet.pts().map(|pts| pts - offset));
        packet.set_dts(packet.dts().map(|dts| dts - offset));
        let output_time_base = output
            .stream(output_index)
            .expect("mapped streams exist in the output")
            .time_base();
        packet.rescale_ts(time_base, output_time_base);
        packet.set_position(-1);
        packet.set_stream(output_index);
        packet
            .write_interleaved(output)
            .map_err(|error| failed(output_path, "cannot write a packet", error))
    }

    /// Writes one piece with its video re-encoded, exactly from its first to its last frame.
    fn encode_piece(&self, piece: &PlannedPiece, output_path: &Path) -> Result<(), SplitError> {
        let mut input = open_input(&self.path)?;
        let mut output = create_output(output_path)?;
        let global_header = output
            .format()
            .flags()
            .contains(format::Flags::GLOBAL_HEADER);
        let stream = input
            .stream(self.video_stream)
            .expect("the video stream exists");
        let mut video = VideoEncoder::new(&stream, global_header, output_path)?;
        let mapping = self.add_streams(&input, &mut output, output_path, Some(&mut video))?;
        let start_seconds = piece.start.seconds(0.0);
        let end_seconds = piece.end.seconds(f64::INFINITY);
        // Half a frame of tolerance absorbs time-base rounding at the cuts.
        let half_frame = 0.5 / video.fps;
        if start_seconds > 0.0 {
            self.seek_before(&mut input, start_seconds)?;
        }
        let time_bases: Vec<Rational> = input.streams().map(|stream| stream.time_base()).collect();
        let video_output = mapping[self.video_stream].expect("the video stream is mapped");
        let start_pts =
            ((start_seconds + self.start_time_s) / f64::from(self.video_time_base)).round() as i64;
        let mut frames = Frames {
            from_seconds: start_seconds - half_frame,
            until_seconds: end_seconds - half_frame,
            offset: start_pts,
            done: false,
        };
        let has_audio = mapping
            .iter()
            .enumerate()
            .any(|(index, mapped)| mapped.is_some() && index != self.video_stream);
        for (stream, mut packet) in input.packets() {
            let index = stream.index();
            let Some(output_index) = mapping[index] else {
                continue;
            };
            if index == self.video_stream {
                if frames.done {
                    if !has_audio {
                        break;
                    }
                    continue;
                }
                video
                    .decoder
                    .send_packet(&packet)
                    .map_err(|error| failed(&self.path, "cannot decode", error))?;
                self.encode_frames(
                    &mut video,
                    &mut frames,
                    video_output,
                    &mut output,
                    output_path,
                )?;
                continue;
            }
            let time_base = time_bases[index];
            let Some(seconds) = packet
                .pts()
                .or(packet.dts())
                .map(|timestamp| self.seconds(timestamp, time_base))
            else {
                continue;
            };
            if frames.done && seconds >= end_seconds + INTERLEAVE_SECONDS {
                break;
            }
            if seconds < start_seconds - 1e-6 || seconds >= end_seconds - 1e-6 {
                continue;
            }
            let offset = rescale(start_pts, self.video_time_base, time_base);
            self.write_packet(
                &mut packet,
                offset,
                time_base,
                output_index,
                &mut output,
                output_path,
            )?;
        }
        if !frames.done {
            video
                .decoder
                .send_eof()
                .map_err(|error| failed(&self.path, "cannot decode", error))?;
            self.encode_frames(
                &mut video,
                &mut frames,
                video_output,
                &mut output,
                output_path,
            )?;
        }
        video
            .encoder
            .send_eof()
            .map_err(|error| failed(output_path, "cannot encode", error))?;
        self.write_encoded(&mut video, video_output, &mut output, output_path)?;
        output
            .write_trailer()
            .map_err(|error| failed(output_path, "cannot finish the piece", error))
    }

    /// Moves every decoded frame inside the piece through the encoder.
    fn encode_frames(
        &self,
        video: &mut VideoEncoder,
        frames: &mut Frames,
        output_index: usize,
        output: &mut Output,
        output_path: &Path,
    ) -> Result<(), SplitError> {
        let mut decoded = ffmpeg_next::frame::Video::empty();
        while !frames.done && video.decoder.receive_frame(&mut decoded).is_ok() {
            let Some(timestamp) = decoded.timestamp().or(decoded.pts()) else {
                continue;
            };
            let seconds = self.seconds(timestamp, self.video_time_base);
            if seconds < frames.from_seconds {
                continue;
            }
            if seconds >= frames.until_seconds {
                frames.done = true;
                break;
            }
            decoded.set_pts(Some(timestamp - frames.offset));
            decoded.set_kind(picture::Type::None);
            let frame = match &mut video.scaler {
                Some((scaler, converted)) => {
                    scaler
                        .run(&decoded, converted)
                        .map_err(|error| failed(&self.path, "cannot convert a frame", error))?;
                    converted.set_pts(decoded.pts());
                    converted.set_kind(picture::Type::None);
                    &*converted
                }
                None => &decoded,
            };
            video
                .encoder
                .send_frame(frame)
                .map_err(|error| failed(output_path, "cannot encode", error))?;
            self.write_encoded(video, output_index, output, output_path)?;
        }
        Ok(())
    }

    /// Writes every packet the encoder has ready.
    fn write_encoded(
        &self,
        video: &mut VideoEncoder,
        output_index: usize,
        output: &mut Output,
        output_path: &Path,
    ) -> Result<(), SplitError> {
        let mut encoded = Packet::empty();
        while video.encoder.receive_packet(&mut encoded).is_ok() {
            // A packet without a duration leaves the container to guess how long the last
            // frame lasts (MP4 then ends the piece a frame early).
            if encoded.duration() <= 0 {
                encoded.set_duration(video.frame_duration);
            }
            self.write_packet(
                &mut encoded,
                0,
                self.video_time_base,
                output_index,
                output,
                output_path,
            )?;
        }
        Ok(())
    }
}

/// Which decoded frames go into the piece being encoded.
struct Frames {
    /// Frames from this time on (seconds from the start of the video)...
    from_seconds: f64,
    /// ...and before this one.
    until_seconds: f64,
    /// The piece's first timestamp in the video stream, subtracted from every frame's.
    offset: i64,
    /// The piece's last frame has gone by.
    done: bool,
}

/// The video decoder and the H.264 encoder of an exact cut.
struct VideoEncoder {
    decoder: ffmpeg_next::decoder::Video,
    encoder: ffmpeg_next::encoder::Video,
    codec: ffmpeg_next::Codec,
    fps: f64,
    /// One frame's duration in the video stream's time base.
    frame_duration: i64,
    /// Converts decoded pictures to the encoder's YUV 4:2:0 when they are in another format.
    scaler: Option<(
        ffmpeg_next::software::scaling::Context,
        ffmpeg_next::frame::Video,
    )>,
}

impl VideoEncoder {
    /// A decoder for `stream` and a libx264 encoder of the same size, rate and time base.
    fn new(
        stream: &ffmpeg_next::format::stream::Stream,
        global_header: bool,
        output_path: &Path,
    ) -> Result<VideoEncoder, SplitError> {
        let fail = |what: &str, error| failed(output_path, what, error);
        let mut context = codec::context::Context::from_parameters(stream.parameters())
            .map_err(|error| fail("cannot start the video decoder", error))?;
        context.set_threading(codec::threading::Config {
            kind: codec::threading::Type::Frame,
            count: 0,
            ..Default::default()
        });
        let decoder = context
            .decoder()
            .video()
            .map_err(|error| fail("cannot start the video decoder", error))?;
        let codec = encoder::find_by_name("libx264")
            .or_else(|| encoder::find(codec::Id::H264))
            .ok_or(SplitError::NoEncoder)?;
        let mut settings = codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|error| fail("cannot start the H.264 encoder", error))?;
        let rate = stream.avg_frame_rate();
        let rate = if rate.numerator() > 0 && rate.denominator() > 0 {
            rate
        } else {
            Rational(25, 1)
        };
        settings.set_width(decoder.width());
        settings.set_height(decoder.height());
        settings.set_aspect_ratio(decoder.aspect_ratio());
        settings.set_format(format::Pixel::YUV420P);
        settings.set_frame_rate(Some(rate));
        settings.set_time_base(stream.time_base());
        if global_header {
            settings.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        let mut options = Dictionary::new();
        for (key, value) in X264_OPTIONS {
            options.set(key, value);
        }
        let scaler = if decoder.format() == format::Pixel::YUV420P {
            None
        } else {
            let scaler = ffmpeg_next::software::scaling::Context::get(
                decoder.format(),
                decoder.width(),
                decoder.height(),
                format::Pixel::YUV420P,
                decoder.width(),
                decoder.height(),
                ffmpeg_next::software::scaling::Flags::BILINEAR,
            )
            .map_err(|error| fail("cannot convert the pictures", error))?;
            Some((scaler, ffmpeg_next::frame::Video::empty()))
        };
        Ok(VideoEncoder {
            decoder,
            encoder: settings
                .open_with(options)
                .map_err(|error| fail("cannot open the H.264 encoder", error))?,
            codec,
            fps: f64::from(rate),
            frame_duration: rescale(1, rate.invert(), stream.time_base()).max(1),
            scaler,
        })
    }

    /// Adds the encoded video stream to `output`.
    fn add_stream(&mut self, output: &mut Output, output_path: &Path) -> Result<(), SplitError> {
        let mut stream = output
            .add_stream(self.codec)
            .map_err(|error| SplitError::Ffmpeg {
                path: output_path.to_path_buf(),
                problem: format!("cannot add the video stream: {error}"),
            })?;
        stream.set_parameters(&self.encoder);
        Ok(())
    }
}

/// An FFmpeg failure on `path` while doing `what`.
fn failed(path: &Path, what: &str, error: ffmpeg_next::Error) -> SplitError {
    SplitError::Ffmpeg {
        path: path.to_path_buf(),
        problem: format!("{what}: {error}"),
    }
}

/// Creates a piece's file; FFmpeg picks the container by its extension.
fn create_output(path: &Path) -> Result<Output, SplitError> {
    format::output(path).map_err(|error| failed(path, "cannot create the piece", error))
}

/// Opens the input video with FFmpeg.
fn open_input(path: &Path) -> Result<Input, SplitError> {
    crate::video::init();
    format::input(path).map_err(|error| SplitError::Ffmpeg {
        path: path.to_path_buf(),
        problem: format!("cannot open: {error}"),
    })
}

/// Converts a timestamp from one time base to another, rounding to nearest.
fn rescale(value: i64, from: Rational, to: Rational) -> i64 {
    // SAFETY: a pure arithmetic function of FFmpeg's.
    unsafe { ffmpeg_next::ffi::av_rescale_q(value, from.into(), to.into()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::analysis;

    /// Key frames every 2 s at 25 fps (pts in 1/12800 units, as MP4 writes them).
    fn key_frames(until_s: u32) -> Vec<(i64, f64)> {
        (0..=until_s / 2)
            .map(|key| (i64::from(key) * 2 * 12_800, f64::from(key) * 2.0))
            .collect()
    }

    fn bounds(plan: &[PlannedPiece]) -> Vec<(usize, usize, f64, f64)> {
        plan.iter()
            .map(|piece| {
                (
                    piece.first_scene,
                    piece.last_scene,
                    piece.start.seconds(0.0),
                    piece.end.seconds(12.0),
                )
            })
            .collect()
    }

    #[test]
    fn copied_cuts_move_to_the_nearest_key_frame() {
        // Scenes start at 0, 4 and 8.5 s: 4 s is a key frame, 8.5 s is nearest 8 s.
        let scenes = scene_list(&analysis([None, None, None])).unwrap();
        let plan = plan_at_key_frames(&scenes, &key_frames(12));
        assert_eq!(
            bounds(&plan),
            [(1, 1, 0.0, 4.0), (2, 2, 4.0, 8.0), (3, 3, 8.0, 12.0)]
        );
        assert_eq!(
            plan[1].start,
            Bound::KeyFrame {
                pts: 4 * 12_800,
                seconds: 4.0
            }
        );
    }

    #[test]
    fn scenes_between_two_key_frames_share_a_piece() {
        let mut analysis = analysis([None, None, None]);
        analysis.keyframes[1].scene.start_s = 0.9;
        analysis.keyframes[2].scene.start_s = 5.2;
        let scenes = scene_list(&analysis).unwrap();
        // 0.9 s is nearest the first key frame: scene 2 joins scene 1. 5.2 s is nearest 6 s.
        let plan = plan_at_key_frames(&scenes, &key_frames(12));
        assert_eq!(bounds(&plan), [(1, 2, 0.0, 6.0), (3, 3, 6.0, 12.0)]);
        // Key frames every 10 s: 0.9 s is nearest 0 s and 5.2 s nearest 10 s.
        let plan = plan_at_key_frames(&scenes, &[(0, 0.0), (128_000, 10.0)]);
        assert_eq!(bounds(&plan), [(1, 2, 0.0, 10.0), (3, 3, 10.0, 12.0)]);
        // One key frame only: nothing can be cut.
        let plan = plan_at_key_frames(&scenes, &[(0, 0.0)]);
        assert_eq!(bounds(&plan), [(1, 3, 0.0, 12.0)]);
    }

    #[test]
    fn exact_cuts_follow_the_scene_frames() {
        let scenes = scene_list(&analysis([None, None, None])).unwrap();
        assert_eq!(
            bounds(&plan_exact(&scenes)),
            [(1, 1, 0.0, 4.0), (2, 2, 4.0, 8.52), (3, 3, 8.52, 12.0)]
        );
    }

    #[test]
    fn pieces_keep_their_container_or_become_matroska() {
        assert_eq!(piece_extension(Path::new("a/b.MP4")), "mp4");
        assert_eq!(piece_extension(Path::new("b.webm")), "webm");
        assert_eq!(piece_extension(Path::new("b.wmv")), "mkv");
        assert_eq!(piece_extension(Path::new("noextension")), "mkv");
    }

    #[test]
    fn an_unfinished_piece_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let final_path = dir.path().join("x-Scene-001.mp4");
        let temporary = TemporaryFile::beside(&final_path, "mp4");
        std::fs::write(temporary.path(), b"half").unwrap();
        assert!(temporary.path().to_string_lossy().ends_with(".partial.mp4"));
        drop(temporary);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
