//! What editors and players read, read back: FFmpeg chapters muxed into MKV and MP4 and
//! listed by `ffprobe`; the EDL, OTIO, FCPXML and scene CSV checked line by line and field by
//! field; keyframe pictures and `keyscribe split` pieces decoded frame by frame from the
//! barcode test videos, whose every frame carries its number.
//!
//! `tests/clients/check_exports.py` reads the EDL, OTIO and FCPXML with OpenTimelineIO and its
//! adapters (run by `.ci/run`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keyscribe::analysis::{Analysis, KeyframeRecord, SceneSpan};
use keyscribe::output::scenes::scene_list;
use keyscribe::output::{self, Format};
use keyscribe::time::MediaTime;

fn golden(name: &str) -> Analysis {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.analysis.json"));
    Analysis::load(&path).unwrap_or_else(|error| panic!("{error}"))
}

fn keyscribe(args: &[&str]) -> Output {
    common::keyscribe()
        .args(args)
        .output()
        .expect("the keyscribe binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs an FFmpeg tool and returns its stdout; fails the test on an error.
fn ffmpeg_tool(program: &str, args: &[&str]) -> Vec<u8> {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{program} runs (install FFmpeg's tools): {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        stderr(&output)
    );
    output.stdout
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 paths in tests")
}

/// `text` as it must come back from a one-line field: words joined by single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn ffmetadata_chapters_mux_into_mkv_and_mp4() {
    let sample = common::scenes_sample();
    let dir = tempfile::tempdir().unwrap();
    let mut with_chapters = golden("scenes");
    with_chapters.chapters[1].title = "Act #2; a=b \\ c\nnext line".into();
    let mut without_chapters = golden("scenes");
    without_chapters.chapters.clear();
    without_chapters.keyframes[3].caption = Some("Cells; 50% = #live \\o/".into());
    without_chapters.keyframes[4].caption = None;

    for (name, analysis) in [("chapters", &with_chapters), ("scenes", &without_chapters)] {
        let metadata = dir.path().join(format!("{name}.ffmeta"));
        std::fs::write(
            &metadata,
            output::render(Format::Ffmetadata, analysis).unwrap(),
        )
        .unwrap();
        let expected: Vec<(u64, u64, String)> = if analysis.chapters.is_empty() {
            output::caption_spans(analysis)
                .iter()
                .zip(&analysis.keyframes)
                .enumerate()
                .map(|(position, (span, keyframe))| {
                    let title = keyframe
                        .caption
                        .as_deref()
                        .map(one_line)
                        .unwrap_or_default();
                    (
                        span.start.millis(),
                        span.end.millis(),
                        if title.is_empty() {
                            format!("Scene {}", position + 1)
                        } else {
                            title
                        },
                    )
                })
                .collect()
        } else {
            output::chapter_spans(analysis)
                .iter()
                .zip(&analysis.chapters)
                .map(|(span, chapter)| {
                    (
                        span.start.millis(),
                        span.end.millis(),
                        one_line(&chapter.title),
                    )
                })
                .collect()
        };
        assert_eq!(
            expected.last().unwrap().1,
            30_000,
            "the last chapter ends the video"
        );
        for container in ["mkv", "mp4"] {
            let muxed = dir.path().join(format!("{name}.{container}"));
            ffmpeg_tool(
                "ffmpeg",
                &[
                    "-v",
                    "error",
                    "-y",
                    "-i",
                    path_str(&sample),
                    "-i",
                    path_str(&metadata),
                    "-map",
                    "0",
                    "-map_metadata",
                    "1",
                    "-map_chapters",
                    "1",
                    "-c",
                    "copy",
                    path_str(&muxed),
                ],
            );
            let probed: serde_json::Value = serde_json::from_slice(&ffmpeg_tool(
                "ffprobe",
                &[
                    "-v",
                    "error",
                    "-of",
                    "json",
                    "-show_chapters",
                    path_str(&muxed),
                ],
            ))
            .unwrap();
            let chapters: Vec<(u64, u64, String)> = probed["chapters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|chapter| {
                    let seconds =
                        |key: &str| chapter[key].as_str().unwrap().parse::<f64>().unwrap();
                    (
                        (seconds("start_time") * 1000.0).round() as u64,
                        (seconds("end_time") * 1000.0).round() as u64,
                        chapter["tags"]["title"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect();
            assert_eq!(chapters, expected, "{name}.{container}");
        }
    }
}

/// The fields of an EDL event line.
struct Event<'a> {
    number: &'a str,
    fields: Vec<&'a str>,
}

/// A non-drop-frame timecode as a frame count, checking its form.
fn timecode_frames(timecode: &str, timecode_fps: u64) -> u64 {
    let parts: Vec<u64> = timecode
        .split(':')
        .map(|part| {
            part.parse()
                .unwrap_or_else(|_| panic!("timecode {timecode:?}"))
        })
        .collect();
    assert_eq!(parts.len(), 4, "{timecode:?}");
    assert!(
        parts[1] < 60 && parts[2] < 60 && parts[3] < timecode_fps,
        "{timecode:?}"
    );
    ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * timecode_fps + parts[3]
}

#[test]
fn edl_events_follow_cmx3600_and_tile_the_video() {
    for name in ["scenes", "tricky"] {
        let analysis = golden(name);
        let scenes = scene_list(&analysis).unwrap();
        let fps = scenes.rate.timecode_fps();
        let edl = output::render(Format::Edl, &analysis).unwrap();
        let mut lines = edl.lines();
        assert!(lines.next().unwrap().starts_with("TITLE: "));
        assert_eq!(lines.next(), Some("FCM: NON-DROP FRAME"));
        let mut events: Vec<Event> = Vec::new();
        let mut locators: Vec<(u64, String)> = Vec::new();
        for line in lines.filter(|line| !line.is_empty()) {
            assert!(
                line.starts_with("* FROM CLIP: ") || line.chars().all(|c| (' '..='~').contains(&c)),
                "{name}: not printable ASCII: {line:?}"
            );
            if let Some(comment) = line.strip_prefix("* ") {
                if let Some(locator) = comment.strip_prefix("LOC: ") {
                    let (timecode, rest) = locator.split_at(11);
                    let text = rest
                        .trim_start()
                        .strip_prefix("YELLOW")
                        .unwrap()
                        .trim()
                        .to_string();
                    locators.push((timecode_frames(timecode, fps), text));
                }
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 8, "{name}: {line:?}");
            assert_eq!(&fields[1..4], ["AX", "V", "C"], "{name}: {line:?}");
            events.push(Event {
                number: &line[..3],
                fields,
            });
        }
        assert_eq!(
            events.len(),
            scenes.scenes.len(),
            "{name}: one event per scene"
        );
        let mut expected_start = 0;
        for (position, event) in events.iter().enumerate() {
            assert_eq!(event.number, format!("{:03}", position + 1));
            let frames: Vec<u64> = event.fields[4..]
                .iter()
                .map(|tc| timecode_frames(tc, fps))
                .collect();
            assert_eq!(
                frames[0], expected_start,
                "{name}: events follow each other"
            );
            assert!(frames[1] > frames[0]);
            assert_eq!(
                (frames[2], frames[3]),
                (frames[0], frames[1]),
                "record = source"
            );
            let (locator, text) = &locators[position];
            assert!(
                (frames[0]..frames[1]).contains(locator),
                "{name}: the locator is in its event"
            );
            let caption = scenes.scenes[position].caption.clone().unwrap_or_default();
            if caption.is_ascii() {
                assert_eq!(text, &caption);
            }
            expected_start = frames[1];
        }
        assert_eq!(
            expected_start, scenes.total_frames,
            "{name}: the events cover the video"
        );
    }
}

#[test]
fn otio_has_one_clip_per_scene_with_its_marker() {
    for name in ["scenes", "tricky"] {
        let analysis = golden(name);
        let scenes = scene_list(&analysis).unwrap();
        let otio: serde_json::Value =
            serde_json::from_str(&output::render(Format::Otio, &analysis).unwrap()).unwrap();
        assert_eq!(otio["OTIO_SCHEMA"], "Timeline.1");
        assert_eq!(otio["tracks"]["OTIO_SCHEMA"], "Stack.1");
        let tracks = otio["tracks"]["children"].as_array().unwrap();
        assert_eq!(tracks.len(), 1);
        assert_eq!(
            (&tracks[0]["OTIO_SCHEMA"], &tracks[0]["kind"]),
            (&"Track.1".into(), &"Video".into())
        );
        let clips = tracks[0]["children"].as_array().unwrap();
        assert_eq!(clips.len(), scenes.scenes.len());
        let mut next = 0.0;
        for (clip, scene) in clips.iter().zip(&scenes.scenes) {
            assert_eq!(clip["OTIO_SCHEMA"], "Clip.2");
            let range = &clip["source_range"];
            let rate = range["start_time"]["rate"].as_f64().unwrap();
            assert!((rate - scenes.rate.fps()).abs() < 1e-9);
            let start = range["start_time"]["value"].as_f64().unwrap();
            let duration = range["duration"]["value"].as_f64().unwrap();
            assert_eq!(start, next, "{name}: clips follow each other");
            assert!(duration >= 1.0);
            next = start + duration;
            let markers = clip["markers"].as_array().unwrap();
            assert_eq!(markers.len(), 1);
            let at = markers[0]["marked_range"]["start_time"]["value"]
                .as_f64()
                .unwrap();
            assert!(
                at >= start && at < start + duration,
                "{name}: the marker is in its clip"
            );
            let caption = analysis.keyframes[scene.keyframe]
                .caption
                .as_deref()
                .unwrap_or_default();
            assert_eq!(markers[0]["name"], one_line(caption).as_str());
            assert_eq!(markers[0]["comment"], caption.trim());
            let media =
                &clip["media_references"][clip["active_media_reference_key"].as_str().unwrap()];
            assert_eq!(media["OTIO_SCHEMA"], "ExternalReference.1");
        }
        assert_eq!(
            next, scenes.total_frames as f64,
            "{name}: the clips cover the video"
        );
    }
}

/// An element of a small XML document: name, attributes (references decoded), children.
#[derive(Debug)]
struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    children: Vec<Element>,
}

impl Element {
    fn attribute(&self, name: &str) -> &str {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .unwrap_or_else(|| panic!("<{}> has no {name}", self.name))
    }

    fn child(&self, name: &str) -> &Element {
        self.children
            .iter()
            .find(|child| child.name == name)
            .unwrap_or_else(|| panic!("<{}> has no <{name}>", self.name))
    }

    fn all(&self, name: &str) -> Vec<&Element> {
        self.children
            .iter()
            .filter(|child| child.name == name)
            .collect()
    }
}

fn decode_references(text: &str) -> String {
    let mut decoded = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        decoded.push_str(&rest[..at]);
        let end = rest[at..].find(';').expect("a terminated reference") + at;
        decoded.push(match &rest[at + 1..end] {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            other => panic!("unknown reference &{other};"),
        });
        rest = &rest[end + 1..];
    }
    assert!(!rest.contains('<'), "a raw < in {text:?}");
    decoded.push_str(rest);
    decoded
}

/// Parses the elements of an XML document written as FCPXML is: elements and attributes,
/// no text content, no comments.
fn parse_xml(xml: &str) -> Element {
    let mut stack = vec![Element {
        name: String::new(),
        attributes: Vec::new(),
        children: Vec::new(),
    }];
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        assert!(
            rest[..open].trim().is_empty(),
            "text outside a tag: {:?}",
            &rest[..open]
        );
        let close = open + rest[open..].find('>').expect("a closed tag");
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let element = stack.pop().unwrap();
            assert_eq!(element.name, name, "mismatched closing tag");
            stack.last_mut().unwrap().children.push(element);
            continue;
        }
        let empty = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let (name, mut attributes_text) = tag.split_once(' ').unwrap_or((tag, ""));
        let mut attributes = Vec::new();
        while let Some(equals) = attributes_text.find("=\"") {
            let key = attributes_text[..equals].trim().to_string();
            let value_end = equals + 2 + attributes_text[equals + 2..].find('"').unwrap();
            attributes.push((
                key,
                decode_references(&attributes_text[equals + 2..value_end]),
            ));
            attributes_text = &attributes_text[value_end + 1..];
        }
        assert!(attributes_text.trim().is_empty(), "{tag:?}");
        let element = Element {
            name: name.to_string(),
            attributes,
            children: Vec::new(),
        };
        if empty {
            stack.last_mut().unwrap().children.push(element);
        } else {
            stack.push(element);
        }
    }
    assert!(rest.trim().is_empty());
    assert_eq!(stack.len(), 1, "unclosed elements");
    let mut document = stack.pop().unwrap();
    assert_eq!(document.children.len(), 1, "one root element");
    document.children.pop().unwrap()
}

/// FCPXML time (`0s`, `N/Ds`, `Ns`) in frames at `frame_seconds` per frame.
fn fcpxml_frames(time: &str, frame_seconds: (u64, u64)) -> u64 {
    let time = time.strip_suffix('s').expect("a time ends in s");
    let (numerator, denominator): (u64, u64) = match time.split_once('/') {
        Some((numerator, denominator)) => {
            (numerator.parse().unwrap(), denominator.parse().unwrap())
        }
        None => (time.parse().unwrap(), 1),
    };
    // frames = (numerator / denominator) / (frame_seconds.0 / frame_seconds.1)
    let scaled = numerator * frame_seconds.1;
    let per = denominator * frame_seconds.0;
    assert_eq!(scaled % per, 0, "{time} is not on a frame");
    scaled / per
}

#[test]
fn fcpxml_has_a_clip_per_scene_on_the_spine() {
    for name in ["scenes", "tricky"] {
        let analysis = golden(name);
        let scenes = scene_list(&analysis).unwrap();
        let xml = output::render(Format::Fcpxml, &analysis).unwrap();
        let root = parse_xml(&xml);
        assert_eq!(root.name, "fcpxml");
        assert_eq!(root.attribute("version"), "1.9");
        let resources = root.child("resources");
        let format = resources.child("format");
        let frame = format.attribute("frameDuration").strip_suffix('s').unwrap();
        let (a, b) = frame.split_once('/').unwrap();
        let frame_seconds: (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        assert_eq!(
            f64::from(frame_seconds.1 as u32) / f64::from(frame_seconds.0 as u32),
            scenes.rate.fps()
        );
        let asset = resources.child("asset");
        assert_eq!(asset.attribute("format"), format.attribute("id"));
        assert!(!asset.child("media-rep").attribute("src").is_empty());
        let sequence = root
            .child("library")
            .child("event")
            .child("project")
            .child("sequence");
        assert_eq!(
            fcpxml_frames(sequence.attribute("duration"), frame_seconds),
            scenes.total_frames
        );
        let clips = sequence.child("spine").all("asset-clip");
        assert_eq!(clips.len(), scenes.scenes.len());
        let mut next = 0;
        for (clip, scene) in clips.iter().zip(&scenes.scenes) {
            assert_eq!(clip.attribute("ref"), asset.attribute("id"));
            let offset = fcpxml_frames(clip.attribute("offset"), frame_seconds);
            let start = fcpxml_frames(clip.attribute("start"), frame_seconds);
            let duration = fcpxml_frames(clip.attribute("duration"), frame_seconds);
            assert_eq!(
                (offset, start),
                (next, next),
                "{name}: clips follow each other"
            );
            next += duration;
            let markers = clip.all("marker");
            assert_eq!(markers.len(), 1);
            let at = fcpxml_frames(markers[0].attribute("start"), frame_seconds);
            assert!((start..start + duration).contains(&at));
            let caption = analysis.keyframes[scene.keyframe]
                .caption
                .as_deref()
                .unwrap_or_default();
            assert_eq!(markers[0].attribute("value"), one_line(caption));
        }
        assert_eq!(
            next, scenes.total_frames,
            "{name}: the clips cover the video"
        );
    }
}

#[test]
fn scene_csv_reads_as_pyscenedetect_writes_it() {
    for name in ["scenes", "tricky"] {
        let analysis = golden(name);
        let scenes = scene_list(&analysis).unwrap();
        let csv = output::render(Format::ScenesCsv, &analysis).unwrap();
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_string)
            .collect();
        assert_eq!(
            header,
            [
                "Scene Number",
                "Start Frame",
                "Start Timecode",
                "Start Time (seconds)",
                "End Frame",
                "End Timecode",
                "End Time (seconds)",
                "Length (frames)",
                "Length (timecode)",
                "Length (seconds)",
                "Caption"
            ]
        );
        let fps = scenes.rate.fps();
        let mut last_end = 0;
        let mut rows = 0;
        for (record, scene) in reader.records().map(Result::unwrap).zip(&scenes.scenes) {
            let number = |column: usize| record[column].parse::<u64>().unwrap();
            let seconds = |column: usize| record[column].parse::<f64>().unwrap();
            assert_eq!(number(0), rows + 1);
            assert_eq!(
                number(1),
                last_end + 1,
                "{name}: 1-based start frames follow on"
            );
            assert_eq!(
                number(7),
                number(4) - number(1) + 1,
                "{name}: length in frames"
            );
            let columns = [(number(1) - 1, 3, 2), (number(4), 6, 5), (number(7), 9, 8)];
            for (frames, seconds_column, timecode_column) in columns {
                let time = MediaTime::from_seconds(frames as f64 / fps);
                assert!(
                    (seconds(seconds_column) - time.seconds()).abs() < 0.0006,
                    "{name}: {record:?}"
                );
                assert_eq!(
                    &record[timecode_column],
                    time.timecode(),
                    "{name}: {record:?}"
                );
                let millis: u64 = record[seconds_column].replace('.', "").parse().unwrap();
                assert_eq!(millis, time.millis(), "{name}: seconds and timecode agree");
            }
            assert_eq!(&record[10], scene.caption.clone().unwrap_or_default());
            last_end = number(4);
            rows += 1;
        }
        assert_eq!(rows as usize, scenes.scenes.len());
        assert_eq!(last_end, scenes.total_frames);
    }
}

/// An analysis of one of the barcode test videos with scenes starting at `starts` seconds,
/// each keyframe in the middle of its scene, saved beside `dir`.
fn counter_analysis(video: &Path, starts: &[f64], dir: &Path) -> PathBuf {
    let info = keyscribe::video::probe(video).unwrap();
    let mut analysis = golden("scenes");
    analysis.video.path = path_str(video).to_string();
    analysis.video.sha256 = keyscribe::cache::file_sha256(video).unwrap();
    analysis.video.duration_s = info.duration_s;
    analysis.video.fps = info.fps;
    analysis.video.width = info.width;
    analysis.video.height = info.height;
    analysis.chapters.clear();
    analysis.keyframes = starts
        .iter()
        .enumerate()
        .map(|(index, &start_s)| {
            let end_s = starts.get(index + 1).copied().unwrap_or(info.duration_s);
            let time_s = (start_s + end_s) / 2.0;
            KeyframeRecord {
                index,
                time_s,
                timecode: MediaTime::from_seconds(time_s).timecode(),
                scene: SceneSpan { start_s, end_s },
                change: 0.5,
                caption: Some(format!("Scene starting at {start_s} s")),
            }
        })
        .collect();
    let path = dir.join(format!(
        "{}.analysis.json",
        video.file_stem().unwrap().to_string_lossy()
    ));
    analysis.save(&path).unwrap();
    path
}

/// The frame numbers a barcode video shows, frame by frame, decoded by the ffmpeg CLI.
fn frame_numbers(video: &Path) -> Vec<u32> {
    let (width, height) = (320, 240);
    let raw = ffmpeg_tool(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-i",
            path_str(video),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
    );
    raw.chunks(width * height * 3)
        .map(|frame| {
            let picture =
                image::RgbImage::from_raw(width as u32, height as u32, frame.to_vec()).unwrap();
            common::read_counter(&picture)
        })
        .collect()
}

/// The pieces `keyscribe split --json` lists: file, first and last scene.
fn split(video: &Path, analysis: &Path, out: &Path, exact: bool) -> Vec<(PathBuf, u64, u64)> {
    let mut args = vec![
        "split",
        path_str(video),
        path_str(analysis),
        "--out",
        path_str(out),
        "--json",
    ];
    if exact {
        args.push("--exact");
    }
    let run = keyscribe(&args);
    assert!(run.status.success(), "{}", stderr(&run));
    let pieces: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let files: Vec<(PathBuf, u64, u64)> = pieces
        .as_array()
        .unwrap()
        .iter()
        .map(|piece| {
            (
                PathBuf::from(piece["file"].as_str().unwrap()),
                piece["first_scene"].as_u64().unwrap(),
                piece["last_scene"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let listed: Vec<String> = files
        .iter()
        .map(|(file, ..)| file.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(on_disk, listed, "exactly the pieces, no temporary files");
    files
}

#[test]
fn split_by_stream_copy_cuts_at_the_nearest_key_frames_and_tiles_the_video() {
    // counter.mp4: 300 frames at 25 fps, key frames every 50 frames, B-frames.
    let dir = tempfile::tempdir().unwrap();
    for name in ["counter.mp4", "delayed.mp4"] {
        let video = common::video(name);
        let analysis = counter_analysis(&video, &[0.0, 3.0, 5.2, 9.96], dir.path());
        let out = dir.path().join(format!("copy-{name}"));
        let pieces = split(&video, &analysis, &out, false);
        // 3.0 s is as near 2 s as 4 s (the earlier wins), 5.2 s is nearest 6 s, 9.96 s 10 s.
        let stem = name.trim_end_matches(".mp4");
        assert_eq!(
            pieces,
            (1..=4)
                .map(|scene| (
                    out.join(format!("{stem}-Scene-{scene:03}.mp4")),
                    scene,
                    scene
                ))
                .collect::<Vec<_>>()
        );
        let shown: Vec<Vec<u32>> = pieces
            .iter()
            .map(|(file, ..)| frame_numbers(file))
            .collect();
        let ranges = [0..50, 50..150, 150..250, 250..300];
        for (frames, range) in shown.iter().zip(ranges) {
            assert_eq!(frames, &range.collect::<Vec<u32>>(), "{name}");
        }
    }
}

#[test]
fn split_exact_holds_each_scene_frame_for_frame() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["counter.mp4", "delayed.mp4"] {
        let video = common::video(name);
        let analysis = counter_analysis(&video, &[0.0, 3.0, 5.2, 9.96], dir.path());
        let out = dir.path().join(format!("exact-{name}"));
        let pieces = split(&video, &analysis, &out, true);
        assert_eq!(pieces.len(), 4);
        // Scenes start at frames 0, 75, 130 and 249.
        let ranges = [0..75, 75..130, 130..249, 249..300];
        for ((file, ..), range) in pieces.iter().zip(ranges) {
            assert_eq!(frame_numbers(file), range.collect::<Vec<u32>>(), "{name}");
            let probed: serde_json::Value = serde_json::from_slice(&ffmpeg_tool(
                "ffprobe",
                &[
                    "-v",
                    "error",
                    "-of",
                    "json",
                    "-show_streams",
                    path_str(file),
                ],
            ))
            .unwrap();
            assert_eq!(probed["streams"][0]["codec_name"], "h264");
        }
    }
}

#[test]
fn split_keeps_the_sound_of_each_piece() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("with-sound.mkv");
    ffmpeg_tool(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "6",
            "-g",
            "25",
            "-c:v",
            "libx264",
            "-c:a",
            "libopus",
            path_str(&video),
        ],
    );
    let analysis = counter_analysis(&video, &[0.0, 2.0, 4.0], dir.path());
    for exact in [false, true] {
        let out = dir.path().join(format!("pieces-{exact}"));
        let pieces = split(&video, &analysis, &out, exact);
        assert_eq!(pieces.len(), 3);
        let mut total = 0.0;
        for (file, ..) in &pieces {
            assert_eq!(file.extension().unwrap(), "mkv");
            let probed: serde_json::Value = serde_json::from_slice(&ffmpeg_tool(
                "ffprobe",
                &[
                    "-v",
                    "error",
                    "-of",
                    "json",
                    "-show_streams",
                    "-show_format",
                    path_str(file),
                ],
            ))
            .unwrap();
            let kinds: Vec<&str> = probed["streams"]
                .as_array()
                .unwrap()
                .iter()
                .map(|stream| stream["codec_type"].as_str().unwrap())
                .collect();
            assert_eq!(kinds, ["video", "audio"]);
            let duration: f64 = probed["format"]["duration"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                (duration - 2.0).abs() < 0.1,
                "{}: {duration} s",
                file.display()
            );
            total += duration;
            // The whole piece decodes cleanly.
            ffmpeg_tool(
                "ffmpeg",
                &[
                    "-v",
                    "error",
                    "-xerror",
                    "-i",
                    path_str(file),
                    "-f",
                    "null",
                    "-",
                ],
            );
        }
        assert!((total - 6.0).abs() < 0.15, "{total} s");
    }
}

#[test]
fn split_refuses_another_video_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let analysis = counter_analysis(&common::video("counter.mp4"), &[0.0, 6.0], dir.path());
    let other = common::video("vfr.mp4");
    let run = keyscribe(&[
        "split",
        path_str(&other),
        path_str(&analysis),
        "--out",
        path_str(dir.path()),
    ]);
    assert_eq!(run.status.code(), Some(1));
    let message = stderr(&run);
    assert!(
        message.contains("vfr.mp4") && message.contains("not the analysed video"),
        "{message}"
    );
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
}

#[test]
fn images_are_the_frames_on_screen_at_native_size() {
    let dir = tempfile::tempdir().unwrap();
    let video = common::video("counter.mp4");
    let analysis_path = counter_analysis(&video, &[0.0, 1.0, 2.02, 7.99, 11.9], dir.path());
    let mut analysis = Analysis::load(&analysis_path).unwrap();
    // Keyframes at the scene starts: frames 0, 25, 50 (2.02 s shows frame 50), 199, 297.
    for keyframe in &mut analysis.keyframes {
        keyframe.time_s = keyframe.scene.start_s;
    }
    analysis.save(&analysis_path).unwrap();
    for (kind, extension) in [("png", "png"), ("jpeg", "jpg")] {
        let out = dir.path().join(kind);
        let run = keyscribe(&[
            "export",
            path_str(&analysis_path),
            "--format",
            "images",
            "-o",
            path_str(&out),
            "--image-type",
            kind,
        ]);
        assert!(run.status.success(), "{}", stderr(&run));
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        let listed = index["keyframes"].as_array().unwrap();
        assert_eq!(listed.len(), 5);
        let mut names = Vec::new();
        for (entry, expected) in listed.iter().zip([0, 25, 50, 199, 297]) {
            let file = entry["file"].as_str().unwrap();
            assert!(file.ends_with(&format!(".{extension}")), "{file}");
            let picture = image::open(out.join(file)).unwrap().to_rgb8();
            assert_eq!(picture.dimensions(), (320, 240), "native size");
            assert_eq!(common::read_counter(&picture), expected, "{file}");
            names.push(file.to_string());
        }
        assert_eq!(names[1], format!("keyframe-002-00-00-01.000.{extension}"));
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names, "names sort in time order");
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            6,
            "pictures and index.json only"
        );
    }
}

#[test]
fn export_infers_the_new_formats_and_explains_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let analysis = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/scenes.analysis.json");
    for file in [
        "cut.edl",
        "cut.otio",
        "cut.fcpxml",
        "cut.ffmeta",
        "cut.scenes.csv",
    ] {
        let target = dir.path().join(file);
        let run = keyscribe(&["export", path_str(&analysis), "-o", path_str(&target)]);
        assert!(run.status.success(), "{file}: {}", stderr(&run));
        assert!(std::fs::metadata(&target).unwrap().len() > 100, "{file}");
    }
    // The timelines name the video by absolute path when it is found.
    let otio = std::fs::read_to_string(dir.path().join("cut.otio")).unwrap();
    let sample = std::path::absolute(common::scenes_sample()).unwrap();
    assert!(
        otio.contains(&format!("\"target_url\": \"file://{}\"", sample.display())),
        "{otio}"
    );

    let run = keyscribe(&["export", path_str(&analysis), "--format", "images"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(stderr(&run).contains("--output DIR"), "{}", stderr(&run));

    let mut no_rate = golden("scenes");
    no_rate.video.fps = 0.0;
    let broken = dir.path().join("no-rate.json");
    no_rate.save(&broken).unwrap();
    let run = keyscribe(&["export", path_str(&broken), "--format", "edl"]);
    assert_eq!(run.status.code(), Some(1));
    let message = stderr(&run);
    assert!(
        message.contains("no-rate.json") && message.contains("frame rate"),
        "{message}"
    );
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
}
