//! Summaries: the captioner's language model turns an analysis's timestamped captions into a
//! short paragraph and titled chapters.
//!
//! Chapter boundaries are chosen here, not by the model: the scenes whose opening changed
//! most from the one before start chapters (language models are unreliable with timestamps).
//! The model writes the paragraph and one title per chapter. A title the model leaves empty
//! falls back to the start of the chapter's first caption, so every chapter has a title.

use crate::analysis::{Analysis, Chapter, KeyframeRecord};
use crate::models::ModelError;
use crate::time::MediaTime;

/// Settings of a summary.
#[derive(Debug, Clone, PartialEq)]
pub struct SummarySettings {
    /// At most this many chapters.
    pub max_chapters: usize,
    /// Token budget of the paragraph.
    pub paragraph_tokens: usize,
    /// Token budget of each chapter title.
    pub title_tokens: usize,
}

impl Default for SummarySettings {
    fn default() -> Self {
        SummarySettings {
            max_chapters: 6,
            paragraph_tokens: 160,
            title_tokens: 16,
        }
    }
}

/// A text generator: `(system prompt, user prompt, max new tokens) -> reply`.
pub type Generate<'a> = dyn FnMut(&str, &str, usize) -> Result<String, ModelError> + 'a;

/// What a summary adds to an analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// A short paragraph about the whole video.
    pub paragraph: String,
    /// Titled chapters in time order.
    pub chapters: Vec<Chapter>,
}

const SYSTEM_PROMPT: &str =
    "You are a careful assistant who summarises videos from descriptions of their scenes. \
Answer with plain text only.";

/// Summarises `analysis` with `generate`. An analysis without captions is an error: there is
/// nothing to summarise.
pub fn summarize(
    analysis: &Analysis,
    settings: &SummarySettings,
    generate: &mut Generate<'_>,
) -> Result<Summary, SummaryError> {
    let captioned: Vec<&KeyframeRecord> = analysis
        .keyframes
        .iter()
        .filter(|keyframe| {
            keyframe
                .caption
                .as_deref()
                .is_some_and(|c| !c.trim().is_empty())
        })
        .collect();
    if captioned.is_empty() {
        return Err(SummaryError::NoCaptions);
    }
    let listing = scene_listing(&captioned);
    let paragraph_prompt = format!(
        "These are descriptions of the scenes of a video, with the time each scene starts:\n\n\
         {listing}\n\nWrite a short paragraph (two to four sentences) that summarises the whole video."
    );
    let paragraph = clean_reply(&generate(
        SYSTEM_PROMPT,
        &paragraph_prompt,
        settings.paragraph_tokens,
    )?);

    let mut chapters = Vec::new();
    for group in chapter_groups(&captioned, settings.max_chapters.max(1)) {
        let first = group[0];
        let title_prompt = format!(
            "These are descriptions of consecutive scenes of one part of a video:\n\n{}\n\n\
             Give this part a title of at most six words. Answer with the title only.",
            scene_listing(&group)
        );
        let reply = generate(SYSTEM_PROMPT, &title_prompt, settings.title_tokens)?;
        let title = title_line(&reply).unwrap_or_else(|| fallback_title(first));
        let start = if chapters.is_empty() {
            MediaTime::ZERO
        } else {
            MediaTime::from_seconds(first.scene.start_s)
        };
        chapters.push(Chapter {
            title,
            start_s: start.seconds(),
            timecode: start.timecode(),
        });
    }
    Ok(Summary {
        paragraph: if paragraph.is_empty() {
            captioned
                .iter()
                .filter_map(|keyframe| keyframe.caption.as_deref())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            paragraph
        },
        chapters,
    })
}

/// What can go wrong summarising.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// The analysis has no captions (it was made without a captioner).
    #[error(
        "the analysis has no captions to summarise (run `keyscribe run` with a captioner first)"
    )]
    NoCaptions,
    /// The language model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// `[HH:MM:SS] caption` lines.
fn scene_listing(keyframes: &[&KeyframeRecord]) -> String {
    keyframes
        .iter()
        .map(|keyframe| {
            let start = MediaTime::from_seconds(keyframe.scene.start_s);
            let caption = keyframe.caption.as_deref().unwrap_or_default().trim();
            format!(
                "[{}] {}",
                &start.timecode()[..8],
                caption.replace('\n', " ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Splits captioned keyframes into at most `max_chapters` runs: a new chapter starts at the
/// keyframes whose scene changed most from the previous one.
fn chapter_groups<'a>(
    keyframes: &[&'a KeyframeRecord],
    max_chapters: usize,
) -> Vec<Vec<&'a KeyframeRecord>> {
    let mut starts: Vec<usize> = (1..keyframes.len()).collect();
    starts.sort_by(|&a, &b| {
        keyframes[b]
            .change
            .total_cmp(&keyframes[a].change)
            .then(a.cmp(&b))
    });
    starts.truncate(max_chapters - 1);
    starts.sort_unstable();
    let mut groups = Vec::new();
    let mut begin = 0;
    for start in starts.into_iter().chain([keyframes.len()]) {
        groups.push(keyframes[begin..start].to_vec());
        begin = start;
    }
    groups
}

/// The reply with whitespace normalised and a leading label such as `Summary:` removed.
fn clean_reply(reply: &str) -> String {
    let text = reply.split_whitespace().collect::<Vec<_>>().join(" ");
    for label in ["Summary:", "Paragraph:", "summary:"] {
        if let Some(rest) = text.strip_prefix(label) {
            return rest.trim().to_string();
        }
    }
    text
}

/// The first non-empty line of a title reply, without quotes, labels or a final full stop,
/// cut to eight words.
fn title_line(reply: &str) -> Option<String> {
    let line = reply.lines().map(str::trim).find(|line| !line.is_empty())?;
    let line = line.strip_prefix("Title:").unwrap_or(line);
    let line = line
        .trim()
        .trim_matches(|c: char| c == '"' || c == '\'' || c == '*' || c == '#')
        .trim_end_matches('.')
        .trim();
    let words: Vec<&str> = line.split_whitespace().take(8).collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// The first six words of a keyframe's caption.
fn fallback_title(keyframe: &KeyframeRecord) -> String {
    let caption = keyframe.caption.as_deref().unwrap_or_default();
    let words: Vec<&str> = caption.split_whitespace().take(6).collect();
    words.join(" ").trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::SceneSpan;

    fn keyframe(start_s: f64, change: f32, caption: &str) -> KeyframeRecord {
        KeyframeRecord {
            index: 0,
            time_s: start_s + 1.0,
            timecode: String::new(),
            scene: SceneSpan {
                start_s,
                end_s: start_s + 2.0,
            },
            change,
            caption: Some(caption.to_string()),
        }
    }

    #[test]
    fn chapters_start_at_the_biggest_changes() {
        let keyframes = [
            keyframe(0.0, 0.0, "a"),
            keyframe(2.0, 0.1, "b"),
            keyframe(4.0, 0.9, "c"),
            keyframe(6.0, 0.2, "d"),
            keyframe(8.0, 0.8, "e"),
        ];
        let refs: Vec<&KeyframeRecord> = keyframes.iter().collect();
        let groups = chapter_groups(&refs, 3);
        let captions: Vec<Vec<&str>> = groups
            .iter()
            .map(|group| {
                group
                    .iter()
                    .map(|k| k.caption.as_deref().unwrap())
                    .collect()
            })
            .collect();
        assert_eq!(captions, vec![vec!["a", "b"], vec!["c", "d"], vec!["e"]]);
        assert_eq!(chapter_groups(&refs, 10).len(), 5);
        assert_eq!(chapter_groups(&refs, 1).len(), 1);
    }

    #[test]
    fn titles_are_cleaned_and_fall_back_to_captions() {
        assert_eq!(
            title_line("\n  \"Robots on Mars.\"\nmore").as_deref(),
            Some("Robots on Mars")
        );
        assert_eq!(
            title_line("Title: A calm lake").as_deref(),
            Some("A calm lake")
        );
        assert_eq!(title_line("  \n "), None);
        let fallback = fallback_title(&keyframe(
            0.0,
            0.0,
            "A robot standing on the red surface of Mars.",
        ));
        assert_eq!(fallback, "A robot standing on the red");
    }

    fn analysis(keyframes: Vec<KeyframeRecord>) -> Analysis {
        serde_json::from_value(serde_json::json!({
            "schema": crate::analysis::SCHEMA,
            "video": {"path": "v.mp4", "sha256": "00", "duration_s": 10.0, "width": 64, "height": 64, "fps": 25.0},
            "models": {"embedder": {"name": "e", "source": "s"}, "captioner": null},
            "pipeline": {},
            "keyframes": keyframes,
            "summary": null,
            "embeddings": null,
            "timings": {"decode_s": 0.0, "embed_s": 0.0, "select_s": 0.0, "caption_s": 0.0, "total_s": 0.0}
        }))
        .unwrap()
    }

    #[test]
    fn summary_asks_for_a_paragraph_and_one_title_per_chapter() {
        let analysis = analysis(vec![
            keyframe(0.0, 0.0, "A red car on a road."),
            keyframe(4.0, 0.9, "A blue boat on a lake."),
            keyframe(8.0, 0.1, "The boat reaches a pier."),
        ]);
        let mut prompts = Vec::new();
        let mut generate = |_: &str, user: &str, _: usize| -> Result<String, ModelError> {
            prompts.push(user.to_string());
            Ok(match prompts.len() {
                1 => "Summary: A car drives, then a boat sails to a pier.".to_string(),
                2 => "\"On the Road\"".to_string(),
                _ => String::new(),
            })
        };
        let settings = SummarySettings {
            max_chapters: 2,
            ..SummarySettings::default()
        };
        let summary = summarize(&analysis, &settings, &mut generate).unwrap();
        assert_eq!(
            summary.paragraph,
            "A car drives, then a boat sails to a pier."
        );
        assert_eq!(summary.chapters.len(), 2);
        assert_eq!(summary.chapters[0].title, "On the Road");
        assert_eq!(summary.chapters[0].start_s, 0.0);
        assert_eq!(summary.chapters[1].title, "A blue boat on a lake");
        assert_eq!(summary.chapters[1].timecode, "00:00:04.000");
        assert!(prompts[0].contains("[00:00:04] A blue boat on a lake."));
        assert!(prompts[2].contains("The boat reaches a pier.") && !prompts[2].contains("red car"));
    }

    #[test]
    fn nothing_to_summarise_without_captions() {
        let mut uncaptioned = keyframe(0.0, 0.0, "");
        uncaptioned.caption = None;
        let mut generate = |_: &str, _: &str, _: usize| -> Result<String, ModelError> {
            unreachable!("no prompt without captions")
        };
        let error = summarize(
            &analysis(vec![uncaptioned]),
            &SummarySettings::default(),
            &mut generate,
        );
        assert!(matches!(error, Err(SummaryError::NoCaptions)));
    }

    #[test]
    fn prompts_carry_timestamped_captions() {
        let keyframes = [
            keyframe(0.0, 0.0, "A red car."),
            keyframe(65.0, 0.7, "A blue boat."),
        ];
        let refs: Vec<&KeyframeRecord> = keyframes.iter().collect();
        assert_eq!(
            scene_listing(&refs),
            "[00:00:00] A red car.\n[00:01:05] A blue boat."
        );
    }
}
