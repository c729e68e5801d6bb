//! Media time: seconds from the start of a video as players and subtitle files count them.

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

#[cfg(test)]
mod tests {
    use super::*;

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
