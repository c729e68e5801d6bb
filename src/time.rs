//! Media time: seconds from the start of a video as players and subtitle files count them.

use std::fmt;

use serde::{Deserialize, Serialize};

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
}
