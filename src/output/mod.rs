//! Views of an analysis document: subtitles (SRT, WebVTT, WebVTT chapters), keyframe tables
//! (JSON, JSON Lines, CSV), the self-contained HTML report, and what editors and players
//! read: an edit decision list (CMX 3600 EDL), an OpenTimelineIO timeline, a Final Cut Pro
//! XML project, FFmpeg chapters (ffmetadata) and a PySceneDetect-style scene table.
//!
//! Every text renderer is a pure function of the [`Analysis`] (the report also takes its
//! pictures and timeline explicitly, see [`html::ReportInputs`]): nothing here touches files,
//! except [`images`], which decodes the keyframes from the video and writes them.
//!
//! Times follow one rule in every format: a keyframe's caption is shown from the start of its
//! scene to the start of the next keyframe's scene, and the last one to the end of the video
//! (see [`caption_spans`]). Chapters run from their start to the next chapter's start. The
//! editors' formats count frames: the same spans, cut at the nearest frame (see
//! [`scenes::scene_list`]).

pub mod edl;
pub mod fcpxml;
pub mod ffmetadata;
pub mod html;
pub mod images;
pub mod otio;
pub mod scenes;
pub mod scenes_csv;
pub mod srt;
pub mod tabular;
pub mod vtt;

use std::fmt;
use std::str::FromStr;

use crate::analysis::Analysis;
use crate::time::MediaTime;

/// Longest subtitle line, in characters, before a caption wraps (the common broadcast and
/// streaming guideline).
pub const SUBTITLE_LINE_CHARS: usize = 42;

/// A format that `keyscribe export` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Format {
    /// SubRip subtitles: one cue per captioned keyframe.
    Srt,
    /// WebVTT subtitles: one cue per captioned keyframe.
    Vtt,
    /// WebVTT chapters (for `<track kind="chapters">`) from the summary's chapters.
    Chapters,
    /// One JSON array of keyframe rows.
    Json,
    /// JSON Lines: one keyframe row per line.
    Jsonl,
    /// CSV with a header line: one keyframe row per line.
    Csv,
    /// CMX 3600 edit decision list: one event per scene, the caption as a locator.
    Edl,
    /// OpenTimelineIO timeline: one clip per scene, a marker with the caption at each keyframe.
    Otio,
    /// Final Cut Pro XML (1.9): a project with one clip per scene, a marker per keyframe.
    Fcpxml,
    /// FFmpeg metadata with chapters (the summary's chapters, else one per scene), for muxing
    /// into MKV or MP4 with `ffmpeg -i video -i chapters.ffmeta -map_chapters 1`.
    Ffmetadata,
    /// PySceneDetect's scene list CSV (frame numbers, timecodes, seconds) plus the caption.
    ScenesCsv,
    /// Each keyframe as a picture file, with index.json, into the --output directory.
    Images,
}

impl Format {
    /// Every format, in the order help texts list them.
    pub const ALL: [Format; 12] = [
        Format::Srt,
        Format::Vtt,
        Format::Chapters,
        Format::Json,
        Format::Jsonl,
        Format::Csv,
        Format::Edl,
        Format::Otio,
        Format::Fcpxml,
        Format::Ffmetadata,
        Format::ScenesCsv,
        Format::Images,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Srt => "srt",
            Format::Vtt => "vtt",
            Format::Chapters => "chapters",
            Format::Json => "json",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::Edl => "edl",
            Format::Otio => "otio",
            Format::Fcpxml => "fcpxml",
            Format::Ffmetadata => "ffmetadata",
            Format::ScenesCsv => "scenes-csv",
            Format::Images => "images",
        }
    }

    /// The file name ending the format is usually given (`images` writes a directory).
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Format::Srt => Some("srt"),
            Format::Vtt => Some("vtt"),
            Format::Chapters => Some("chapters.vtt"),
            Format::Json => Some("json"),
            Format::Jsonl => Some("jsonl"),
            Format::Csv => Some("csv"),
            Format::Edl => Some("edl"),
            Format::Otio => Some("otio"),
            Format::Fcpxml => Some("fcpxml"),
            Format::Ffmetadata => Some("ffmeta"),
            Format::ScenesCsv => Some("scenes.csv"),
            Format::Images => None,
        }
    }

    /// The format a file name implies by its extension (`chapters.vtt` and `*.chapters.vtt`
    /// are chapters, any other `.vtt` is captions; `*.scenes.csv` is the scene list, any
    /// other `.csv` the keyframe table). A directory for `images` implies nothing.
    pub fn from_file_name(name: &str) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        if lower == "chapters.vtt" || lower.ends_with(".chapters.vtt") {
            return Some(Format::Chapters);
        }
        if lower.ends_with(".scenes.csv") {
            return Some(Format::ScenesCsv);
        }
        let extension = lower.rsplit_once('.')?.1;
        match extension {
            "srt" => Some(Format::Srt),
            "vtt" => Some(Format::Vtt),
            "json" => Some(Format::Json),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            "edl" => Some(Format::Edl),
            "otio" => Some(Format::Otio),
            "fcpxml" => Some(Format::Fcpxml),
            "ffmeta" | "ffmetadata" => Some(Format::Ffmetadata),
            _ => None,
        }
    }

    /// Whether the format shows captions only (keyframes without a caption are left out).
    pub fn needs_captions(self) -> bool {
        matches!(self, Format::Srt | Format::Vtt)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name that is not one of [`Format::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format `{0}` (expected one of: srt, vtt, chapters, json, jsonl, csv, edl, otio, fcpxml, ffmetadata, scenes-csv, images)")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(name: &str) -> Result<Format, UnknownFormat> {
        Format::ALL
            .into_iter()
            .find(|format| format.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownFormat(name.to_string()))
    }
}

/// Why an analysis cannot be rendered in a format.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    /// The format counts frames and the analysis records no usable frame rate.
    #[error("the {format} format counts frames, and the analysis records no usable frame rate (fps {fps})")]
    NoFrameRate {
        /// The format asked for.
        format: Format,
        /// The frame rate the analysis holds.
        fps: f64,
    },
    /// The format writes files, not one text (see [`images`]).
    #[error("the {0} format writes files into a directory, not one text")]
    NotText(Format),
}

/// Renders `analysis` in the text format `format`.
pub fn render(format: Format, analysis: &Analysis) -> Result<String, RenderError> {
    let scenes = || {
        scenes::scene_list(analysis).ok_or(RenderError::NoFrameRate {
            format,
            fps: analysis.video.fps,
        })
    };
    Ok(match format {
        Format::Srt => srt::render(analysis),
        Format::Vtt => vtt::render(analysis),
        Format::Chapters => vtt::render_chapters(analysis),
        Format::Json => tabular::render_json(analysis),
        Format::Jsonl => tabular::render_jsonl(analysis),
        Format::Csv => tabular::render_csv(analysis),
        Format::Edl => edl::render(analysis, &scenes()?),
        Format::Otio => otio::render(analysis, &scenes()?),
        Format::Fcpxml => fcpxml::render(analysis, &scenes()?),
        Format::ScenesCsv => scenes_csv::render(&scenes()?),
        Format::Ffmetadata => ffmetadata::render(analysis),
        Format::Images => return Err(RenderError::NotText(format)),
    })
}

/// A time range shown on screen, rounded to whole milliseconds, never empty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    /// When it appears.
    pub start: MediaTime,
    /// When it disappears; always at least a millisecond after `start`.
    pub end: MediaTime,
}

impl Span {
    /// A span from seconds, rounded to milliseconds; an end at or before the start becomes
    /// the start plus one millisecond, so that every cue is valid.
    fn from_seconds(start_s: f64, end_s: f64) -> Span {
        let start_ms = MediaTime::from_seconds(start_s).millis();
        let end_ms = MediaTime::from_seconds(end_s).millis().max(start_ms + 1);
        Span {
            start: milliseconds(start_ms),
            end: milliseconds(end_ms),
        }
    }
}

fn milliseconds(millis: u64) -> MediaTime {
    MediaTime::from_seconds(millis as f64 / 1000.0)
}

/// The end of the video: its duration, or the furthest scene end when the duration is
/// missing or shorter (a document from a stream with no reliable duration).
pub fn video_end_s(analysis: &Analysis) -> f64 {
    analysis
        .keyframes
        .iter()
        .map(|keyframe| keyframe.scene.end_s)
        .chain([analysis.video.duration_s])
        .filter(|seconds| seconds.is_finite())
        .fold(0.0, f64::max)
}

/// When each keyframe's caption is shown, in keyframe order: from its scene's start to the
/// next keyframe's scene start, the last to the end of the video.
pub fn caption_spans(analysis: &Analysis) -> Vec<Span> {
    let end_of_video = video_end_s(analysis);
    let keyframes = &analysis.keyframes;
    keyframes
        .iter()
        .enumerate()
        .map(|(position, keyframe)| {
            let end_s = keyframes
                .get(position + 1)
                .map_or(end_of_video, |next| next.scene.start_s);
            Span::from_seconds(keyframe.scene.start_s, end_s)
        })
        .collect()
}

/// When each chapter runs, in chapter order: from its start to the next chapter's start, the
/// last to the end of the video.
pub fn chapter_spans(analysis: &Analysis) -> Vec<Span> {
    let end_of_video = video_end_s(analysis);
    let chapters = &analysis.chapters;
    chapters
        .iter()
        .enumerate()
        .map(|(position, chapter)| {
            let end_s = chapters
                .get(position + 1)
                .map_or(end_of_video, |next| next.start_s);
            Span::from_seconds(chapter.start_s, end_s)
        })
        .collect()
}

/// One subtitle cue: a keyframe's caption and when it is shown.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionCue {
    /// The keyframe's `index` in the analysis.
    pub keyframe: usize,
    /// When the caption is shown.
    pub span: Span,
    /// The caption, whitespace collapsed, wrapped into lines of at most
    /// [`SUBTITLE_LINE_CHARS`] characters where words allow; not yet escaped.
    pub lines: Vec<String>,
}

/// The subtitle cues of `analysis`: one per keyframe with a non-blank caption.
pub fn caption_cues(analysis: &Analysis) -> Vec<CaptionCue> {
    analysis
        .keyframes
        .iter()
        .zip(caption_spans(analysis))
        .filter_map(|(keyframe, span)| {
            let lines = wrap_lines(keyframe.caption.as_deref()?, SUBTITLE_LINE_CHARS);
            (!lines.is_empty()).then_some(CaptionCue {
                keyframe: keyframe.index,
                span,
                lines,
            })
        })
        .collect()
}

/// The last component of a path written with `/` or `\` (the video's file name).
pub fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\'])
        .find(|part| !part.is_empty())
        .unwrap_or(path)
}

/// Collapses all whitespace (newlines included) to single spaces and trims the ends;
/// invisible characters are dropped (see [`words`]).
pub fn one_line(text: &str) -> String {
    words(text).join(" ")
}

/// Whether a character is left out of displayed text: control characters that are not
/// whitespace (a NUL ends FFmpeg's reading of a subtitle file; escape sequences garble
/// terminals) and the byte-order mark (which readers may take for the start of a file).
fn is_invisible(character: char) -> bool {
    (character.is_control() && !character.is_whitespace()) || character == '\u{FEFF}'
}

/// The words of `text`: split at every kind of whitespace (`\r`, `\n`, U+2028 and U+2029
/// included), with invisible characters dropped and words left empty by that skipped.
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|word| {
            word.chars()
                .filter(|&c| !is_invisible(c))
                .collect::<String>()
        })
        .filter(|word| !word.is_empty())
        .collect()
}

/// Wraps `text` into as few lines of at most `width` characters as its words allow, with the
/// lines as even in length as possible (a word longer than `width` gets a line of its own).
/// Whitespace, newlines included, only separates words; invisible characters are dropped
/// (see [`words`]).
pub fn wrap_lines(text: &str, width: usize) -> Vec<String> {
    let words = words(text);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    if words.is_empty() {
        return Vec::new();
    }
    let line_count = greedy_wrap(&words, width).len();
    let total: usize =
        words.iter().map(|word| word.chars().count()).sum::<usize>() + words.len() - 1;
    // The narrowest width that still needs no more lines than the widest gives even lines.
    (total.div_ceil(line_count)..width)
        .map(|narrower| greedy_wrap(&words, narrower))
        .find(|lines| lines.len() == line_count)
        .unwrap_or_else(|| greedy_wrap(&words, width))
}

/// Fills each line with as many words as fit in `width` characters.
fn greedy_wrap(words: &[&str], width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut current_chars = 0;
    for word in words {
        let word_chars = word.chars().count();
        if current_chars > 0 && current_chars + 1 + word_chars > width {
            lines.push(std::mem::take(&mut current));
            current_chars = 0;
        }
        if current_chars > 0 {
            current.push(' ');
            current_chars += 1;
        }
        current.push_str(word);
        current_chars += word_chars;
    }
    lines.push(current);
    lines
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::analysis::{
        Chapter, KeyframeRecord, ModelRecord, ModelsRecord, SceneSpan, Timings, VideoRecord, SCHEMA,
    };

    /// A small analysis: three keyframes over 12 s, the second without a caption, and two
    /// chapters.
    pub(crate) fn analysis(captions: [Option<&str>; 3]) -> Analysis {
        let scenes = [(0.0, 4.0, 1.5), (4.0, 8.5, 6.0), (8.5, 12.0, 10.25)];
        Analysis {
            schema: SCHEMA.to_string(),
            video: VideoRecord {
                path: "clip.mp4".into(),
                sha256: "0".repeat(64),
                duration_s: 12.0,
                width: 640,
                height: 360,
                fps: 25.0,
            },
            models: ModelsRecord {
                embedder: ModelRecord {
                    name: "MobileCLIP2-S0".into(),
                    source: "timm/MobileCLIP2-S0-OpenCLIP".into(),
                    revision: None,
                    weights_sha256: None,
                    licence: None,
                },
                captioner: Some(ModelRecord {
                    name: "FastVLM-0.5B".into(),
                    source: "apple/FastVLM-0.5B".into(),
                    revision: None,
                    weights_sha256: None,
                    licence: None,
                }),
            },
            pipeline: serde_json::json!({}),
            keyframes: scenes
                .iter()
                .zip(captions)
                .enumerate()
                .map(
                    |(index, (&(start_s, end_s, time_s), caption))| KeyframeRecord {
                        index,
                        time_s,
                        timecode: MediaTime::from_seconds(time_s).timecode(),
                        scene: SceneSpan { start_s, end_s },
                        change: 0.25 * index as f32,
                        caption: caption.map(str::to_string),
                    },
                )
                .collect(),
            summary: Some("A short clip.".into()),
            chapters: vec![
                Chapter {
                    title: "Opening".into(),
                    start_s: 0.0,
                    timecode: "00:00:00.000".into(),
                },
                Chapter {
                    title: "Ending".into(),
                    start_s: 8.5,
                    timecode: "00:00:08.500".into(),
                },
            ],
            embeddings: None,
            timings: Timings::default(),
            decode_gaps: Vec::new(),
            live: None,
        }
    }

    #[test]
    fn format_names_parse_and_come_from_file_names() {
        for format in Format::ALL {
            assert_eq!(format.name().parse::<Format>(), Ok(format));
        }
        assert_eq!("SRT".parse::<Format>(), Ok(Format::Srt));
        assert_eq!("Scenes-CSV".parse::<Format>(), Ok(Format::ScenesCsv));
        assert!("html"
            .parse::<Format>()
            .unwrap_err()
            .to_string()
            .contains("`html`"));
        assert_eq!(Format::from_file_name("out.SRT"), Some(Format::Srt));
        assert_eq!(Format::from_file_name("a.vtt"), Some(Format::Vtt));
        assert_eq!(
            Format::from_file_name("a.chapters.vtt"),
            Some(Format::Chapters)
        );
        assert_eq!(Format::from_file_name("a.ndjson"), Some(Format::Jsonl));
        assert_eq!(Format::from_file_name("cut.EDL"), Some(Format::Edl));
        assert_eq!(Format::from_file_name("a.otio"), Some(Format::Otio));
        assert_eq!(Format::from_file_name("a.fcpxml"), Some(Format::Fcpxml));
        assert_eq!(Format::from_file_name("a.ffmeta"), Some(Format::Ffmetadata));
        assert_eq!(
            Format::from_file_name("a.scenes.csv"),
            Some(Format::ScenesCsv)
        );
        assert_eq!(Format::from_file_name("scenes.csv"), Some(Format::Csv));
        for format in Format::ALL {
            if let Some(extension) = format.extension() {
                let name = format!("video.{extension}");
                assert_eq!(Format::from_file_name(&name), Some(format), "{name}");
            }
        }
        assert_eq!(Format::from_file_name("report.html"), None);
        assert_eq!(Format::from_file_name("srt"), None);
    }

    #[test]
    fn captions_span_from_scene_start_to_next_scene_start() {
        let mut analysis = analysis([Some("a"), None, Some("c")]);
        // A scene end that disagrees with the next start does not matter: the next start wins.
        analysis.keyframes[0].scene.end_s = 3.9;
        let spans = caption_spans(&analysis);
        let millis: Vec<(u64, u64)> = spans
            .iter()
            .map(|span| (span.start.millis(), span.end.millis()))
            .collect();
        assert_eq!(millis, [(0, 4000), (4000, 8500), (8500, 12000)]);
        let cues = caption_cues(&analysis);
        assert_eq!(cues.len(), 2);
        assert_eq!((cues[0].keyframe, cues[1].keyframe), (0, 2));
    }

    #[test]
    fn missing_duration_falls_back_to_the_last_scene_end() {
        let mut analysis = analysis([Some("a"), Some("b"), Some("c")]);
        analysis.video.duration_s = 0.0;
        assert_eq!(caption_spans(&analysis)[2].end.millis(), 12000);
        assert_eq!(chapter_spans(&analysis)[1].end.millis(), 12000);
    }

    #[test]
    fn empty_spans_get_a_millisecond() {
        let mut analysis = analysis([Some("a"), Some("b"), Some("c")]);
        analysis.keyframes[1].scene.start_s = 8.5;
        let spans = caption_spans(&analysis);
        assert_eq!(
            (spans[1].start.millis(), spans[1].end.millis()),
            (8500, 8501)
        );
    }

    #[test]
    fn chapters_run_to_the_next_chapter() {
        let analysis = analysis([None, None, None]);
        let spans = chapter_spans(&analysis);
        assert_eq!(spans.len(), 2);
        assert_eq!((spans[0].start.millis(), spans[0].end.millis()), (0, 8500));
        assert_eq!(
            (spans[1].start.millis(), spans[1].end.millis()),
            (8500, 12000)
        );
    }

    #[test]
    fn blank_captions_make_no_cue() {
        let analysis = analysis([Some("  \n "), Some("b"), Some("")]);
        let cues = caption_cues(&analysis);
        assert_eq!(cues.len(), 1);
        assert_eq!(cues[0].lines, ["b"]);
    }

    #[test]
    fn file_names_of_either_kind_of_path() {
        assert_eq!(file_name("C:\\videos\\a.mp4"), "a.mp4");
        assert_eq!(file_name("dir/b.mov"), "b.mov");
        assert_eq!(file_name("dir/"), "dir");
    }

    #[test]
    fn wrapping_keeps_lines_short_and_even() {
        let text = "A robot standing on the surface of Mars, looking at a dusty red horizon \
                    under a pale sky.";
        let lines = wrap_lines(text, 42);
        assert_eq!(
            lines,
            [
                "A robot standing on the surface",
                "of Mars, looking at a dusty red",
                "horizon under a pale sky."
            ]
        );
        assert!(lines.iter().all(|line| line.chars().count() <= 42));
        assert_eq!(lines.join(" "), one_line(text));
        assert_eq!(
            wrap_lines("Two lines\nof text", 42),
            ["Two lines of text"],
            "newlines are only word separators"
        );
        let long = "x".repeat(50);
        assert_eq!(
            wrap_lines(&format!("{long} end"), 42),
            [long.as_str(), "end"]
        );
        assert_eq!(wrap_lines(" \t\n", 42), Vec::<String>::new());
        // Characters, not bytes: 20 two-byte letters fit on one line.
        assert_eq!(wrap_lines(&"é".repeat(20), 42).len(), 1);
    }
}
