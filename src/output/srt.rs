//! SubRip (`.srt`) subtitles: one numbered cue per captioned keyframe.
//!
//! SubRip has no escape syntax, so a caption is made harmless by construction instead:
//!
//! - A cue's text cannot hold a timing line: every `>` that directly follows a `-` is written
//!   `›` (U+203A), so the text never contains `->` and therefore never `-->`, whatever the
//!   caption (`--->` becomes `--›>`, not `-->`). One pass over the characters, no search and
//!   replace that could rebuild what it removed.
//! - It cannot hold a blank line or any line break of its own: lines are the wrapping's
//!   ([`super::caption_cues`] splits the caption at every kind of whitespace, `\r`, U+2028 and
//!   U+2029 included), and control characters and byte-order marks are dropped.
//! - No line of it is a bare number that a reader could take for the next cue's number: a
//!   line of digits alone joins the line before it (or after it), unless the whole caption is
//!   that number.
//! - Its first line cannot be read as the cue's position (`X1:… X2:… Y1:… Y2:…`, which some
//!   readers accept on the line after the timing): a first line starting `X1:` has that
//!   colon written `∶` (U+2236).

use super::{caption_cues, Span};
use crate::analysis::Analysis;

/// What a `>` that follows a `-` is written as: a look-alike that no reader takes for `>`.
pub const ARROW_HEAD: char = '\u{203A}';

/// What the colon of a first line starting `X1:` is written as.
pub const POSITION_COLON: char = '\u{2236}';

/// The captions of `analysis` as SubRip subtitles (UTF-8, `\n` line ends).
pub fn render(analysis: &Analysis) -> String {
    let mut out = String::new();
    for (number, cue) in caption_cues(analysis).iter().enumerate() {
        if number > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{}\n{}\n", number + 1, timing(cue.span)));
        for (position, line) in join_bare_numbers(&cue.lines).iter().enumerate() {
            let line = escape(line);
            match line.strip_prefix("X1:") {
                Some(rest) if position == 0 => {
                    out.push_str("X1");
                    out.push(POSITION_COLON);
                    out.push_str(rest);
                }
                _ => out.push_str(&line),
            }
            out.push('\n');
        }
    }
    out
}

/// `HH:MM:SS,mmm --> HH:MM:SS,mmm`.
fn timing(span: Span) -> String {
    format!(
        "{} --> {}",
        span.start.srt_timecode(),
        span.end.srt_timecode()
    )
}

/// Whether a line is only digits, like a cue number.
fn is_bare_number(line: &str) -> bool {
    !line.is_empty() && line.bytes().all(|byte| byte.is_ascii_digit())
}

/// The cue's lines with every line of digits alone joined to the line before it; numbers
/// that open the cue join the first line that is not one.
fn join_bare_numbers(lines: &[String]) -> Vec<String> {
    let mut joined: Vec<String> = Vec::with_capacity(lines.len());
    let mut leading: Vec<&str> = Vec::new();
    for line in lines {
        match joined.last_mut() {
            Some(previous) if is_bare_number(line) => {
                previous.push(' ');
                previous.push_str(line);
            }
            Some(_) => joined.push(line.clone()),
            None => {
                leading.push(line);
                if !is_bare_number(line) {
                    joined.push(leading.join(" "));
                }
            }
        }
    }
    if joined.is_empty() && !leading.is_empty() {
        joined.push(leading.join(" "));
    }
    joined
}

/// Makes one line of text safe inside a cue: a `>` right after a `-` becomes [`ARROW_HEAD`].
fn escape(line: &str) -> String {
    let mut escaped = String::with_capacity(line.len());
    let mut previous = None;
    for character in line.chars() {
        let written = if character == '>' && previous == Some('-') {
            ARROW_HEAD
        } else {
            character
        };
        escaped.push(written);
        previous = Some(written);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::analysis;

    #[test]
    fn numbered_cues_with_comma_timecodes() {
        let analysis = analysis([Some("First scene."), None, Some("Third scene.")]);
        assert_eq!(
            render(&analysis),
            "1\n00:00:00,000 --> 00:00:04,000\nFirst scene.\n\n\
             2\n00:00:08,500 --> 00:00:12,000\nThird scene.\n"
        );
    }

    #[test]
    fn arrows_and_blank_lines_cannot_break_a_cue() {
        let analysis = analysis([
            Some("a --> b\n\n2\n00:00:01,000 --> 00:00:02,000"),
            None,
            None,
        ]);
        let srt = render(&analysis);
        assert_eq!(srt.matches("-->").count(), 1, "{srt}");
        assert!(!srt.contains("\n\n"), "{srt}");
        assert!(
            srt.contains("a --\u{203A} b 2 00:00:01,000 --\u{203A}"),
            "{srt}"
        );
    }

    #[test]
    fn no_arrow_survives_however_many_dashes() {
        // Replacing `-->` by `->` in one pass turned `--->` into `-->`.
        for arrow in [
            "->",
            "-->",
            "--->",
            "---->",
            "-->>",
            "->->",
            "- ->",
            "--\u{200B}->",
        ] {
            let escaped = escape(arrow);
            assert!(!escaped.contains("->"), "{arrow:?} became {escaped:?}");
            assert_eq!(
                escaped.replace(ARROW_HEAD, ">"),
                arrow,
                "only the arrow heads change"
            );
        }
        assert_eq!(escape("a > b - c >= d"), "a > b - c >= d");
    }

    #[test]
    fn control_characters_and_byte_order_marks_are_dropped() {
        let analysis = analysis([
            Some("\u{FEFF}Stop\0 sign\u{1b}[31m \u{7}"),
            Some("\0"),
            None,
        ]);
        assert_eq!(
            render(&analysis),
            "1\n00:00:00,000 --> 00:00:04,000\nStop sign[31m\n"
        );
    }

    #[test]
    fn a_line_of_digits_alone_joins_its_neighbour() {
        let lines = |text: &[&str]| text.iter().map(|line| line.to_string()).collect::<Vec<_>>();
        assert_eq!(
            join_bare_numbers(&lines(&["The sign reads", "2024", "in red"])),
            ["The sign reads 2024", "in red"]
        );
        assert_eq!(
            join_bare_numbers(&lines(&["12", "345", "apples", "6"])),
            ["12 345 apples 6"]
        );
        assert_eq!(join_bare_numbers(&lines(&["12", "345"])), ["12 345"]);
        assert_eq!(join_bare_numbers(&lines(&["2024"])), ["2024"]);
        let long_number = "1".repeat(50);
        let analysis = analysis([Some(&format!("Number {long_number} seen")), None, None]);
        let srt = render(&analysis);
        assert!(
            srt.contains(&format!("\nNumber {long_number}\nseen\n")),
            "{srt}"
        );
    }

    #[test]
    fn a_first_line_cannot_pose_as_a_position() {
        let analysis = analysis([
            Some("X1:10 X2:20 Y1:30 Y2:40 on a sign"),
            Some("See X1:10"),
            None,
        ]);
        let srt = render(&analysis);
        assert!(
            srt.contains("\nX1\u{2236}10 X2:20 Y1:30 Y2:40 on a sign\n"),
            "{srt}"
        );
        assert!(srt.contains("\nSee X1:10\n"), "only a first line: {srt}");
    }

    #[test]
    fn markup_characters_are_kept_as_text() {
        let analysis = analysis([Some("Tom & Jerry <3"), None, None]);
        assert!(render(&analysis).contains("\nTom & Jerry <3\n"));
    }

    #[test]
    fn no_captions_no_cues() {
        assert_eq!(render(&analysis([None, None, None])), "");
    }
}
