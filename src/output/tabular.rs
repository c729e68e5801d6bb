//! Keyframe tables: one row per keyframe with its times and caption, as a JSON array, as
//! JSON Lines, or as CSV.
//!
//! Unlike the subtitles, the tables keep every keyframe (a missing caption is `null` in JSON
//! and an empty field in CSV) and the caption text exactly as the model wrote it.

use serde::{Deserialize, Serialize};

use super::caption_spans;
use crate::analysis::Analysis;
use crate::time::MediaTime;

/// The CSV header line, in the order of [`KeyframeRow`]'s fields.
pub const CSV_HEADER: &str = "index,time_s,timecode,start_s,end_s,start,end,change,caption";

/// One keyframe as a table row. Times are in seconds rounded to milliseconds, with the same
/// times as `HH:MM:SS.mmm`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyframeRow {
    /// The keyframe's index in the analysis, from 0.
    pub index: usize,
    /// When the keyframe is shown.
    pub time_s: f64,
    /// `time_s` as a timecode.
    pub timecode: String,
    /// When its caption starts to be shown: the start of its scene.
    pub start_s: f64,
    /// When its caption stops: the next scene's start, or the end of the video.
    pub end_s: f64,
    /// `start_s` as a timecode.
    pub start: String,
    /// `end_s` as a timecode.
    pub end: String,
    /// How far the scene's opening moved away from the previous scene (cosine distance).
    pub change: f32,
    /// The caption, if the keyframe was captioned.
    pub caption: Option<String>,
}

/// The rows of `analysis`, one per keyframe in keyframe order.
pub fn rows(analysis: &Analysis) -> Vec<KeyframeRow> {
    analysis
        .keyframes
        .iter()
        .zip(caption_spans(analysis))
        .map(|(keyframe, span)| {
            let time = MediaTime::from_seconds(keyframe.time_s);
            KeyframeRow {
                index: keyframe.index,
                time_s: seconds(time),
                timecode: time.timecode(),
                start_s: seconds(span.start),
                end_s: seconds(span.end),
                start: span.start.timecode(),
                end: span.end.timecode(),
                change: keyframe.change,
                caption: keyframe.caption.clone(),
            }
        })
        .collect()
}

/// Seconds rounded to whole milliseconds, so that tables print `3.754`, not `3.7539999`.
fn seconds(time: MediaTime) -> f64 {
    time.millis() as f64 / 1000.0
}

/// The rows as one pretty-printed JSON array, with a final newline.
pub fn render_json(analysis: &Analysis) -> String {
    let mut json = serde_json::to_string_pretty(&rows(analysis)).expect("rows serialise");
    json.push('\n');
    json
}

/// The rows as JSON Lines: one compact JSON object per line.
pub fn render_jsonl(analysis: &Analysis) -> String {
    rows(analysis)
        .iter()
        .map(|row| serde_json::to_string(row).expect("rows serialise") + "\n")
        .collect()
}

/// The rows as CSV (RFC 4180 quoting, `\n` line ends) with a header line.
pub fn render_csv(analysis: &Analysis) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    for row in rows(analysis) {
        let fields = [
            row.index.to_string(),
            row.time_s.to_string(),
            row.timecode,
            row.start_s.to_string(),
            row.end_s.to_string(),
            row.start,
            row.end,
            row.change.to_string(),
            row.caption.unwrap_or_default(),
        ];
        let quoted: Vec<String> = fields.iter().map(|field| csv_field(field)).collect();
        out.push_str(&quoted.join(","));
        out.push('\n');
    }
    out
}

/// A CSV field, quoted (with inner quotes doubled) when it holds a comma, a quote, a line
/// break or leading or trailing spaces.
pub(super) fn csv_field(field: &str) -> String {
    let needs_quotes = field.contains([',', '"', '\n', '\r'])
        || field.starts_with(char::is_whitespace)
        || field.ends_with(char::is_whitespace);
    if needs_quotes {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::analysis;

    #[test]
    fn rows_round_times_to_milliseconds() {
        let mut analysis = analysis([Some("a"), None, Some("c")]);
        analysis.keyframes[0].time_s = 1.2345999;
        let rows = rows(&analysis);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].time_s, 1.235);
        assert_eq!(rows[0].timecode, "00:00:01.235");
        assert_eq!((rows[1].start_s, rows[1].end_s), (4.0, 8.5));
        assert_eq!(rows[1].end, "00:00:08.500");
        assert_eq!(rows[1].caption, None);
    }

    #[test]
    fn json_lines_are_one_object_per_keyframe() {
        let analysis = analysis([Some("line one\nline two"), None, Some("c")]);
        let jsonl = render_jsonl(&analysis);
        let parsed: Vec<KeyframeRow> = jsonl
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(parsed, rows(&analysis));
        let array: Vec<KeyframeRow> = serde_json::from_str(&render_json(&analysis)).unwrap();
        assert_eq!(array, parsed);
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        let analysis = analysis([Some("He said \"hi\", then left\nquietly"), None, Some("c")]);
        let csv = render_csv(&analysis);
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some(CSV_HEADER));
        assert_eq!(
            lines.next(),
            Some("0,1.5,00:00:01.500,0,4,00:00:00.000,00:00:04.000,0,\"He said \"\"hi\"\", then left")
        );
        assert_eq!(lines.next(), Some("quietly\""));
        assert_eq!(
            lines.next(),
            Some("1,6,00:00:06.000,4,8.5,00:00:04.000,00:00:08.500,0.25,")
        );
        assert_eq!(csv_field(" padded"), "\" padded\"");
    }
}
