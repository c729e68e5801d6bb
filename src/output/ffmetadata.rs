//! FFmpeg's metadata file (`;FFMETADATA1`) with chapters, which FFmpeg muxes into MKV, MP4
//! and most other containers without re-encoding:
//!
//! ```text
//! ffmpeg -i video.mp4 -i chapters.ffmeta -map 0 -map_chapters 1 -c copy chaptered.mp4
//! ```
//!
//! The chapters are the summary's chapters when the analysis has them (titled chapters that
//! a player's chapter menu can hold), otherwise one chapter per scene titled with its
//! keyframe's caption (`Scene N` for a scene without one). Times are milliseconds
//! (`TIMEBASE=1/1000`); each chapter ends where the next begins, the last at the end of the
//! video. Titles are one line with FFmpeg's escapes (`\` before `=`, `;`, `#`, `\` and line
//! breaks).

use super::{caption_spans, chapter_spans, one_line, Span};
use crate::analysis::Analysis;

/// One chapter as written.
#[derive(Debug, Clone, PartialEq)]
pub struct FfChapter {
    /// When it runs.
    pub span: Span,
    /// Its title on one line, not yet escaped.
    pub title: String,
}

/// The chapters written for `analysis`: the summary's chapters, or else one per scene.
pub fn chapters(analysis: &Analysis) -> Vec<FfChapter> {
    if !analysis.chapters.is_empty() {
        return analysis
            .chapters
            .iter()
            .zip(chapter_spans(analysis))
            .map(|(chapter, span)| {
                let title = one_line(&chapter.title);
                FfChapter {
                    span,
                    title: if title.is_empty() {
                        span.start.timecode()
                    } else {
                        title
                    },
                }
            })
            .collect();
    }
    analysis
        .keyframes
        .iter()
        .zip(caption_spans(analysis))
        .enumerate()
        .map(|(position, (keyframe, span))| {
            let caption = keyframe
                .caption
                .as_deref()
                .map(one_line)
                .unwrap_or_default();
            FfChapter {
                span,
                title: if caption.is_empty() {
                    format!("Scene {}", position + 1)
                } else {
                    caption
                },
            }
        })
        .collect()
}

/// The chapters of `analysis` as an FFmpeg metadata file (`\n` line ends).
pub fn render(analysis: &Analysis) -> String {
    let mut out = String::from(";FFMETADATA1\n");
    for chapter in chapters(analysis) {
        out.push_str(&format!(
            "\n[CHAPTER]\nTIMEBASE=1/1000\nSTART={}\nEND={}\ntitle={}\n",
            chapter.span.start.millis(),
            chapter.span.end.millis(),
            escape(&chapter.title)
        ));
    }
    out
}

/// A value with FFmpeg's metadata escapes: a backslash before `=`, `;`, `#`, `\` and a line
/// break.
pub fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        if matches!(character, '=' | ';' | '#' | '\\' | '\n') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::analysis;

    #[test]
    fn summary_chapters_come_first() {
        let mut analysis = analysis([Some("a"), None, Some("c")]);
        analysis.chapters[1].title = "Act #2; a=b \\ c".into();
        assert_eq!(
            render(&analysis),
            ";FFMETADATA1\n\
             \n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=8500\ntitle=Opening\n\
             \n[CHAPTER]\nTIMEBASE=1/1000\nSTART=8500\nEND=12000\ntitle=Act \\#2\\; a\\=b \\\\ c\n"
        );
    }

    #[test]
    fn without_chapters_each_scene_is_one() {
        let mut analysis = analysis([Some("A red\ncar."), None, Some("c")]);
        analysis.chapters.clear();
        let titles: Vec<(u64, u64, String)> = chapters(&analysis)
            .into_iter()
            .map(|chapter| {
                (
                    chapter.span.start.millis(),
                    chapter.span.end.millis(),
                    chapter.title,
                )
            })
            .collect();
        assert_eq!(
            titles,
            [
                (0, 4000, "A red car.".to_string()),
                (4000, 8500, "Scene 2".to_string()),
                (8500, 12000, "c".to_string())
            ]
        );
    }

    #[test]
    fn line_breaks_are_escaped() {
        assert_eq!(escape("a\nb"), "a\\\nb");
    }
}
