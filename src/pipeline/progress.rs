//! Progress of a job: bars on a terminal, silence in pipes.
//!
//! An analysis shows two bars, so that the whole job is covered: decoding and embedding by
//! media time, and captioning by keyframes (`captioning 2/3`). Keyframes are found while the
//! video is still being embedded, so until selection has finished the captioning total is
//! the number found so far, and the bar says so.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::time::MediaTime;

/// Progress bars on stderr: media time processed out of the video's duration, and for an
/// analysis with captions, keyframes captioned out of those found.
///
/// On a terminal the bars draw on stderr; when stderr is not a terminal (or `quiet` is set)
/// they draw nothing, and [`Progress::println`] writes plain lines to stderr instead
/// (indicatif drops the lines of hidden bars). The counts are kept either way.
#[derive(Clone)]
pub struct Progress {
    bars: MultiProgress,
    media: ProgressBar,
    captions: Option<ProgressBar>,
    media_done: Arc<AtomicBool>,
    visible: bool,
}

impl Progress {
    /// A bar for `duration` of media, labelled `label`; hidden unless stderr is a terminal
    /// and `quiet` is false.
    pub fn new(label: &str, duration: MediaTime, quiet: bool) -> Self {
        let visible = !quiet && std::io::stderr().is_terminal();
        let bars = MultiProgress::with_draw_target(if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let media = bars.add(ProgressBar::new(duration.millis().max(1)));
        media.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{bar:30}] {msg} {percent:>3}% ({elapsed}, eta {eta})",
            )
            .expect("the progress template is valid")
            .progress_chars("=> "),
        );
        media.set_prefix(label.to_string());
        if visible {
            media.enable_steady_tick(Duration::from_millis(200));
        }
        Progress {
            bars,
            media,
            captions: None,
            media_done: Arc::new(AtomicBool::new(false)),
            visible,
        }
    }

    /// The bars of an analysis: `analysing` by media time and, when `captions` is set, a
    /// second bar counting keyframes captioned.
    pub fn for_analysis(duration: MediaTime, captions: bool, quiet: bool) -> Self {
        let mut progress = Progress::new("analysing", duration, quiet);
        if captions {
            // No length until a keyframe is found: indicatif draws 0 of 0 as a full bar.
            let bar = progress.bars.add(ProgressBar::no_length());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:30}] {msg} ({elapsed}, eta {eta})",
                )
                .expect("the progress template is valid")
                .progress_chars("=> "),
            );
            bar.set_prefix("captions");
            bar.set_message(caption_message(0, 0, false));
            if progress.visible {
                bar.enable_steady_tick(Duration::from_millis(200));
            }
            progress.captions = Some(bar);
        }
        progress
    }

    /// Records that media up to `time` has been processed.
    pub fn advance_to(&self, time: MediaTime) {
        let position = time.millis().min(self.media.length().unwrap_or(u64::MAX));
        self.media.set_position(position.max(self.media.position()));
        self.media.set_message(time.timecode());
    }

    /// Records a keyframe found (it joins the captioning queue).
    pub fn keyframe_found(&self) {
        if let Some(bar) = &self.captions {
            bar.set_length(bar.length().unwrap_or(0) + 1);
            self.update_caption_message(bar);
        }
    }

    /// Records that the whole video has been processed: the media bar is full and no more
    /// keyframes will be found.
    pub fn media_done(&self) {
        if let Some(length) = self.media.length() {
            self.media.set_position(length);
        }
        self.media.set_message("done");
        self.media_done.store(true, Ordering::SeqCst);
        if let Some(bar) = &self.captions {
            self.update_caption_message(bar);
        }
    }

    /// Records a keyframe captioned.
    pub fn keyframe_captioned(&self) {
        if let Some(bar) = &self.captions {
            bar.inc(1);
            self.update_caption_message(bar);
        }
    }

    fn update_caption_message(&self, bar: &ProgressBar) {
        bar.set_message(caption_message(
            bar.position(),
            bar.length().unwrap_or(0),
            self.media_done.load(Ordering::SeqCst),
        ));
    }

    /// Prints a line for the user above the bars (or plainly when there are no bars).
    pub fn println(&self, line: impl AsRef<str>) {
        if self.visible {
            self.bars.suspend(|| eprintln!("{}", line.as_ref()));
        } else {
            // A closed stderr loses the line; `eprintln!` would panic.
            let _ = writeln!(std::io::stderr().lock(), "{}", line.as_ref());
        }
    }

    /// Runs `print` with the bars lifted off the terminal, so that what it writes (to
    /// stdout, say) is not drawn over.
    pub fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        if self.visible {
            self.bars.suspend(print)
        } else {
            print()
        }
    }

    /// Removes the bars.
    pub fn finish(&self) {
        if self.visible {
            self.media.finish_and_clear();
            if let Some(bar) = &self.captions {
                bar.finish_and_clear();
            }
        }
    }
}

/// `captioning 2/3` once every keyframe is known, `captioning 2 of 3 found so far` before.
fn caption_message(captioned: u64, found: u64, total_known: bool) -> String {
    if total_known {
        format!("captioning {captioned}/{found}")
    } else {
        format!("captioning {captioned} of {found} found so far")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captioning_is_counted_against_the_keyframes_found() {
        let progress = Progress::for_analysis(MediaTime::from_seconds(30.0), true, true);
        let captions = progress.captions.clone().expect("a captioning bar");
        assert_eq!(
            captions.length(),
            None,
            "not drawn full before any keyframe"
        );
        progress.advance_to(MediaTime::from_seconds(10.0));
        progress.keyframe_found();
        progress.keyframe_found();
        progress.keyframe_captioned();
        assert_eq!(progress.media.position(), 10_000);
        assert_eq!((captions.position(), captions.length()), (1, Some(2)));
        assert_eq!(captions.message(), "captioning 1 of 2 found so far");

        progress.keyframe_found();
        progress.media_done();
        assert_eq!(progress.media.position(), 30_000);
        assert_eq!(captions.message(), "captioning 1/3");
        progress.keyframe_captioned();
        progress.keyframe_captioned();
        assert_eq!(captions.message(), "captioning 3/3");
        assert_eq!((captions.position(), captions.length()), (3, Some(3)));
    }

    #[test]
    fn media_time_never_goes_back_or_past_the_end() {
        let progress = Progress::new("frames", MediaTime::from_seconds(5.0), true);
        progress.advance_to(MediaTime::from_seconds(3.0));
        progress.advance_to(MediaTime::from_seconds(2.0));
        assert_eq!(progress.media.position(), 3_000);
        progress.advance_to(MediaTime::from_seconds(9.0));
        assert_eq!(progress.media.position(), 5_000);
        assert!(progress.captions.is_none());
        // Without a captioner the keyframe calls are harmless.
        progress.keyframe_found();
        progress.keyframe_captioned();
    }
}
