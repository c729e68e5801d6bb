//! Progress by media time: a bar on a terminal, silence in pipes.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::time::MediaTime;

/// A progress bar counting media time processed out of the video's duration.
///
/// On a terminal it draws on stderr; when stderr is not a terminal it draws nothing, and
/// [`Progress::println`] writes plain lines to stderr instead (indicatif drops the lines
/// of a hidden bar).
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    visible: bool,
}

impl Progress {
    /// A bar for `duration` of media, labelled `label`; hidden unless stderr is a terminal
    /// and `quiet` is false.
    pub fn new(label: &str, duration: MediaTime, quiet: bool) -> Self {
        let visible = !quiet && std::io::stderr().is_terminal();
        let total_ms = duration.millis().max(1);
        let bar = if visible {
            let bar = ProgressBar::with_draw_target(Some(total_ms), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:30}] {msg} {percent:>3}% ({elapsed}, eta {eta})",
                )
                .expect("the progress template is valid")
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar, visible }
    }

    /// Records that media up to `time` has been processed.
    pub fn advance_to(&self, time: MediaTime) {
        if self.visible {
            let position = time.millis().min(self.bar.length().unwrap_or(u64::MAX));
            self.bar.set_position(position.max(self.bar.position()));
            self.bar.set_message(time.timecode());
        }
    }

    /// Prints a line for the user above the bar (or plainly when there is no bar).
    pub fn println(&self, line: impl AsRef<str>) {
        if self.visible {
            self.bar.println(line.as_ref());
        } else {
            // A closed stderr loses the line; `eprintln!` would panic.
            let _ = writeln!(std::io::stderr().lock(), "{}", line.as_ref());
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if self.visible {
            self.bar.finish_and_clear();
        }
    }
}
