//! Which decoded frames are kept: sampling by presentation time, never by frame index, so
//! variable-frame-rate files sample evenly.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::VideoError;

/// How many frames per second of video are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SampleRateText", into = "SampleRateText")]
pub enum SampleRate {
    /// The frame on screen at every 1/N seconds.
    PerSecond(f64),
    /// Every decoded frame.
    All,
}

impl Default for SampleRate {
    fn default() -> Self {
        SampleRate::PerSecond(2.0)
    }
}

impl FromStr for SampleRate {
    type Err = VideoError;

    /// Parses a positive number of frames per second, or `all`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("all") {
            return Ok(SampleRate::All);
        }
        match text.parse::<f64>() {
            Ok(rate) => SampleRate::per_second(rate),
            Err(_) => Err(VideoError::BadSetting {
                problem: format!(
                    "bad sample rate `{text}`: expected frames per second (e.g. 2) or `all`"
                ),
            }),
        }
    }
}

impl SampleRate {
    /// A rate of `rate` frames per second; it must be positive and at most 1000.
    pub fn per_second(rate: f64) -> Result<Self, VideoError> {
        if rate.is_finite() && rate > 0.0 && rate <= 1000.0 {
            Ok(SampleRate::PerSecond(rate))
        } else {
            Err(VideoError::BadSetting {
                problem: format!("bad sample rate {rate}: expected a number in (0, 1000] or `all`"),
            })
        }
    }
}

impl fmt::Display for SampleRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SampleRate::PerSecond(rate) => write!(f, "{rate}"),
            SampleRate::All => f.write_str("all"),
        }
    }
}

/// The serialised form: a number, or the string `all`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum SampleRateText {
    Number(f64),
    Text(String),
}

impl TryFrom<SampleRateText> for SampleRate {
    type Error = VideoError;
    fn try_from(value: SampleRateText) -> Result<Self, Self::Error> {
        match value {
            SampleRateText::Number(rate) => SampleRate::per_second(rate),
            SampleRateText::Text(text) => text.parse(),
        }
    }
}

impl From<SampleRate> for SampleRateText {
    fn from(rate: SampleRate) -> Self {
        match rate {
            SampleRate::PerSecond(rate) => SampleRateText::Number(rate),
            SampleRate::All => SampleRateText::Text("all".into()),
        }
    }
}

/// Decides, as frames arrive in presentation order, which of them are on screen at the
/// sampling instants 0, 1/N, 2/N, ...
///
/// A frame is on screen from its own time until the next frame's, so whether a frame is
/// sampled is known when the next one arrives: [`Sampler::arrive`] answers for the previous
/// frame. The first frame also covers the instants before it.
#[derive(Debug, Clone)]
pub(super) struct Sampler {
    interval: Option<f64>,
    start: f64,
    /// Index of the next sampling instant, `start + next_index * interval`; counted rather
    /// than accumulated so that long videos do not drift.
    next_index: u64,
    seen_any: bool,
}

impl Sampler {
    /// A sampler for `rate`, starting at the instant `start` seconds.
    pub(super) fn new(rate: SampleRate, start: f64) -> Self {
        Sampler {
            interval: match rate {
                SampleRate::PerSecond(rate) => Some(1.0 / rate),
                SampleRate::All => None,
            },
            start,
            next_index: 0,
            seen_any: false,
        }
    }

    /// A frame shown from `time` arrived; returns whether the previous frame was on screen
    /// at a sampling instant and so must be delivered.
    pub(super) fn arrive(&mut self, time: f64) -> bool {
        if !std::mem::replace(&mut self.seen_any, true) {
            return false;
        }
        let Some(interval) = self.interval else {
            return true;
        };
        let previous_sampled = self.next_instant(interval) < time;
        if previous_sampled {
            // The first instant at or after `time`.
            let index = ((time - self.start) / interval).ceil().max(0.0) as u64;
            self.next_index = index.max(self.next_index + 1);
            while self.next_instant(interval) < time {
                self.next_index += 1;
            }
        }
        previous_sampled
    }

    fn next_instant(&self, interval: f64) -> f64 {
        self.start + self.next_index as f64 * interval
    }

    /// Whether a frame shown from `from` until `until` (the next frame's time) may be
    /// delivered: whether a sampling instant lies between them, with a margin for rounding,
    /// so that an answer of `false` is certain. Every frame may be when all are sampled.
    pub(super) fn may_deliver(&self, from: f64, until: f64) -> bool {
        const MARGIN_S: f64 = 1e-6;
        let Some(interval) = self.interval else {
            return true;
        };
        let first = ((from - MARGIN_S - self.start) / interval).floor().max(0.0) as u64;
        (first..first + 3)
            .map(|index| self.start + index as f64 * interval)
            .any(|instant| instant >= from - MARGIN_S && instant < until + MARGIN_S)
    }

    /// The stream ended; the last frame was shown until `end`. Returns whether it must be
    /// delivered.
    pub(super) fn finish(&mut self, end: f64) -> bool {
        self.seen_any
            && self
                .interval
                .is_none_or(|interval| self.next_instant(interval) < end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a sampler over frames at `times` and returns the times of delivered frames.
    fn sample(rate: SampleRate, times: &[f64], end: f64) -> Vec<f64> {
        let mut sampler = Sampler::new(rate, 0.0);
        let mut kept = Vec::new();
        let mut previous = None;
        for &time in times {
            if sampler.arrive(time) {
                kept.push(previous.expect("a previous frame exists"));
            }
            previous = Some(time);
        }
        if sampler.finish(end) {
            kept.extend(previous);
        }
        kept
    }

    #[test]
    fn constant_rate_keeps_the_frame_on_screen_at_each_instant() {
        let times: Vec<f64> = (0..90).map(|i| i as f64 / 30.0).collect();
        let kept = sample(SampleRate::PerSecond(2.0), &times, 3.0);
        assert_eq!(kept.len(), 6);
        for (k, time) in kept.iter().enumerate() {
            assert!((time - k as f64 * 0.5).abs() < 1e-9, "{kept:?}");
        }
    }

    #[test]
    fn variable_rate_samples_by_time_not_index() {
        // 1 s at 60 fps, then 2 s at 10 fps, then 1 s at 30 fps.
        let mut times: Vec<f64> = (0..60).map(|i| i as f64 / 60.0).collect();
        times.extend((0..20).map(|i| 1.0 + i as f64 / 10.0));
        times.extend((0..30).map(|i| 3.0 + i as f64 / 30.0));
        let kept = sample(SampleRate::PerSecond(2.0), &times, 4.0);
        let expected = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5];
        assert_eq!(kept.len(), expected.len(), "{kept:?}");
        for (time, instant) in kept.iter().zip(expected) {
            assert!(*time <= instant + 1e-9 && instant - time < 0.1, "{kept:?}");
        }
    }

    #[test]
    fn frames_rarer_than_instants_are_delivered_once() {
        let times = [0.0, 2.0, 4.0];
        let kept = sample(SampleRate::PerSecond(2.0), &times, 6.0);
        assert_eq!(kept, vec![0.0, 2.0, 4.0]);
    }

    #[test]
    fn late_first_frame_covers_earlier_instants() {
        let times = [0.3, 0.6, 0.9];
        let kept = sample(SampleRate::PerSecond(2.0), &times, 1.2);
        assert_eq!(kept, vec![0.3, 0.9]);
    }

    #[test]
    fn only_frames_on_screen_at_an_instant_may_be_delivered() {
        let sampler = Sampler::new(SampleRate::PerSecond(2.0), 0.0);
        // At 30 fps, the frames shown at 0.5 s and 1.0 s.
        assert!(sampler.may_deliver(15.0 / 30.0, 16.0 / 30.0));
        assert!(sampler.may_deliver(29.0 / 30.0 + 0.01, 31.0 / 30.0));
        // Frames between the instants.
        assert!(!sampler.may_deliver(16.0 / 30.0, 17.0 / 30.0));
        assert!(!sampler.may_deliver(0.6, 0.9));
        // A frame ending just before an instant keeps a margin for rounding.
        assert!(sampler.may_deliver(0.9, 1.0 - 1e-9));
        assert!(Sampler::new(SampleRate::All, 0.0).may_deliver(0.1, 0.11));
        // Exactly what the sampler delivers, over a variable-rate run of frames.
        let mut times: Vec<f64> = (0..60).map(|i| i as f64 / 60.0).collect();
        times.extend((0..20).map(|i| 1.0 + i as f64 / 10.0));
        times.extend((0..45).map(|i| 3.0 + i as f64 / 30.0 + 0.004));
        let delivered = sample(SampleRate::PerSecond(2.0), &times, 4.6);
        for pair in times.windows(2) {
            if delivered.contains(&pair[0]) && pair[0] > 0.0 {
                assert!(sampler.may_deliver(pair[0], pair[1]), "{pair:?}");
            }
        }
    }

    #[test]
    fn all_keeps_every_frame() {
        let times = [0.0, 0.01, 0.02];
        assert_eq!(sample(SampleRate::All, &times, 0.03), times.to_vec());
    }

    #[test]
    fn rates_parse() {
        assert_eq!("all".parse::<SampleRate>().unwrap(), SampleRate::All);
        assert_eq!(
            "0.5".parse::<SampleRate>().unwrap(),
            SampleRate::PerSecond(0.5)
        );
        for bad in ["0", "-1", "fast", "inf"] {
            assert!(bad.parse::<SampleRate>().is_err(), "{bad}");
        }
    }
}
