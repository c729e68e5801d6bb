//! SubRip (`.srt`) subtitles: one numbered cue per captioned keyframe.
//!
//! SubRip has no escape syntax: text is written as it is, except that the timing arrow
//! `-->` becomes `->` (a line holding it could be read as a timing line) and line breaks
//! are the wrapping's own (a blank line would end the cue).

use super::{caption_cues, Span};
use crate::analysis::Analysis;

/// The captions of `analysis` as SubRip subtitles (UTF-8, `\n` line ends).
pub fn render(analysis: &Analysis) -> String {
    let mut out = String::new();
    for (number, cue) in caption_cues(analysis).iter().enumerate() {
        if number > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{}\n{}\n", number + 1, timing(cue.span)));
        for line in &cue.lines {
            out.push_str(&escape(line));
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

/// Makes one line of text safe inside a cue.
fn escape(line: &str) -> String {
    line.replace("-->", "->")
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
            srt.contains("a -> b 2 00:00:01,000 -> 00:00:02,000"),
            "{srt}"
        );
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
