//! WebVTT (`.vtt`): caption subtitles, and chapters for `<track kind="chapters">`.
//!
//! Cue text is escaped as the WebVTT specification requires: `&`, `<` and `>` become
//! character references, so markup in a caption shows as text and `-->` cannot appear. Line
//! breaks are the wrapping's own (no blank line can end a cue early), and control characters
//! and byte-order marks are dropped (see [`super::words`]).

use super::{caption_cues, chapter_spans, one_line, Span};
use crate::analysis::Analysis;

/// The captions of `analysis` as WebVTT subtitles (UTF-8, `\n` line ends).
pub fn render(analysis: &Analysis) -> String {
    let mut out = String::from(HEADER);
    for cue in caption_cues(analysis) {
        out.push('\n');
        out.push_str(&timing(cue.span));
        out.push('\n');
        for line in &cue.lines {
            out.push_str(&escape(line));
            out.push('\n');
        }
    }
    out
}

/// The header of a WebVTT file, for one grown cue by cue (see [`cue`]).
pub const HEADER: &str = "WEBVTT\n";

/// One caption cue shown over `span`, preceded by its blank line, wrapped and escaped as in
/// [`render`]; empty when the caption is blank. Appended after [`HEADER`] as captions are
/// made, this grows a live WebVTT file.
pub fn cue(span: Span, caption: &str) -> String {
    let lines = super::wrap_lines(caption, super::SUBTITLE_LINE_CHARS);
    if lines.is_empty() {
        return String::new();
    }
    let mut out = format!("\n{}\n", timing(span));
    for line in &lines {
        out.push_str(&escape(line));
        out.push('\n');
    }
    out
}

/// The summary's chapters of `analysis` as a WebVTT chapters file: one cue per chapter with
/// its title, from its start to the next chapter's start, the last to the end of the video.
/// An analysis without chapters gives a valid file with no cues.
pub fn render_chapters(analysis: &Analysis) -> String {
    let mut out = String::from("WEBVTT\n");
    for (chapter, span) in analysis.chapters.iter().zip(chapter_spans(analysis)) {
        let title = one_line(&chapter.title);
        out.push('\n');
        out.push_str(&timing(span));
        out.push('\n');
        out.push_str(&escape(if title.is_empty() {
            &chapter.timecode
        } else {
            &title
        }));
        out.push('\n');
    }
    out
}

/// `HH:MM:SS.mmm --> HH:MM:SS.mmm`.
fn timing(span: Span) -> String {
    format!("{} --> {}", span.start.timecode(), span.end.timecode())
}

/// Escapes one line of cue text.
fn escape(line: &str) -> String {
    let mut escaped = String::with_capacity(line.len());
    for character in line.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::analysis;

    #[test]
    fn header_and_cues_with_dot_timecodes() {
        let analysis = analysis([Some("First scene."), Some("Second scene."), None]);
        assert_eq!(
            render(&analysis),
            "WEBVTT\n\n00:00:00.000 --> 00:00:04.000\nFirst scene.\n\n\
             00:00:04.000 --> 00:00:08.500\nSecond scene.\n"
        );
    }

    #[test]
    fn markup_and_arrows_are_escaped() {
        let analysis = analysis([Some("<b>Tom</b> & Jerry --> home"), None, None]);
        let vtt = render(&analysis);
        assert!(
            vtt.contains("\n&lt;b&gt;Tom&lt;/b&gt; &amp; Jerry --&gt; home\n"),
            "{vtt}"
        );
        assert_eq!(vtt.matches("-->").count(), 1);
    }

    #[test]
    fn chapters_cover_the_video() {
        let analysis = analysis([None, None, None]);
        assert_eq!(
            render_chapters(&analysis),
            "WEBVTT\n\n00:00:00.000 --> 00:00:08.500\nOpening\n\n\
             00:00:08.500 --> 00:00:12.000\nEnding\n"
        );
    }

    #[test]
    fn chapter_titles_are_one_escaped_line() {
        let mut analysis = analysis([None, None, None]);
        analysis.chapters[0].title = "Cats\n& <dogs>".into();
        analysis.chapters[1].title = " \n".into();
        let vtt = render_chapters(&analysis);
        assert!(vtt.contains("\nCats &amp; &lt;dogs&gt;\n"), "{vtt}");
        assert!(vtt.ends_with("\n00:00:08.500\n"), "{vtt}");
    }

    #[test]
    fn no_chapters_is_a_valid_empty_file() {
        let mut analysis = analysis([None, None, None]);
        analysis.chapters.clear();
        assert_eq!(render_chapters(&analysis), "WEBVTT\n");
    }
}
