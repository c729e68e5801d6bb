//! The exports of an analysis: golden files, subtitles parsed back by an independent parser
//! (the `subtp` crate for SRT and WebVTT, the `csv` crate for CSV) and by FFmpeg's own
//! demuxers (`ffprobe`), hostile captions that try to forge cues, and `keyscribe export`.
//! (The editors' formats are read back in `tests/exports.rs`.)
//!
//! Regenerate the golden files after an intended change with
//! `KEYSCRIBE_BLESS=1 cargo test --release --test output`, then review the diff.

mod common;

// Its deterministic generator is the one the tests share; the rest is for search tests.
#[allow(dead_code)]
#[path = "common/synthetic_library.rs"]
mod synthetic_library;

use std::path::{Path, PathBuf};
use std::process::Command;

use subtp::srt::{SrtTimestamp, SubRip};
use subtp::vtt::{VttBlock, VttTimestamp, WebVtt};

use keyscribe::analysis::Analysis;
use keyscribe::output::{self, tabular, Format};
use synthetic_library::Random;

/// The analyses the golden files are made from.
const FIXTURES: [&str; 2] = ["scenes", "tricky"];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn fixture(name: &str) -> Analysis {
    let path = golden_dir().join(format!("{name}.analysis.json"));
    Analysis::load(&path).unwrap_or_else(|error| panic!("{error}"))
}

fn blessing() -> bool {
    std::env::var_os("KEYSCRIBE_BLESS").is_some_and(|value| value == "1")
}

/// The golden file name of a fixture in a text format (`None` for `images`).
fn golden_name(fixture: &str, format: Format) -> Option<String> {
    format
        .extension()
        .map(|extension| format!("{fixture}.{extension}"))
}

/// Compares `actual` with a golden file, or rewrites the file when blessing.
fn check_golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if blessing() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error} (make it with KEYSCRIBE_BLESS=1 cargo test --release --test output)",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name} differs from the golden file at line {}:\n  expected: {:?}\n  actual:   {:?}\n\
             (if the change is intended: KEYSCRIBE_BLESS=1 cargo test --release --test output)",
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line),
        );
    }
}

#[test]
fn every_format_matches_its_golden_file() {
    for name in FIXTURES {
        let analysis = fixture(name);
        for format in Format::ALL {
            let Some(golden) = golden_name(name, format) else {
                continue;
            };
            let text = output::render(format, &analysis)
                .unwrap_or_else(|error| panic!("{golden}: {error}"));
            check_golden(&golden, &text);
        }
    }
}

/// One cue as the specification of keyscribe's subtitles describes it, computed here from
/// the analysis without the library's cue code: each captioned keyframe from its scene's
/// start to the next keyframe's scene start (the last to the end of the video), its caption
/// on one line.
#[derive(Debug, Clone, PartialEq)]
struct ExpectedCue {
    start_ms: u64,
    end_ms: u64,
    text: String,
}

/// The cues with `›` read as `>` and `∶` as `:`: the look-alikes SubRip's escaping writes
/// (for a `>` after a `-`, and the colon of a first line starting `X1:`).
fn without_look_alikes(cues: &[ExpectedCue]) -> Vec<ExpectedCue> {
    cues.iter()
        .map(|cue| ExpectedCue {
            text: cue.text.replace('\u{203A}', ">").replace('\u{2236}', ":"),
            ..cue.clone()
        })
        .collect()
}

fn millis(seconds: f64) -> u64 {
    (seconds * 1000.0).round() as u64
}

/// A caption as subtitles show it: its words (split at any Unicode whitespace) joined by
/// single spaces, without control characters or byte-order marks.
fn visible_words(caption: &str) -> String {
    caption
        .split_whitespace()
        .map(|word| {
            word.chars()
                .filter(|&c| !c.is_control() && c != '\u{FEFF}')
                .collect::<String>()
        })
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn expected_cues(analysis: &Analysis) -> Vec<ExpectedCue> {
    let keyframes = &analysis.keyframes;
    let end_of_video = keyframes
        .iter()
        .map(|keyframe| keyframe.scene.end_s)
        .fold(analysis.video.duration_s, f64::max);
    keyframes
        .iter()
        .enumerate()
        .filter_map(|(position, keyframe)| {
            let text = visible_words(keyframe.caption.as_deref()?);
            let start_ms = millis(keyframe.scene.start_s);
            let end_ms = millis(
                keyframes
                    .get(position + 1)
                    .map_or(end_of_video, |next| next.scene.start_s),
            );
            (!text.is_empty()).then(|| ExpectedCue {
                start_ms,
                end_ms: end_ms.max(start_ms + 1),
                text,
            })
        })
        .collect()
}

fn srt_ms(time: &SrtTimestamp) -> u64 {
    ((u64::from(time.hours) * 60 + u64::from(time.minutes)) * 60 + u64::from(time.seconds)) * 1000
        + u64::from(time.milliseconds)
}

fn vtt_ms(time: &VttTimestamp) -> u64 {
    ((u64::from(time.hours) * 60 + u64::from(time.minutes)) * 60 + u64::from(time.seconds)) * 1000
        + u64::from(time.milliseconds)
}

/// Decodes the character references WebVTT cue text may hold; any other `&` or a `<` is an
/// error (a tag or a bare ampersand would mean the text was not escaped).
fn unescape_vtt(line: &str) -> String {
    assert!(!line.contains('<'), "unescaped `<` in cue text: {line:?}");
    let mut text = String::new();
    let mut rest = line;
    while let Some(at) = rest.find('&') {
        text.push_str(&rest[..at]);
        rest = &rest[at..];
        let (reference, character) = [("&amp;", '&'), ("&lt;", '<'), ("&gt;", '>')]
            .into_iter()
            .find(|(reference, _)| rest.starts_with(reference))
            .unwrap_or_else(|| panic!("bare `&` in cue text: {line:?}"));
        text.push(character);
        rest = &rest[reference.len()..];
    }
    text.push_str(rest);
    text
}

/// Every line of a cue fits the subtitle width unless it is one long word.
fn assert_wrapped(lines: &[String]) {
    for line in lines {
        assert!(
            line.chars().count() <= output::SUBTITLE_LINE_CHARS || !line.contains(' '),
            "line too long: {line:?}"
        );
    }
}

#[test]
fn srt_parses_back_to_the_same_cues() {
    for name in FIXTURES {
        let analysis = fixture(name);
        let srt = output::srt::render(&analysis);
        let parsed = SubRip::parse(&srt).unwrap_or_else(|error| panic!("{name}.srt: {error:?}"));
        let cues: Vec<ExpectedCue> = parsed
            .subtitles
            .iter()
            .enumerate()
            .map(|(position, subtitle)| {
                assert_eq!(subtitle.sequence as usize, position + 1, "numbering");
                assert_wrapped(&subtitle.text);
                ExpectedCue {
                    start_ms: srt_ms(&subtitle.start),
                    end_ms: srt_ms(&subtitle.end),
                    text: subtitle.text.join(" "),
                }
            })
            .collect();
        // SubRip cannot escape the timing arrow: a `>` after a `-` is written `›`.
        for cue in &cues {
            assert!(!cue.text.contains("->"), "an arrow in {:?}", cue.text);
        }
        assert_eq!(
            without_look_alikes(&cues),
            without_look_alikes(&expected_cues(&analysis)),
            "{name}.srt"
        );
    }
}

#[test]
fn webvtt_parses_back_to_the_same_cues() {
    for name in FIXTURES {
        let analysis = fixture(name);
        let vtt = output::vtt::render(&analysis);
        assert!(vtt.starts_with("WEBVTT\n\n") || vtt == "WEBVTT\n");
        let parsed = WebVtt::parse(&vtt).unwrap_or_else(|error| panic!("{name}.vtt: {error:?}"));
        let cues: Vec<ExpectedCue> = parsed
            .blocks
            .iter()
            .map(|block| {
                let VttBlock::Que(cue) = block else {
                    panic!("{name}.vtt has a block that is not a cue: {block:?}");
                };
                assert_eq!(cue.identifier, None);
                assert_eq!(cue.settings, None);
                for line in &cue.payload {
                    assert!(!line.contains("-->"), "`-->` in cue text: {line:?}");
                }
                let lines: Vec<String> =
                    cue.payload.iter().map(|line| unescape_vtt(line)).collect();
                assert_wrapped(&lines);
                ExpectedCue {
                    start_ms: vtt_ms(&cue.timings.start),
                    end_ms: vtt_ms(&cue.timings.end),
                    text: lines.join(" "),
                }
            })
            .collect();
        assert_eq!(cues, expected_cues(&analysis), "{name}.vtt");
    }
}

#[test]
fn webvtt_chapters_parse_back_to_the_chapters() {
    for name in FIXTURES {
        let analysis = fixture(name);
        let vtt = output::vtt::render_chapters(&analysis);
        let parsed = WebVtt::parse(&vtt).unwrap_or_else(|error| panic!("{name}: {error:?}"));
        let chapters: Vec<(u64, u64, String)> = parsed
            .blocks
            .iter()
            .map(|block| {
                let VttBlock::Que(cue) = block else {
                    panic!("not a cue: {block:?}");
                };
                assert_eq!(cue.payload.len(), 1, "a chapter title is one line");
                (
                    vtt_ms(&cue.timings.start),
                    vtt_ms(&cue.timings.end),
                    unescape_vtt(&cue.payload[0]),
                )
            })
            .collect();
        let end_of_video = millis(analysis.video.duration_s);
        let expected: Vec<(u64, u64, String)> = analysis
            .chapters
            .iter()
            .enumerate()
            .map(|(position, chapter)| {
                let title = chapter
                    .title
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                (
                    millis(chapter.start_s),
                    analysis
                        .chapters
                        .get(position + 1)
                        .map_or(end_of_video, |next| millis(next.start_s)),
                    if title.is_empty() {
                        chapter.timecode.clone()
                    } else {
                        title
                    },
                )
            })
            .collect();
        assert_eq!(chapters, expected, "{name} chapters");
        assert_eq!(
            chapters.last().map(|chapter| chapter.1),
            Some(end_of_video),
            "the last chapter ends with the video"
        );
    }
}

#[test]
fn csv_and_json_lines_parse_back_to_the_rows() {
    for name in FIXTURES {
        let analysis = fixture(name);
        let rows = tabular::rows(&analysis);
        assert_eq!(rows.len(), analysis.keyframes.len());

        let csv = output::render(Format::Csv, &analysis).unwrap();
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_string)
            .collect();
        assert_eq!(header.join(","), tabular::CSV_HEADER);
        let from_csv: Vec<tabular::KeyframeRow> = reader
            .deserialize()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|error| panic!("{name}.csv: {error}"));
        assert_eq!(from_csv, rows, "{name}.csv");

        let jsonl = output::render(Format::Jsonl, &analysis).unwrap();
        let from_jsonl: Vec<tabular::KeyframeRow> = jsonl
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(from_jsonl, rows, "{name}.jsonl");

        for (row, keyframe) in rows.iter().zip(&analysis.keyframes) {
            assert_eq!(row.caption, keyframe.caption, "captions are kept verbatim");
            assert_eq!(row.start_s, millis(keyframe.scene.start_s) as f64 / 1000.0);
        }
    }
}

/// Pieces of captions meant to break a subtitle file: arrows of every length, timing lines,
/// blank lines, lone numbers, byte-order marks, control characters, Unicode line breaks and
/// markup.
const HOSTILE: &[&str] = &[
    "--->",
    "---->",
    "-->",
    "->",
    "-- >",
    "- ->",
    "-->>",
    "<-->",
    "-",
    "--",
    ">",
    "\r\n\r\n",
    "\n\n",
    "\r\r",
    "\n \n",
    "1",
    "2",
    "42",
    "2024",
    "0001",
    "123456789012",
    "00:00:01,000 --> 00:00:02,000",
    "00:00:01.000 --> 00:00:02.000",
    "00:00:01,000-->00:00:02,000",
    "\n3\n00:00:05,000 --> 00:00:06,000\nforged cue\n",
    "X1:10 X2:20 Y1:30 Y2:40",
    "\u{FEFF}",
    "\u{2028}",
    "\u{2029}",
    "\u{85}",
    "\u{0}",
    "\u{1b}[2J",
    "\u{7}",
    "\u{b}",
    "\u{c}",
    "<i>",
    "</i>",
    "<b>bold</b>",
    "{\\an8}",
    "&amp;",
    "&lt;",
    "&",
    "<",
    "WEBVTT",
    "NOTE",
    "STYLE",
    "::cue",
    "word",
    "a",
    "Zürich",
    "שלום",
    "🚗",
    " ",
    "\t",
    "\u{203A}",
    "\u{2236}",
];

/// An analysis of `count` keyframes, 2 s each, with captions glued from [`HOSTILE`] pieces
/// (some words in between so that lines wrap).
fn hostile_analysis(seed: u64, count: usize) -> Analysis {
    let mut generator = Random::new(seed);
    let mut analysis = fixture("scenes");
    let template = analysis.keyframes[0].clone();
    analysis.keyframes = (0..count)
        .map(|index| {
            let pieces = 1 + generator.below(12);
            let caption: String = (0..pieces)
                .map(|_| {
                    let piece = HOSTILE[generator.below(HOSTILE.len())];
                    if generator.below(3) == 0 {
                        format!("{piece} ")
                    } else {
                        piece.to_string()
                    }
                })
                .collect();
            let start_s = index as f64 * 2.0;
            let mut keyframe = template.clone();
            keyframe.index = index;
            keyframe.time_s = start_s + 1.0;
            keyframe.scene.start_s = start_s;
            keyframe.scene.end_s = start_s + 2.0;
            keyframe.caption = Some(caption);
            keyframe
        })
        .collect();
    analysis.video.duration_s = count as f64 * 2.0;
    analysis
}

/// The packets FFmpeg's demuxer finds in a subtitle file: start and end in milliseconds and
/// the payload text, read with `ffprobe -show_packets -show_data`.
fn ffmpeg_packets(path: &Path) -> Vec<(u64, u64, String)> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json", "-show_packets", "-show_data"])
        .arg(path)
        .output()
        .expect("ffprobe runs (install FFmpeg's command-line tools)");
    assert!(
        output.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    json["packets"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|packet| {
            let pts = packet["pts"].as_u64().expect("a packet time");
            let duration = packet["duration"].as_u64().expect("a packet duration");
            (
                pts,
                pts + duration,
                hexdump_text(packet["data"].as_str().unwrap()),
            )
        })
        .collect()
}

/// The bytes of ffprobe's hex dump (`00000000: 4865 6c6c ...  Hell...`) as text.
fn hexdump_text(dump: &str) -> String {
    let mut bytes = Vec::new();
    for line in dump.lines().filter(|line| !line.is_empty()) {
        let hex: String = line[10..49]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        for pair in hex.as_bytes().chunks(2) {
            bytes.push(u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap());
        }
    }
    String::from_utf8(bytes).expect("UTF-8 payload")
}

#[test]
fn hostile_captions_cannot_forge_srt_cues() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 1..=6u64 {
        let analysis = hostile_analysis(seed * 0x9E37_79B9_7F4A_7C15, 150);
        let expected = expected_cues(&analysis);
        let srt = output::srt::render(&analysis);

        let parsed = SubRip::parse(&srt).unwrap_or_else(|error| panic!("seed {seed}: {error:?}"));
        assert_eq!(
            parsed.subtitles.len(),
            expected.len(),
            "seed {seed}: cue count"
        );
        let cues: Vec<ExpectedCue> = parsed
            .subtitles
            .iter()
            .enumerate()
            .map(|(position, subtitle)| {
                assert_eq!(subtitle.sequence as usize, position + 1, "numbering");
                for line in &subtitle.text {
                    assert!(!line.contains("->"), "seed {seed}: an arrow in {line:?}");
                    assert!(
                        subtitle.text.len() == 1 || !line.bytes().all(|b| b.is_ascii_digit()),
                        "seed {seed}: a line of digits alone: {:?}",
                        subtitle.text
                    );
                }
                ExpectedCue {
                    start_ms: srt_ms(&subtitle.start),
                    end_ms: srt_ms(&subtitle.end),
                    text: subtitle.text.join(" "),
                }
            })
            .collect();
        assert_eq!(
            without_look_alikes(&cues),
            without_look_alikes(&expected),
            "seed {seed}"
        );

        // FFmpeg's SubRip demuxer finds the same cues with the same text.
        let path = dir.path().join(format!("hostile-{seed}.srt"));
        std::fs::write(&path, &srt).unwrap();
        let packets = ffmpeg_packets(&path);
        let from_parser: Vec<(u64, u64, String)> = parsed
            .subtitles
            .iter()
            .map(|subtitle| {
                (
                    srt_ms(&subtitle.start),
                    srt_ms(&subtitle.end),
                    subtitle.text.join("\n"),
                )
            })
            .collect();
        assert_eq!(packets, from_parser, "seed {seed}: ffprobe");
    }
}

#[test]
fn hostile_captions_cannot_forge_webvtt_cues() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 1..=6u64 {
        let analysis = hostile_analysis(seed * 0xD1B5_4A32_D192_ED03, 150);
        let expected = expected_cues(&analysis);
        let vtt = output::vtt::render(&analysis);

        let parsed = WebVtt::parse(&vtt).unwrap_or_else(|error| panic!("seed {seed}: {error:?}"));
        let cues: Vec<ExpectedCue> = parsed
            .blocks
            .iter()
            .map(|block| {
                let VttBlock::Que(cue) = block else {
                    panic!("seed {seed}: a block that is not a cue: {block:?}");
                };
                assert_eq!((&cue.identifier, &cue.settings), (&None, &None));
                ExpectedCue {
                    start_ms: vtt_ms(&cue.timings.start),
                    end_ms: vtt_ms(&cue.timings.end),
                    text: cue
                        .payload
                        .iter()
                        .map(|line| unescape_vtt(line))
                        .collect::<Vec<_>>()
                        .join(" "),
                }
            })
            .collect();
        assert_eq!(cues, expected, "seed {seed}");

        let path = dir.path().join(format!("hostile-{seed}.vtt"));
        std::fs::write(&path, &vtt).unwrap();
        let packets: Vec<(u64, u64, String)> = ffmpeg_packets(&path)
            .into_iter()
            .map(|(start, end, text)| {
                let lines: Vec<String> = text.lines().map(unescape_vtt).collect();
                (start, end, lines.join(" "))
            })
            .collect();
        let expected: Vec<(u64, u64, String)> = expected
            .into_iter()
            .map(|cue| (cue.start_ms, cue.end_ms, cue.text))
            .collect();
        assert_eq!(packets, expected, "seed {seed}: ffprobe");
    }
}

fn keyscribe(args: &[&str]) -> std::process::Output {
    common::keyscribe()
        .args(args)
        .output()
        .expect("the keyscribe binary runs")
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn export_writes_to_stdout_or_a_file() {
    let analysis = golden_dir().join("scenes.analysis.json");
    let analysis = analysis.to_str().unwrap();
    let srt = keyscribe(&["export", analysis, "--format", "srt"]);
    assert!(srt.status.success(), "{}", stderr(&srt));
    assert_eq!(
        String::from_utf8(srt.stdout).unwrap(),
        std::fs::read_to_string(golden_dir().join("scenes.srt")).unwrap()
    );

    let dir = tempfile::tempdir().unwrap();
    for (file, golden) in [
        ("out.chapters.vtt", "scenes.chapters.vtt"),
        ("out.csv", "scenes.csv"),
    ] {
        let target = dir.path().join(file);
        let run = keyscribe(&["export", analysis, "-o", target.to_str().unwrap()]);
        assert!(run.status.success(), "{}", stderr(&run));
        assert!(run.stdout.is_empty(), "nothing on stdout with -o");
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            std::fs::read_to_string(golden_dir().join(golden)).unwrap()
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "no temporary files left behind"
    );
}

#[test]
fn export_errors_name_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let run = keyscribe(&["export", missing.to_str().unwrap(), "--format", "vtt"]);
    assert_eq!(run.status.code(), Some(1));
    let message = stderr(&run);
    assert!(message.contains("missing.json"), "{message}");
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");

    let other = dir.path().join("other.json");
    std::fs::write(&other, r#"{"schema": "something/2"}"#).unwrap();
    let run = keyscribe(&["export", other.to_str().unwrap(), "--format", "vtt"]);
    assert_eq!(run.status.code(), Some(1));
    let message = stderr(&run);
    assert!(
        message.contains("other.json") && message.contains("not a keyscribe analysis"),
        "{message}"
    );

    let analysis = golden_dir().join("scenes.analysis.json");
    let target = dir.path().join("captions.txt");
    let run = keyscribe(&[
        "export",
        analysis.to_str().unwrap(),
        "-o",
        target.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(1));
    assert!(stderr(&run).contains("--format"), "{}", stderr(&run));
    assert!(!target.exists());

    let run = keyscribe(&["export", analysis.to_str().unwrap(), "--format", "html"]);
    assert_eq!(run.status.code(), Some(2), "an unknown format is bad usage");
}

#[test]
fn export_warns_when_there_is_nothing_to_show() {
    let mut analysis = fixture("scenes");
    for keyframe in &mut analysis.keyframes {
        keyframe.caption = None;
    }
    analysis.chapters.clear();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uncaptioned.json");
    analysis.save(&path).unwrap();
    let run = keyscribe(&["export", path.to_str().unwrap(), "--format", "vtt"]);
    assert!(run.status.success());
    assert_eq!(run.stdout, b"WEBVTT\n");
    assert!(stderr(&run).contains("has no captions"), "{}", stderr(&run));
    let run = keyscribe(&["export", path.to_str().unwrap(), "--format", "chapters"]);
    assert!(run.status.success());
    assert!(stderr(&run).contains("has no chapters"), "{}", stderr(&run));
}
