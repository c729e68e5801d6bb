//! Decoding: frames in presentation order, sampled by time, converted to RGB; and accurate
//! seeking to the frame on screen at a given time.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::sync::Arc;

use ffmpeg_next::codec::discard::Discard;
use ffmpeg_next::codec::packet::Ref as _;
use ffmpeg_next::codec::threading;
use ffmpeg_next::decoder;
use ffmpeg_next::util::frame::video::Video as VideoFrame;
use ffmpeg_next::{Packet, Rational};
use image::RgbImage;

use super::convert::{Converter, ResizeMode, Size};
use super::input::open_live_input;
use super::live::{LiveSource, Watchdog};
use super::probe::{rescale, OpenedVideo, VideoInfo};
use super::sampling::{SampleRate, Sampler};
use super::VideoError;
use crate::time::MediaTime;

/// How many unreadable packets in a row end demuxing (a damaged file can otherwise spin).
const MAX_CONSECUTIVE_BAD_PACKETS: u32 = 1000;

/// Video packets read ahead of the one sent to the decoder, to know when each frame leaves
/// the screen (the next presentation time). Twice the deepest reordering H.264 and HEVC
/// allow (16 frames), so the next frame in presentation order is always among them.
const LOOKAHEAD_PACKETS: usize = 32;

/// What the decode stage delivers and how.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DecodeOptions {
    /// How often a frame is taken.
    pub sample_rate: SampleRate,
    /// The size frames are delivered at.
    pub size: Size,
    /// How the picture is fitted to `size`.
    pub mode: ResizeMode,
    /// Decode key frames only (much faster; the sample rate then applies to key frames).
    pub keyframes_only: bool,
    /// Where sampling starts: the first frame delivered is the one on screen at this time.
    /// Decoding starts at the key frame before it; times still count from the file's start.
    pub start: MediaTime,
    /// Where decoding stops: no frame shown from this time on is delivered; `None` for the
    /// end of the video.
    pub end: Option<MediaTime>,
    /// Decode every frame, even the ones sampling cannot use. By default a frame that no
    /// other frame depends on (a non-reference frame) and that is not on screen at any
    /// sampling instant is not decoded; the frames delivered are the same either way.
    pub decode_every_frame: bool,
}

impl DecodeOptions {
    /// Checks that the range from `start` to `end` lies in the video `info` describes.
    pub fn check_range(&self, info: &VideoInfo) -> Result<(), VideoError> {
        let bad_range = |problem: String| VideoError::BadSetting {
            problem: format!("{}: {problem}", info.path.display()),
        };
        if let Some(end) = self.end {
            if end <= self.start {
                return Err(bad_range(format!(
                    "the range to decode ends at {end}, not after its start at {}",
                    self.start
                )));
            }
        }
        if info.duration_s > 0.0 && self.start.seconds() >= info.duration_s {
            return Err(bad_range(format!(
                "the range to decode starts at {}, not before the end of the video at {}",
                self.start,
                MediaTime::from_seconds(info.duration_s)
            )));
        }
        Ok(())
    }
}

/// One sampled picture with its time.
#[derive(Debug, Clone)]
pub struct Frame {
    /// When the frame is shown, from the start of the file as players count it.
    pub time: MediaTime,
    /// The frame's raw presentation timestamp in the stream's time base.
    pub pts: i64,
    /// Position of the frame among all decoded frames of the stream, from 0; unknown for
    /// frames fetched by seeking, and for a range that starts after 0 (reached by seeking).
    pub number: Option<u64>,
    /// The picture, in display orientation.
    pub image: RgbImage,
}

/// How a decoding pass went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodeReport {
    /// Frames the decoder produced.
    pub frames_decoded: u64,
    /// Frames delivered after sampling.
    pub frames_delivered: u64,
    /// Frames not decoded because no sampling instant fell on them and no other frame
    /// needed them (see [`DecodeOptions::decode_every_frame`]).
    pub frames_skipped: u64,
    /// Packets the demuxer or decoder rejected as damaged and that were skipped.
    pub damaged_packets: u64,
    /// Spans of the video whose frames could not be decoded, in time order.
    pub gaps: Vec<DecodeGap>,
    /// Set when decoding ended before the end of the video: where and why.
    pub stopped_early: Option<String>,
}

/// A span of the video whose frames could not be decoded (damaged data): samples in it show
/// the last good frame before it, or are missing.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeGap {
    /// The time of the first frame that could not be decoded.
    pub start: MediaTime,
    /// The time of the next frame decoded after it (or the end of the video).
    pub end: MediaTime,
    /// Frames of the file in the span that the decoder could not produce; 0 when the
    /// demuxer skipped damaged data and the number is unknown.
    pub frames_lost: u64,
}

impl DecodeGap {
    /// Why the span has no frames, in a few words.
    pub fn reason(&self) -> String {
        match self.frames_lost {
            0 => "damaged data skipped while reading the file".to_string(),
            1 => "1 frame could not be decoded (damaged data)".to_string(),
            lost => format!("{lost} frames could not be decoded (damaged data)"),
        }
    }
}

/// Gaps closer than this many seconds are reported as one.
const GAP_MERGE_S: f64 = 1.0;

/// Bytes between two packets beyond which the demuxer is taken to have skipped data: what
/// containers put between packets (block, cluster and box headers) is far smaller.
const SKIPPED_BYTES: i64 = 4096;

/// A jump in the video's decoding time longer than this many frame durations, made just
/// after the demuxer skipped bytes, is a hole in the file.
const HOLE_FRAMES: f64 = 4.0;

/// How many video packets after skipped bytes a jump in time is put down to them: a demuxer
/// that resyncs inside damaged data can read a few packets out of it first.
const HOLE_WINDOW_PACKETS: u32 = 16;

/// Reads a video front to back, delivering sampled frames in presentation order.
pub struct FrameReader {
    stream: DecodingStream,
    converter: Converter,
    sampler: Sampler,
    /// The last decoded frame, shown until the next one arrives.
    held: VideoFrame,
    held_at: Option<FrameStamp>,
    scratch: VideoFrame,
    finished: bool,
    report: DecodeReport,
    /// Converts delivered frames to their native size too, when asked.
    native: Option<Converter>,
}

/// Time and identity of a decoded frame.
#[derive(Debug, Clone, Copy)]
struct FrameStamp {
    seconds: f64,
    pts: i64,
    number: Option<u64>,
}

impl FrameReader {
    /// Opens `path` for decoding with `options`.
    pub fn open(path: &Path, options: DecodeOptions) -> Result<Self, VideoError> {
        Self::from_stream(DecodingStream::open(path, options.keyframes_only)?, options)
    }

    /// Connects to a live `source`; reads give up when `watchdog` says so (a stop, or a
    /// silent source). Frames are sampled by the stream's presentation time from its first
    /// frame; `options.start` and `options.end` do not apply.
    pub fn open_live(
        source: &LiveSource,
        options: DecodeOptions,
        watchdog: Arc<Watchdog>,
    ) -> Result<Self, VideoError> {
        super::init();
        let input = open_live_input(source, &watchdog)?;
        let opened = OpenedVideo::from_input(Path::new(&source.to_string()), input)?;
        let mut stream = DecodingStream::from_opened(opened, options.keyframes_only)?;
        stream.watchdog = Some(watchdog);
        Self::from_stream(
            stream,
            DecodeOptions {
                start: MediaTime::ZERO,
                end: None,
                ..options
            },
        )
    }

    /// Also delivers every sampled frame at its native display size (see
    /// [`FrameReader::next_frame_with_picture`]), for a source that cannot be seeked back.
    pub fn with_native_pictures(mut self) -> Self {
        self.native = Some(self.stream.converter(Size::Native, ResizeMode::Crop));
        self
    }

    /// The read error that ended the input, if one did (not the end of the input).
    pub fn read_error(&self) -> Option<&str> {
        self.stream.read_error.as_deref()
    }

    fn from_stream(mut stream: DecodingStream, options: DecodeOptions) -> Result<Self, VideoError> {
        options.check_range(&stream.opened.info)?;
        let start = options.start.seconds();
        stream.range_end = options.end.map(MediaTime::seconds);
        if start > 0.0 {
            stream.seek_before(start)?;
            stream.range_start = start;
        }
        let converter = stream.converter(options.size, options.mode);
        let sampler = Sampler::new(options.sample_rate, start);
        // A live source is decoded as it comes: reading ahead would delay every frame.
        let plan_skips = matches!(options.sample_rate, SampleRate::PerSecond(_))
            && !options.keyframes_only
            && !options.decode_every_frame
            && stream.watchdog.is_none();
        if plan_skips {
            stream.skip_plan = Some(sampler.clone());
        }
        Ok(FrameReader {
            stream,
            converter,
            sampler,
            held: VideoFrame::empty(),
            held_at: None,
            scratch: VideoFrame::empty(),
            finished: false,
            report: DecodeReport::default(),
            native: None,
        })
    }

    /// What FFmpeg reports about the video.
    pub fn info(&self) -> &VideoInfo {
        &self.stream.opened.info
    }

    /// How decoding has gone so far; complete once [`FrameReader::next_frame`] returned `None`.
    pub fn report(&self) -> &DecodeReport {
        &self.report
    }

    /// The next sampled frame, or `None` at the end of the video.
    ///
    /// A damaged or truncated file ends early without an error: the frames before the
    /// damage are delivered and [`DecodeReport::stopped_early`] says where it stopped.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, VideoError> {
        Ok(self.next_frames()?.map(|(frame, _)| frame))
    }

    /// As [`FrameReader::next_frame`], with the frame at its native display size when the
    /// reader was made [`with_native_pictures`](FrameReader::with_native_pictures).
    pub fn next_frame_with_picture(
        &mut self,
    ) -> Result<Option<(Frame, Option<RgbImage>)>, VideoError> {
        self.next_frames()
    }

    fn next_frames(&mut self) -> Result<Option<(Frame, Option<RgbImage>)>, VideoError> {
        if self.finished {
            return Ok(None);
        }
        while self.stream.receive(&mut self.scratch)? {
            let Some(pts) = self.scratch.timestamp().or(self.scratch.pts()) else {
                continue;
            };
            let seconds = self.stream.opened.seconds(pts);
            if self.held_at.is_some_and(|held| seconds < held.seconds) {
                // Out-of-order timestamps from a damaged stream: keep time monotonic.
                continue;
            }
            if self.stream.range_end.is_some_and(|end| seconds >= end) {
                self.stream.reached_range_end = true;
                break;
            }
            // After a seek the frames' positions in the stream are unknown.
            let number = (self.stream.range_start == 0.0)
                .then_some(self.report.frames_decoded + self.stream.frames_skipped);
            let stamp = FrameStamp {
                seconds,
                pts,
                number,
            };
            self.report.frames_decoded += 1;
            let deliver_held = self.sampler.arrive(seconds);
            let delivered = if deliver_held {
                Some(self.deliver_held()?)
            } else {
                None
            };
            std::mem::swap(&mut self.held, &mut self.scratch);
            self.held_at = Some(stamp);
            if delivered.is_some() {
                return Ok(delivered);
            }
        }
        self.finished = true;
        let shown_until = self
            .held_at
            .map(|held| self.stream.shown_until(held.seconds));
        self.stream
            .close_gaps(shown_until.unwrap_or(self.stream.demuxed_until));
        self.report.damaged_packets = self.stream.damaged_packets;
        // Frames that may have been dropped and were never produced were dropped.
        self.report.frames_skipped = self.stream.frames_skipped
            + std::mem::take(&mut self.stream.maybe_skipped).len() as u64;
        self.report.gaps = std::mem::take(&mut self.stream.gaps);
        self.report.stopped_early = self.stream.stopped_early();
        match shown_until {
            Some(end) if self.sampler.finish(end) => Ok(Some(self.deliver_held()?)),
            _ => Ok(None),
        }
    }

    fn deliver_held(&mut self) -> Result<(Frame, Option<RgbImage>), VideoError> {
        let stamp = self
            .held_at
            .expect("a held frame exists when one is delivered");
        let image = self.converter.convert(&self.held)?;
        let native = match &mut self.native {
            Some(converter) => Some(converter.convert(&self.held)?),
            None => None,
        };
        self.report.frames_delivered += 1;
        let frame = Frame {
            time: MediaTime::from_seconds(stamp.seconds),
            pts: stamp.pts,
            number: stamp.number,
            image,
        };
        Ok((frame, native))
    }
}

impl Iterator for FrameReader {
    type Item = Result<Frame, VideoError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_frame().transpose()
    }
}

/// Fetches single frames by time: the frame on screen at `t`, found by seeking to the key
/// frame at or before `t` and decoding forward.
pub struct FrameSeeker {
    stream: DecodingStream,
    size: Size,
    mode: ResizeMode,
    converter: Converter,
}

impl FrameSeeker {
    /// Opens `path` for seeking; frames are delivered at `size` fitted with `mode`.
    pub fn open(path: &Path, size: Size, mode: ResizeMode) -> Result<Self, VideoError> {
        let stream = DecodingStream::open(path, false)?;
        let converter = stream.converter(size, mode);
        Ok(FrameSeeker {
            stream,
            size,
            mode,
            converter,
        })
    }

    /// What FFmpeg reports about the video.
    pub fn info(&self) -> &VideoInfo {
        &self.stream.opened.info
    }

    /// The frame a player shows at `time`: the last frame whose time is at or before it
    /// (the first frame for times before it, the last frame for times past the end).
    pub fn frame_at(&mut self, time: MediaTime) -> Result<Frame, VideoError> {
        self.stream.seek_before(time.seconds())?;
        let mut current = VideoFrame::empty();
        let mut previous = VideoFrame::empty();
        let mut previous_at: Option<(f64, i64)> = None;
        // A tolerance below any real frame duration absorbs time-base rounding.
        let target = time.seconds() + 1e-6;
        while self.stream.receive(&mut current)? {
            let Some(pts) = current.timestamp().or(current.pts()) else {
                continue;
            };
            let seconds = self.stream.opened.seconds(pts);
            if seconds > target && previous_at.is_some() {
                break;
            }
            std::mem::swap(&mut previous, &mut current);
            previous_at = Some((seconds, pts));
            if seconds > target {
                break;
            }
        }
        let Some((seconds, pts)) = previous_at else {
            return Err(VideoError::Decode {
                path: self.stream.opened.info.path.clone(),
                problem: format!("no frame could be decoded at {time}"),
            });
        };
        Ok(Frame {
            time: MediaTime::from_seconds(seconds),
            pts,
            number: None,
            image: self.converter.convert(&previous)?,
        })
    }

    /// The size and mode frames are delivered at.
    pub fn output(&self) -> (Size, ResizeMode) {
        (self.size, self.mode)
    }
}

/// An opened input with a running decoder: feeds packets, hands out decoded frames, and
/// keeps track of damage and of where demuxing stopped.
struct DecodingStream {
    opened: OpenedVideo,
    decoder: decoder::Video,
    keyframes_only: bool,
    draining: bool,
    /// Presentation time (seconds) reached by the last packet read, end included.
    demuxed_until: f64,
    read_error: Option<String>,
    damaged_packets: u64,
    /// Where the range decoded starts, in seconds; frames lost before it are not gaps (the
    /// decoder drops the frames that lead into the key frame a seek lands on).
    range_start: f64,
    /// Where the range decoded ends, in seconds, if before the end of the video.
    range_end: Option<f64>,
    /// Whether decoding stopped at `range_end`.
    reached_range_end: bool,
    /// Presentation timestamps of the packets sent to the decoder whose frames have not
    /// come out yet. Frames come out in presentation order, so once a later frame has come
    /// out, an earlier timestamp still here is a frame the decoder could not produce.
    awaited: BTreeSet<i64>,
    /// Whether decoded frames carry their packets' timestamps, so that lost frames show.
    matches_frames: bool,
    /// Where the demuxer started skipping damaged data (seconds), until the next good packet.
    skipping_since: Option<f64>,
    /// Where the last packet read ends in the file (bytes), when the container says.
    packet_end_byte: Option<i64>,
    /// Video packets read since the demuxer last skipped bytes, within the window in which a
    /// jump in time is put down to them.
    packets_since_skip: Option<u32>,
    /// When the last video packet ends (decoding time, seconds) and how long it lasts.
    previous_video: Option<(f64, f64)>,
    /// The gaps found so far, in time order.
    gaps: Vec<DecodeGap>,
    /// For a live source: told of every packet read, so that a silent source is noticed.
    watchdog: Option<Arc<Watchdog>>,
    /// Video packets read but not yet sent to the decoder.
    lookahead: VecDeque<Packet>,
    /// Whether the demuxer has no more packets.
    demuxed_all: bool,
    /// The sampling instants, when frames off them may be skipped.
    skip_plan: Option<Sampler>,
    /// Whether the decoder is told to drop non-reference frames.
    skipping_non_reference: bool,
    /// Timestamps of frames the decoder may have dropped, not yet known either way.
    maybe_skipped: BTreeSet<i64>,
    /// Frames the decoder dropped because sampling could not use them.
    frames_skipped: u64,
}

impl DecodingStream {
    fn open(path: &Path, keyframes_only: bool) -> Result<Self, VideoError> {
        Self::from_opened(OpenedVideo::open(path)?, keyframes_only)
    }

    fn from_opened(opened: OpenedVideo, keyframes_only: bool) -> Result<Self, VideoError> {
        let path = opened.info.path.clone();
        let decoder_error = |error: ffmpeg_next::Error| VideoError::Decode {
            path: path.clone(),
            problem: format!("cannot start the video decoder: {error}"),
        };
        let stream = opened
            .input
            .stream(opened.stream_index)
            .expect("the chosen stream exists");
        let mut context =
            ffmpeg_next::codec::context::Context::from_parameters(stream.parameters())
                .map_err(decoder_error)?;
        context.set_threading(threading::Config {
            kind: threading::Type::Frame,
            count: 0,
            ..Default::default()
        });
        let mut decoder = context.decoder();
        decoder.set_packet_time_base(opened.time_base);
        if keyframes_only {
            decoder.skip_frame(Discard::NonKey);
        }
        let decoder = decoder.video().map_err(decoder_error)?;
        Ok(DecodingStream {
            opened,
            decoder,
            keyframes_only,
            draining: false,
            demuxed_until: 0.0,
            read_error: None,
            damaged_packets: 0,
            range_start: 0.0,
            range_end: None,
            reached_range_end: false,
            awaited: BTreeSet::new(),
            matches_frames: true,
            skipping_since: None,
            packet_end_byte: None,
            packets_since_skip: None,
            previous_video: None,
            gaps: Vec::new(),
            watchdog: None,
            lookahead: VecDeque::new(),
            demuxed_all: false,
            skip_plan: None,
            skipping_non_reference: false,
            maybe_skipped: BTreeSet::new(),
            frames_skipped: 0,
        })
    }

    fn converter(&self, size: Size, mode: ResizeMode) -> Converter {
        let info = &self.opened.info;
        let pixel_aspect = if info.rotation_deg % 180 == 90 {
            f64::from(info.height) / f64::from(info.coded_width)
        } else {
            f64::from(info.width) / f64::from(info.coded_width)
        };
        Converter::new(
            &info.path,
            size,
            mode,
            info.rotation_deg,
            pixel_aspect,
            (info.width, info.height),
        )
    }

    /// The duration of one frame at the average rate (0.04 s when the rate is unknown).
    fn nominal_frame_seconds(&self) -> f64 {
        let fps = self.opened.info.fps;
        if fps > 0.0 {
            1.0 / fps
        } else {
            0.04
        }
    }

    /// When the last frame, shown from `seconds`, leaves the screen: one nominal frame later,
    /// but not after the video's stated end or the end of the range decoded.
    fn shown_until(&self, seconds: f64) -> f64 {
        let nominal_end = seconds + self.nominal_frame_seconds();
        let duration = self.opened.info.duration_s;
        let video_end = if duration > seconds {
            nominal_end.min(duration)
        } else {
            nominal_end
        };
        self.range_end.map_or(video_end, |end| video_end.min(end))
    }

    /// Decodes the next frame into `frame`; `false` once the stream is exhausted.
    fn receive(&mut self, frame: &mut VideoFrame) -> Result<bool, VideoError> {
        loop {
            match self.decoder.receive_frame(frame) {
                Ok(()) => {
                    match frame.pts() {
                        Some(pts) => self.frame_came_out(pts),
                        None => {
                            // Frames cannot be matched to packets: no gaps can be found.
                            self.matches_frames = false;
                            self.awaited.clear();
                        }
                    }
                    return Ok(true);
                }
                Err(ffmpeg_next::Error::Eof) => return Ok(false),
                Err(ffmpeg_next::Error::Other { errno }) if errno == libc_eagain() => {
                    if self.draining {
                        return Ok(false);
                    }
                    self.feed();
                }
                Err(ffmpeg_next::Error::InvalidData) => {
                    self.damaged_packets += 1;
                }
                Err(error) => {
                    return Err(VideoError::Decode {
                        path: self.opened.info.path.clone(),
                        problem: format!("decoding failed: {error}"),
                    })
                }
            }
        }
    }

    /// Sends the next packet of the video stream to the decoder, or end-of-stream.
    fn feed(&mut self) {
        loop {
            while self.lookahead.len() <= LOOKAHEAD_PACKETS && !self.demuxed_all {
                match self.read_video_packet() {
                    Some(packet) => self.lookahead.push_back(packet),
                    None => self.demuxed_all = true,
                }
            }
            let Some(packet) = self.lookahead.pop_front() else {
                break;
            };
            let skippable = self.skippable(&packet);
            if skippable != self.skipping_non_reference {
                self.skipping_non_reference = skippable;
                self.decoder.skip_frame(if skippable {
                    Discard::NonReference
                } else {
                    Discard::Default
                });
            }
            // SAFETY: reading a plain field of the packet just read.
            let discarded =
                unsafe { (*packet.as_ptr()).flags } & ffmpeg_next::ffi::AV_PKT_FLAG_DISCARD != 0;
            // A frame the decoder may drop on purpose is not awaited (not a lost frame).
            let awaited = self.matches_frames && !discarded && !skippable;
            if let Some(pts) = packet.pts() {
                if awaited {
                    self.awaited.insert(pts);
                } else if skippable {
                    self.maybe_skipped.insert(pts);
                }
            }
            match self.decoder.send_packet(&packet) {
                Ok(()) => return,
                Err(ffmpeg_next::Error::InvalidData) => self.damaged_packets += 1,
                Err(_) => self.damaged_packets += 1,
            }
        }
        self.draining = true;
        // Sending end-of-stream twice is harmless; its error carries no information.
        let _ = self.decoder.send_eof();
    }

    /// Whether the frame of `packet` (the next to send) need not be decoded: sampling
    /// cannot use it, because no sampling instant falls while it is on screen (from its
    /// time to the next frame's, which is among the packets read ahead). The decoder then
    /// drops it only if no other frame depends on it; either way the frames delivered are
    /// those of a full decode.
    fn skippable(&self, packet: &Packet) -> bool {
        let (Some(plan), Some(pts)) = (&self.skip_plan, packet.pts()) else {
            return false;
        };
        if packet.is_key() {
            return false;
        }
        let next = self
            .lookahead
            .iter()
            .filter_map(Packet::pts)
            .filter(|&later| later > pts)
            .min();
        next.is_some_and(|next| {
            !plan.may_deliver(self.opened.seconds(pts), self.opened.seconds(next))
        })
    }

    /// Reads the next packet of the video stream to decode, keeping track of damage and of
    /// time; `None` at the end of the input or after a read error.
    fn read_video_packet(&mut self) -> Option<Packet> {
        let mut packet = Packet::empty();
        let mut bad_in_a_row = 0;
        loop {
            match packet.read(&mut self.opened.input) {
                Ok(()) => {}
                Err(ffmpeg_next::Error::Eof) => return None,
                Err(ffmpeg_next::Error::InvalidData)
                    if bad_in_a_row < MAX_CONSECUTIVE_BAD_PACKETS =>
                {
                    bad_in_a_row += 1;
                    self.damaged_packets += 1;
                    self.skipping_since.get_or_insert(self.demuxed_until);
                    continue;
                }
                Err(error) => {
                    self.read_error = Some(error.to_string());
                    return None;
                }
            }
            bad_in_a_row = 0;
            if let Some(watchdog) = &self.watchdog {
                watchdog.heard();
            }
            self.note_position(&packet);
            if packet.stream() != self.opened.stream_index {
                continue;
            }
            self.note_video_time(&packet);
            if let Some(pts) = packet.pts() {
                let seconds = self.opened.seconds(pts);
                if let Some(since) = self.skipping_since.take() {
                    self.add_gap(since, seconds, 0);
                }
                let end = pts + packet.duration().max(0);
                self.demuxed_until = self.demuxed_until.max(self.opened.seconds(end));
            }
            if self.keyframes_only && !packet.is_key() {
                continue;
            }
            return Some(packet);
        }
    }

    /// Notes whether the demuxer skipped bytes before `packet` (of any stream).
    fn note_position(&mut self, packet: &Packet) {
        let Some(position) = i64::try_from(packet.position())
            .ok()
            .filter(|&position| position >= 0)
        else {
            return;
        };
        if let Some(end) = self.packet_end_byte {
            if position > end + SKIPPED_BYTES {
                self.packets_since_skip = Some(0);
            }
        }
        self.packet_end_byte = Some(position + packet.size() as i64);
    }

    /// Finds a hole before the video `packet`: its decoding time jumps far past the end of
    /// the previous video packet just after the demuxer skipped bytes (a demuxer that
    /// resyncs after damaged data drops the packets in it without an error). Either alone
    /// is normal: variable-rate video jumps in time, containers hold more than packets.
    fn note_video_time(&mut self, packet: &Packet) {
        let Some(timestamp) = packet.dts().or(packet.pts()) else {
            return;
        };
        let start = self.opened.seconds(timestamp);
        let duration = packet.duration().max(0) as f64 * f64::from(self.opened.time_base);
        let after_skip = self.packets_since_skip.is_some();
        self.packets_since_skip = self
            .packets_since_skip
            .map(|count| count + 1)
            .filter(|&count| count <= HOLE_WINDOW_PACKETS);
        if let Some((previous_end, previous_duration)) = self.previous_video {
            let hole = start - previous_end;
            if after_skip && previous_duration > 0.0 && hole > HOLE_FRAMES * previous_duration {
                self.add_gap(previous_end, start, 0);
                self.packets_since_skip = None;
            }
        }
        self.previous_video = Some((start + duration, duration));
    }

    /// A frame with timestamp `pts` came out of the decoder: the frames awaited before it
    /// were lost.
    fn frame_came_out(&mut self, pts: i64) {
        // Frames come out in presentation order: one that may have been dropped and is
        // earlier than this one was dropped.
        let later = self.maybe_skipped.split_off(&pts);
        self.frames_skipped += self.maybe_skipped.len() as u64;
        self.maybe_skipped = later;
        self.maybe_skipped.remove(&pts);
        let later = self.awaited.split_off(&pts);
        let lost = std::mem::replace(&mut self.awaited, later);
        self.awaited.remove(&pts);
        self.record_lost(&lost, self.opened.seconds(pts));
    }

    /// Records `lost` timestamps (in order) as a gap ending at `end` seconds, or when the
    /// last lost frame would have left the screen if that is later; frames outside the
    /// range decoded are left out.
    fn record_lost(&mut self, lost: &BTreeSet<i64>, end: f64) {
        let range = self.range_start..self.range_end.unwrap_or(f64::INFINITY);
        let times: Vec<f64> = lost
            .iter()
            .map(|&pts| self.opened.seconds(pts))
            .filter(|seconds| range.contains(seconds))
            .collect();
        if let (Some(&start), Some(&last)) = (times.first(), times.last()) {
            let end = end.max(last + self.nominal_frame_seconds());
            self.add_gap(start, end, times.len() as u64);
        }
    }

    /// Adds the part of a gap inside the range decoded, merged with the previous gap when
    /// they are close.
    fn add_gap(&mut self, start: f64, end: f64, frames_lost: u64) {
        let start = start.max(self.range_start);
        let end = self.range_end.map_or(end, |range_end| end.min(range_end));
        if end <= start {
            return;
        }
        if let Some(previous) = self.gaps.last_mut() {
            if start - previous.end.seconds() < GAP_MERGE_S {
                previous.end = MediaTime::from_seconds(end.max(previous.end.seconds()));
                previous.frames_lost += frames_lost;
                return;
            }
        }
        self.gaps.push(DecodeGap {
            start: MediaTime::from_seconds(start),
            end: MediaTime::from_seconds(end),
            frames_lost,
        });
    }

    /// Decoding ended with the last frame shown until `end` seconds: frames still awaited
    /// were lost, unless decoding stopped at the end of the range on purpose.
    fn close_gaps(&mut self, end: f64) {
        let awaited = std::mem::take(&mut self.awaited);
        if !self.reached_range_end {
            self.record_lost(&awaited, end);
        }
        if let Some(since) = self.skipping_since.take() {
            self.add_gap(since, end, 0);
        }
    }

    /// Seeks to the key frame at or before `seconds` and resets the decoder.
    fn seek_before(&mut self, seconds: f64) -> Result<(), VideoError> {
        let time_base = self.opened.time_base;
        let stream_ts = self.opened.zero_pts + (seconds / f64::from(time_base)).floor() as i64;
        let av_time_base = Rational(1, ffmpeg_next::ffi::AV_TIME_BASE);
        let target = rescale(stream_ts, time_base, av_time_base);
        self.opened
            .input
            .seek(target, ..target)
            .or_else(|_| self.opened.input.seek(i64::MIN, ..))
            .map_err(|error| VideoError::Decode {
                path: self.opened.info.path.clone(),
                problem: format!(
                    "cannot seek to {}: {error}",
                    MediaTime::from_seconds(seconds)
                ),
            })?;
        self.decoder.flush();
        self.draining = false;
        self.lookahead.clear();
        self.demuxed_all = false;
        self.maybe_skipped.clear();
        self.awaited.clear();
        self.skipping_since = None;
        self.packet_end_byte = None;
        self.packets_since_skip = None;
        self.previous_video = None;
        Ok(())
    }

    /// A warning if demuxing stopped well before the video's stated end.
    fn stopped_early(&self) -> Option<String> {
        let duration = self.opened.info.duration_s;
        let reached = MediaTime::from_seconds(self.demuxed_until);
        if let Some(error) = &self.read_error {
            return Some(format!("reading stopped at {reached}: {error}"));
        }
        let tolerance = (3.0 * self.nominal_frame_seconds()).max(0.5);
        let expected_end = self.range_end.map_or(duration, |end| end.min(duration));
        let truncated = duration > 0.0 && self.demuxed_until + tolerance < expected_end;
        (truncated && !self.reached_range_end).then(|| {
            format!(
                "the file ends at {reached} but says it lasts {} (truncated?)",
                MediaTime::from_seconds(duration)
            )
        })
    }
}

// SAFETY: the demuxer and decoder contexts are owned exclusively and moved between threads,
// never shared; FFmpeg contexts have no thread affinity.
unsafe impl Send for DecodingStream {}

fn libc_eagain() -> i32 {
    ffmpeg_next::ffi::EAGAIN
}
