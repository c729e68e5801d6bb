//! What FFmpeg sees in a file: container, codec, size, rate, rotation, start time.

use std::path::{Path, PathBuf};

use ffmpeg_next::format::context::Input;
use ffmpeg_next::format::stream::Disposition;
use ffmpeg_next::media;
use ffmpeg_next::Rational;
use serde::Serialize;

use super::input::open_input;
use super::{init, VideoError};
use crate::picture;

/// How many video packets are demuxed to judge whether the frame rate is variable.
const RATE_PROBE_PACKETS: usize = 240;

/// Metadata of a video file as FFmpeg reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VideoInfo {
    /// The file (written as text, non-UTF-8 bytes replaced).
    #[serde(serialize_with = "serialize_lossy")]
    pub path: PathBuf,
    /// FFmpeg's name for the container format, e.g. `mov,mp4,m4a,3gp,3g2,mj2`.
    pub container: String,
    /// FFmpeg's name for the video codec, e.g. `h264`.
    pub codec: String,
    /// Duration in seconds.
    pub duration_s: f64,
    /// Width of the decoded picture in pixels, before rotation.
    pub coded_width: u32,
    /// Height of the decoded picture in pixels, before rotation.
    pub coded_height: u32,
    /// Width as displayed: sample aspect ratio and rotation applied.
    pub width: u32,
    /// Height as displayed: sample aspect ratio and rotation applied.
    pub height: u32,
    /// Average frame rate in frames per second.
    pub fps: f64,
    /// Whether frame durations vary (a variable-frame-rate file).
    pub variable_frame_rate: bool,
    /// Clockwise rotation in degrees (0, 90, 180 or 270) that the display matrix asks for.
    pub rotation_deg: u32,
    /// Presentation time, in seconds, that counts as 0 (the container's start time).
    pub start_time_s: f64,
    /// Number of frames if the container records it.
    pub frame_count: Option<u64>,
    /// Whether the file also holds audio.
    pub has_audio: bool,
}

fn serialize_lossy<S: serde::Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

/// Reads a file's metadata without decoding pictures.
pub fn probe(path: &Path) -> Result<VideoInfo, VideoError> {
    let mut opened = OpenedVideo::open(path)?;
    opened.info.variable_frame_rate = opened.detect_variable_rate();
    Ok(opened.info)
}

/// An opened input with its chosen video stream.
pub(super) struct OpenedVideo {
    pub(super) input: Input,
    pub(super) stream_index: usize,
    pub(super) time_base: Rational,
    /// The stream timestamp that counts as time zero.
    pub(super) zero_pts: i64,
    pub(super) info: VideoInfo,
}

impl OpenedVideo {
    /// Opens `path` with FFmpeg and picks its main video stream.
    pub(super) fn open(path: &Path) -> Result<Self, VideoError> {
        init();
        let input = open_input(path)?;
        Self::from_input(path, input)
    }

    /// Picks the main video stream of an opened `input`, named `path` in errors.
    pub(super) fn from_input(path: &Path, input: Input) -> Result<Self, VideoError> {
        let has_audio = input
            .streams()
            .any(|s| s.parameters().medium() == media::Type::Audio);
        let stream = main_video_stream(&input).ok_or_else(|| VideoError::NoVideoStream {
            path: path.to_path_buf(),
            has_audio,
        })?;
        let parameters = stream.parameters();
        let codec_id = parameters.id();
        if ffmpeg_next::decoder::find(codec_id).is_none() {
            return Err(VideoError::UnsupportedCodec {
                path: path.to_path_buf(),
                codec: codec_id.name().to_string(),
            });
        }
        // SAFETY: `parameters` wraps the stream's AVCodecParameters, valid while `input` lives.
        let (coded_width, coded_height, sample_aspect) = unsafe {
            let raw = &*parameters.as_ptr();
            (
                raw.width.max(0) as u32,
                raw.height.max(0) as u32,
                Rational(raw.sample_aspect_ratio.num, raw.sample_aspect_ratio.den),
            )
        };
        if coded_width == 0 || coded_height == 0 {
            return Err(VideoError::NotMedia {
                path: path.to_path_buf(),
                reason: "the video stream has no picture size".into(),
            });
        }
        let time_base = stream.time_base();
        let rotation_deg = display_rotation(&stream);
        let stream_index = stream.index();
        let zero_pts = zero_pts(&input, &stream);
        let fps = frame_rate(&stream);
        let duration_s = duration_seconds(&input, &stream);
        let frames = stream.frames();
        let (width, height) = display_size(coded_width, coded_height, sample_aspect, rotation_deg);
        for (picture_width, picture_height) in [(coded_width, coded_height), (width, height)] {
            picture::check_size(picture_width, picture_height).map_err(|source| {
                VideoError::PictureTooLarge {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        }
        let info = VideoInfo {
            path: path.to_path_buf(),
            container: input.format().name().to_string(),
            codec: codec_id.name().to_string(),
            duration_s,
            coded_width,
            coded_height,
            width,
            height,
            fps,
            variable_frame_rate: false,
            rotation_deg,
            start_time_s: zero_pts as f64 * f64::from(time_base),
            frame_count: (frames > 0).then_some(frames as u64),
            has_audio,
        };
        Ok(Self {
            input,
            stream_index,
            time_base,
            zero_pts,
            info,
        })
    }

    /// Seconds from the start of the file for a timestamp of the video stream.
    pub(super) fn seconds(&self, pts: i64) -> f64 {
        (pts - self.zero_pts) as f64 * f64::from(self.time_base)
    }

    /// Demuxes the first packets and reports whether their durations vary.
    ///
    /// Constant-rate files have equal steps between sorted timestamps (up to the rounding
    /// of the time base); variable-rate files do not.
    fn detect_variable_rate(&mut self) -> bool {
        let mut timestamps = Vec::with_capacity(RATE_PROBE_PACKETS);
        for (stream, packet) in self.input.packets() {
            if stream.index() != self.stream_index {
                continue;
            }
            if let Some(pts) = packet.pts() {
                timestamps.push(pts);
            }
            if timestamps.len() >= RATE_PROBE_PACKETS {
                break;
            }
        }
        varies(&mut timestamps)
    }
}

/// How many of the highest timestamps are ignored: packets arrive in decoding order, so
/// with B-frames the last few presentation times of a prefix of the stream have holes.
const REORDER_DEPTH: usize = 16;

/// Whether the steps between sorted timestamps differ by more than a quarter of their median.
fn varies(timestamps: &mut [i64]) -> bool {
    timestamps.sort_unstable();
    let complete = timestamps
        .len()
        .saturating_sub(REORDER_DEPTH)
        .max(timestamps.len().min(4));
    let mut steps: Vec<i64> = timestamps[..complete]
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .filter(|step| *step > 0)
        .collect();
    if steps.len() < 3 {
        return false;
    }
    steps.sort_unstable();
    let median = steps[steps.len() / 2] as f64;
    let spread = (steps[steps.len() - 1] - steps[0]) as f64;
    spread > 0.25 * median
}

/// The video stream a player would show: FFmpeg's best video stream, skipping cover art.
fn main_video_stream(input: &Input) -> Option<ffmpeg_next::format::stream::Stream<'_>> {
    let is_picture = |stream: &ffmpeg_next::format::stream::Stream| {
        stream.parameters().medium() == media::Type::Video
            && !stream.disposition().contains(Disposition::ATTACHED_PIC)
    };
    match input.streams().best(media::Type::Video) {
        Some(best) if is_picture(&best) => Some(best),
        _ => input.streams().find(is_picture),
    }
}

/// The stream timestamp shown by players as 0: the container's start time when it has one,
/// else the stream's own start time, else 0.
fn zero_pts(input: &Input, stream: &ffmpeg_next::format::stream::Stream) -> i64 {
    // SAFETY: reading a plain field of the AVFormatContext owned by `input`.
    let container_start = unsafe { (*input.as_ptr()).start_time };
    if container_start != ffmpeg_next::ffi::AV_NOPTS_VALUE {
        let av_time_base = Rational(1, ffmpeg_next::ffi::AV_TIME_BASE);
        return rescale(container_start, av_time_base, stream.time_base());
    }
    match stream.start_time() {
        ffmpeg_next::ffi::AV_NOPTS_VALUE => 0,
        start => start,
    }
}

/// Converts a timestamp from one time base to another, rounding to nearest.
pub(super) fn rescale(value: i64, from: Rational, to: Rational) -> i64 {
    // SAFETY: a pure arithmetic function of FFmpeg's.
    unsafe { ffmpeg_next::ffi::av_rescale_q(value, from.into(), to.into()) }
}

fn frame_rate(stream: &ffmpeg_next::format::stream::Stream) -> f64 {
    let usable = |rate: Rational| rate.numerator() > 0 && rate.denominator() > 0;
    let average = stream.avg_frame_rate();
    let rate = if usable(average) {
        average
    } else {
        stream.rate()
    };
    if usable(rate) {
        f64::from(rate)
    } else {
        0.0
    }
}

fn duration_seconds(input: &Input, stream: &ffmpeg_next::format::stream::Stream) -> f64 {
    let stream_duration = stream.duration();
    if stream_duration > 0 && stream_duration != ffmpeg_next::ffi::AV_NOPTS_VALUE {
        return stream_duration as f64 * f64::from(stream.time_base());
    }
    let container_duration = input.duration();
    if container_duration > 0 {
        container_duration as f64 / f64::from(ffmpeg_next::ffi::AV_TIME_BASE)
    } else {
        0.0
    }
}

/// The clockwise rotation a player applies, from the stream's display matrix.
fn display_rotation(stream: &ffmpeg_next::format::stream::Stream) -> u32 {
    for side_data in stream.side_data() {
        if side_data.kind() != ffmpeg_next::codec::packet::side_data::Type::DisplayMatrix {
            continue;
        }
        let data = side_data.data();
        if data.len() < 9 * 4 {
            continue;
        }
        // SAFETY: the display matrix is nine 32-bit integers; `data` holds at least that many
        // bytes and av_display_rotation_get only reads them.
        let counter_clockwise =
            unsafe { ffmpeg_next::ffi::av_display_rotation_get(data.as_ptr() as *const i32) };
        if counter_clockwise.is_nan() {
            return 0;
        }
        let clockwise = (-counter_clockwise).rem_euclid(360.0);
        return ((clockwise / 90.0).round() as u32 % 4) * 90;
    }
    0
}

/// The displayed picture size: anamorphic pixels stretched, then rotated.
fn display_size(width: u32, height: u32, sample_aspect: Rational, rotation_deg: u32) -> (u32, u32) {
    let stretched = if sample_aspect.numerator() > 0 && sample_aspect.denominator() > 0 {
        let scaled = f64::from(width) * f64::from(sample_aspect);
        scaled.round().max(1.0) as u32
    } else {
        width
    };
    if rotation_deg % 180 == 90 {
        (height, stretched)
    } else {
        (stretched, height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_steps_with_rounding_are_not_variable() {
        let mut timestamps: Vec<i64> = (0..100).map(|i| (i as f64 * 512.5) as i64).collect();
        timestamps.swap(3, 7);
        // A B-frame reordered past the end of the probed prefix leaves a hole at the top.
        timestamps[99] += 512;
        assert!(!varies(&mut timestamps));
    }

    #[test]
    fn mixed_steps_are_variable() {
        let mut timestamps: Vec<i64> = (0..100)
            .map(|i| i * 1000 + (i / 10) * 500 * (i % 2))
            .collect();
        assert!(varies(&mut timestamps));
    }

    #[test]
    fn display_size_applies_rotation_and_aspect() {
        assert_eq!(display_size(1280, 720, Rational(1, 1), 90), (720, 1280));
        // 720 * 16 / 11 = 1047.27
        assert_eq!(display_size(720, 576, Rational(16, 11), 0), (1047, 576));
        assert_eq!(display_size(640, 480, Rational(0, 1), 180), (640, 480));
    }
}
