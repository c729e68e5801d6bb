//! Media time: seconds from the start of a video as players and subtitle files count them,
//! frame rates and frame numbers, and every way keyscribe writes a time or a duration.
//!
//! Times are written in one format wherever people read them: `HH:MM:SS.mmm`
//! ([`MediaTime::timecode`]), as in the analysis document, WebVTT and the HTML report. Formats
//! with their own rules get their own writer here: SubRip's comma ([`MediaTime::srt_timecode`]),
//! editors' `HH:MM:SS:FF` frame timecodes ([`FrameRate::smpte_timecode`]) and file names
//! ([`MediaTime::file_stem`]). Lengths of time are written as durations ([`duration_text`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A point in a video, in seconds from the start of the file as players count it (the
/// stream's start time already subtracted). Never negative.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MediaTime(f64);

impl MediaTime {
    /// The start of the video.
    pub const ZERO: MediaTime = MediaTime(0.0);

    /// A time from seconds; negative and non-finite values clamp to zero.
    pub fn from_seconds(seconds: f64) -> Self {
        if seconds.is_finite() && seconds > 0.0 {
            MediaTime(seconds)
        } else {
            MediaTime(0.0)
        }
    }

    /// Seconds from the start.
    pub fn seconds(self) -> f64 {
        self.0
    }

    /// Whole milliseconds from the start, rounded to nearest.
    pub fn millis(self) -> u64 {
        (self.0 * 1000.0).round() as u64
    }

    /// `HH:MM:SS.mmm`, as in WebVTT and the analysis document.
    pub fn timecode(self) -> String {
        self.format_with('.')
    }

    /// `HH:MM:SS,mmm`, as in SRT.
    pub fn srt_timecode(self) -> String {
        self.format_with(',')
    }

    /// Seconds with three decimals, `3.754`: the same milliseconds as [`MediaTime::timecode`].
    pub fn seconds_text(self) -> String {
        let millis = self.millis();
        format!("{}.{:03}", millis / 1000, millis % 1000)
    }

    /// A name usable in file names that sorts in time order: `HH-MM-SS.mmm`.
    pub fn file_stem(self) -> String {
        self.timecode().replace(':', "-")
    }

    fn format_with(self, separator: char) -> String {
        let millis = self.millis();
        let (hours, rest) = (millis / 3_600_000, millis % 3_600_000);
        let (minutes, rest) = (rest / 60_000, rest % 60_000);
        let (seconds, millis) = (rest / 1000, rest % 1000);
        format!("{hours:02}:{minutes:02}:{seconds:02}{separator}{millis:03}")
    }
}

/// A duration for people: `<0.1 s` for what took almost nothing, `12.5 s` under a minute,
/// `12 min 34 s` under an hour, then `1 h 02 min`. Never a clock-like `12:34`, which would read
/// as a time in the video.
pub fn duration_text(seconds: f64) -> String {
    let seconds = if seconds.is_finite() {
        seconds.max(0.0)
    } else {
        0.0
    };
    if seconds > 0.0 && seconds < 0.05 {
        return "<0.1 s".to_string();
    }
    if seconds < 59.95 {
        return format!("{} s", decimal_text(seconds, 1));
    }
    let whole = seconds.round() as u64;
    if whole < 3600 {
        format!("{} min {:02} s", whole / 60, whole % 60)
    } else {
        format!("{} h {:02} min", whole / 3600, whole / 60 % 60)
    }
}

/// A number with at most `decimals` decimals and no trailing zeros: `29.97`, `0.5`, `4`.
pub fn decimal_text(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A video's frame rate as an exact fraction: `numerator` frames every `denominator`
/// seconds (30/1, 30000/1001, 25/1, ...). Frame numbers count from 0 at the start of the video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRate {
    numerator: u32,
    denominator: u32,
}

impl FrameRate {
    /// The highest frame rate taken as real; anything above is a broken value.
    const MAX_FPS: f64 = 100_000.0;

    /// The exact rate a measured `fps` stands for: a whole number of frames per second, an
    /// NTSC rate (`N*1000/1001`, e.g. 29.97), or else the rate rounded to 1/1000 frame per
    /// second. `None` for a rate that is not a positive finite number (an unknown rate).
    pub fn from_fps(fps: f64) -> Option<FrameRate> {
        if !(fps.is_finite() && fps > 0.0 && fps <= Self::MAX_FPS) {
            return None;
        }
        const TOLERANCE: f64 = 1e-3;
        let whole = fps.round();
        if whole >= 1.0 && (fps - whole).abs() < TOLERANCE {
            return Some(FrameRate::reduced(whole as u64, 1));
        }
        let ntsc = (fps * 1.001).round();
        if ntsc >= 1.0 && (fps - ntsc * 1000.0 / 1001.0).abs() < TOLERANCE {
            return Some(FrameRate::reduced(ntsc as u64 * 1000, 1001));
        }
        let thousandths = (fps * 1000.0).round().max(1.0);
        Some(FrameRate::reduced(thousandths as u64, 1000))
    }

    fn reduced(numerator: u64, denominator: u64) -> FrameRate {
        let (mut a, mut b) = (numerator, denominator);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        // Both fit: the numerator is at most MAX_FPS * 1001 and the divisor at least 1.
        FrameRate {
            numerator: (numerator / a) as u32,
            denominator: (denominator / a) as u32,
        }
    }

    /// Frames per `denominator` seconds.
    pub fn numerator(self) -> u32 {
        self.numerator
    }

    /// Seconds in which `numerator` frames are shown.
    pub fn denominator(self) -> u32 {
        self.denominator
    }

    /// Frames per second.
    pub fn fps(self) -> f64 {
        f64::from(self.numerator) / f64::from(self.denominator)
    }

    /// The number of the frame shown at `time`, rounded to the nearest frame start (so that
    /// a cut written at a frame's start lands on that frame).
    pub fn frame_at(self, time: MediaTime) -> u64 {
        (time.seconds() * self.fps()).round() as u64
    }

    /// When frame `frame` starts.
    pub fn frame_time(self, frame: u64) -> MediaTime {
        MediaTime::from_seconds(
            frame as f64 * f64::from(self.denominator) / f64::from(self.numerator),
        )
    }

    /// Frames per second of the timecode: the rate rounded to a whole number (30 for
    /// 29.97), as non-drop-frame timecode counts.
    pub fn timecode_fps(self) -> u64 {
        (self.fps().round() as u64).max(1)
    }

    /// Frame `frame` as a non-drop-frame timecode `HH:MM:SS:FF`, counting
    /// [`FrameRate::timecode_fps`] frames per timecode second (the hours keep counting past 99).
    pub fn smpte_timecode(self, frame: u64) -> String {
        let per_second = self.timecode_fps();
        let (whole_seconds, frames) = (frame / per_second, frame % per_second);
        let (hours, minutes, seconds) = (
            whole_seconds / 3600,
            whole_seconds / 60 % 60,
            whole_seconds % 60,
        );
        let digits = per_second.to_string().len().max(2);
        format!("{hours:02}:{minutes:02}:{seconds:02}:{frames:0digits$}")
    }
}

impl fmt::Display for FrameRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.numerator, self.denominator)
    }
}

impl fmt::Display for MediaTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.timecode())
    }
}

/// A time that is neither a number of seconds nor a timecode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "bad time `{0}`: expected seconds (e.g. 90.5) or a timecode [HH:]MM:SS[.mmm] (e.g. 01:30.5)"
)]
pub struct BadTime(String);

impl FromStr for MediaTime {
    type Err = BadTime;

    /// Parses seconds (`90.5`) or a timecode (`01:30.5`, `00:01:30.500`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadTime(text.to_string());
        let parts: Vec<&str> = text.trim().split(':').collect();
        let (whole_units, seconds) = parts.split_at(parts.len() - 1);
        let seconds: f64 = seconds[0].parse().map_err(|_| bad())?;
        if !seconds.is_finite() || seconds < 0.0 || (!whole_units.is_empty() && seconds >= 60.0) {
            return Err(bad());
        }
        let (hours, minutes) = match whole_units {
            [] => ("0", "0"),
            [minutes] => ("0", *minutes),
            [hours, minutes] => (*hours, *minutes),
            _ => return Err(bad()),
        };
        let hours: u32 = hours.parse().map_err(|_| bad())?;
        let minutes: u32 = minutes.parse().map_err(|_| bad())?;
        if whole_units.len() == 2 && minutes >= 60 {
            return Err(bad());
        }
        Ok(MediaTime(
            f64::from(hours) * 3600.0 + f64::from(minutes) * 60.0 + seconds,
        ))
    }
}

/// `at` as an RFC 3339 timestamp in UTC with milliseconds, e.g. `2026-12-03T14:05:09.125Z`.
pub fn rfc3339(at: std::time::SystemTime) -> String {
    let since_epoch = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let shifted = days as i64 + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since_epoch.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps_are_utc_with_milliseconds() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_796_306_709_125);
        assert_eq!(rfc3339(at), "2026-12-03T14:05:09.125Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn timecodes_round_to_milliseconds() {
        let time = MediaTime::from_seconds(3.7544);
        assert_eq!(time.timecode(), "00:00:03.754");
        assert_eq!(MediaTime::from_seconds(3.7546).timecode(), "00:00:03.755");
        assert_eq!(
            MediaTime::from_seconds(2.0 * 3600.0 + 61.5).srt_timecode(),
            "02:01:01,500"
        );
        assert_eq!(MediaTime::from_seconds(59.9996).timecode(), "00:01:00.000");
        assert_eq!(time.file_stem(), "00-00-03.754");
        assert_eq!(time.seconds_text(), "3.754");
        // 75 frames at 29.97: 2.5025 s, rounded the same way in both forms.
        let frames = MediaTime::from_seconds(75.0 * 1001.0 / 30000.0);
        assert_eq!(
            (frames.timecode(), frames.seconds_text()),
            ("00:00:02.503".into(), "2.503".into())
        );
    }

    #[test]
    fn durations_never_look_like_clock_times() {
        assert_eq!(duration_text(0.01), "<0.1 s");
        assert_eq!(duration_text(0.0), "0 s");
        assert_eq!(duration_text(41.63), "41.6 s");
        assert_eq!(duration_text(30.0), "30 s");
        assert_eq!(duration_text(59.96), "1 min 00 s");
        assert_eq!(duration_text(754.0), "12 min 34 s");
        assert_eq!(duration_text(3725.5), "1 h 02 min");
        assert_eq!(duration_text(f64::NAN), "0 s");
        assert_eq!(decimal_text(29.97, 2), "29.97");
        assert_eq!(decimal_text(0.5, 3), "0.5");
        assert_eq!(decimal_text(4.0, 1), "4");
    }

    #[test]
    fn frame_rates_are_exact_fractions() {
        let rate = |fps: f64| FrameRate::from_fps(fps).map(|rate| rate.to_string());
        assert_eq!(rate(30.0).as_deref(), Some("30/1"));
        assert_eq!(rate(29.97).as_deref(), Some("30000/1001"));
        assert_eq!(rate(30000.0 / 1001.0).as_deref(), Some("30000/1001"));
        assert_eq!(rate(23.976).as_deref(), Some("24000/1001"));
        assert_eq!(rate(59.94).as_deref(), Some("60000/1001"));
        assert_eq!(rate(25.0000001).as_deref(), Some("25/1"));
        assert_eq!(rate(12.5).as_deref(), Some("25/2"));
        assert_eq!(rate(0.5).as_deref(), Some("1/2"));
        for broken in [0.0, -30.0, f64::NAN, f64::INFINITY, 1e9] {
            assert_eq!(FrameRate::from_fps(broken), None, "{broken}");
        }
    }

    #[test]
    fn frame_numbers_and_timecodes() {
        let thirty = FrameRate::from_fps(30.0).unwrap();
        assert_eq!(thirty.frame_at(MediaTime::from_seconds(11.8)), 354);
        assert_eq!(thirty.frame_at(MediaTime::from_seconds(17.55)), 527);
        assert!((thirty.frame_time(354).seconds() - 11.8).abs() < 1e-12);
        assert_eq!(thirty.smpte_timecode(354), "00:00:11:24");
        assert_eq!(thirty.smpte_timecode(30 * 3600 + 1), "01:00:00:01");
        let ntsc = FrameRate::from_fps(29.97).unwrap();
        assert_eq!(ntsc.timecode_fps(), 30);
        // Non-drop-frame timecode counts frames: an hour of 29.97 video reads 00:59:56:12.
        let hour = ntsc.frame_at(MediaTime::from_seconds(3600.0));
        assert_eq!(hour, 107_892);
        assert_eq!(ntsc.smpte_timecode(hour), "00:59:56:12");
        let fast = FrameRate::from_fps(120.0).unwrap();
        assert_eq!(fast.smpte_timecode(119), "00:00:00:119");
    }

    #[test]
    fn negative_and_nan_clamp_to_zero() {
        assert_eq!(MediaTime::from_seconds(-0.5), MediaTime::ZERO);
        assert_eq!(MediaTime::from_seconds(f64::NAN), MediaTime::ZERO);
    }

    #[test]
    fn times_parse_as_seconds_or_timecodes() {
        let parse = |text: &str| text.parse::<MediaTime>().map(MediaTime::seconds);
        assert_eq!(parse("90.5"), Ok(90.5));
        assert_eq!(parse("01:30.5"), Ok(90.5));
        assert_eq!(parse("1:02:03.250"), Ok(3723.25));
        assert_eq!(parse("0"), Ok(0.0));
        for bad in [
            "", "-1", "1:60", "1:61:00", "a:10", "1:2:3:4", "inf", "NaN", "10s",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
