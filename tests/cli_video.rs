//! The `probe` and `frames` commands as a user runs them.

#[path = "common/bad_inputs.rs"]
mod bad_inputs;
mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{read_counter, video};

fn keyscribe(args: &[&str]) -> Output {
    common::keyscribe()
        .args(args)
        .output()
        .expect("the keyscribe binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn probe_json_is_one_object_on_stdout() {
    let path = video("rotated.mp4");
    let output = keyscribe(&["probe", "--json", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(info["rotation_deg"], 90);
    assert_eq!(info["width"], 240);
    assert_eq!(info["height"], 320);
    assert_eq!(info["codec"], "h264");
    assert_eq!(info["duration_s"], 12.0);
}

#[test]
fn frames_writes_jpegs_named_by_timecode_and_an_index() {
    let out = tempfile::tempdir().unwrap();
    let path = video("delayed.mp4");
    let output = keyscribe(&[
        "frames",
        path.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--sample-fps",
        "1",
        "--size",
        "160x120",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("index.json")).unwrap()).unwrap();
    let frames = index["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 12);
    for (k, entry) in frames.iter().enumerate() {
        let time = entry["time_s"].as_f64().unwrap();
        assert!((time - k as f64).abs() < 1e-6);
        let file = entry["file"].as_str().unwrap();
        assert_eq!(file, format!("00-00-{k:02}.000.jpg"));
        assert_eq!(entry["timecode"], format!("00:00:{k:02}.000"));
        assert_eq!(entry["frame"], k * 25);
        let picture = image::open(out.path().join(file)).unwrap().to_rgb8();
        assert_eq!(picture.dimensions(), (160, 120));
        assert_eq!(read_counter(&picture), k as u32 * 25);
    }
    let files = std::fs::read_dir(out.path()).unwrap().count();
    assert_eq!(files, 13, "12 frames and index.json, nothing else");
}

#[test]
fn bad_inputs_fail_with_one_line_and_leave_nothing() {
    let dir = common::test_videos();
    for name in [
        "missing.mp4",
        "notes.txt",
        "empty.mp4",
        "audio-only.m4a",
        "",
    ] {
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("frames");
        let path = dir.join(name);
        for args in [
            vec!["probe", path.to_str().unwrap()],
            vec![
                "frames",
                path.to_str().unwrap(),
                "--out",
                target.to_str().unwrap(),
            ],
        ] {
            let output = keyscribe(&args);
            assert_eq!(output.status.code(), Some(1), "{args:?}");
            let stderr = text(&output.stderr);
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.starts_with("keyscribe: error: "), "{stderr}");
            assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
            assert!(output.stdout.is_empty());
            assert!(!target.exists(), "no output for bad input");
        }
    }
}

#[test]
fn unwritable_output_directory_is_named() {
    let out = tempfile::tempdir().unwrap();
    let blocker = out.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let target = blocker.join("frames");
    let path = video("counter.mp4");
    let output = keyscribe(&[
        "frames",
        path.to_str().unwrap(),
        "--out",
        target.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains(target.to_str().unwrap()), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn truncated_video_keeps_frames_and_warns() {
    let out = tempfile::tempdir().unwrap();
    let path = video("truncated.mp4");
    let output = keyscribe(&[
        "frames",
        path.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("truncated"),
        "{stderr}"
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("index.json")).unwrap()).unwrap();
    assert!(!index["frames"].as_array().unwrap().is_empty());
    assert!(index["warning"].as_str().unwrap().contains("truncated"));
}

#[test]
fn ctrl_c_stops_cleanly() {
    let out = tempfile::tempdir().unwrap();
    let sample = common::scenes_sample();
    let mut child = common::keyscribe()
        .args([
            "frames",
            sample.to_str().unwrap(),
            "--sample-fps",
            "all",
            "--out",
        ])
        .arg(out.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the run is under way: the first frame has been written.
    let written = |dir: &Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .any(|entry| entry.file_name().to_string_lossy().ends_with(".jpg"))
    };
    while !written(out.path()) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it was interrupted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("interrupted"));
    assert!(!out.path().join("index.json").exists());
    let leftovers = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".partial"))
        .count();
    assert_eq!(leftovers, 0, "no half-written files");
}

/// Runs keyscribe with arguments that need not be UTF-8, with an empty cache of its own.
fn keyscribe_os<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    common::keyscribe()
        .args(args)
        .env("KEYSCRIBE_CACHE_DIR", cache.path())
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", cache.path().join("hf-home"))
        .output()
        .expect("the keyscribe binary runs")
}

/// Runs keyscribe with its address space capped at `limit_mb` (as `ulimit -v` does): an
/// allocation past the cap aborts the process instead of exhausting the machine.
fn keyscribe_in_memory(limit_mb: u64, args: &[&OsStr]) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -v {} && exec \"$0\" \"$@\"",
            limit_mb * 1024
        ))
        .arg(env!("CARGO_BIN_EXE_keyscribe"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("bash runs keyscribe")
}

/// Checks a failure: exit 1, one line on stderr naming `input` and holding `words`.
fn assert_one_line_error(output: &Output, input: &Path, words: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("keyscribe: error: "), "{stderr}");
    assert!(stderr.contains(&*input.to_string_lossy()), "{stderr}");
    assert!(stderr.contains(words), "{stderr}");
}

fn embedder() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mobileclip-s0-tiny")
}

#[test]
fn a_file_name_that_is_not_utf8_works() {
    let dir = tempfile::tempdir().unwrap();
    let path = bad_inputs::non_utf8_path(dir.path(), "mp4");
    std::fs::copy(video("counter.mp4"), &path).unwrap();
    let output = keyscribe_os(&[OsStr::new("probe"), OsStr::new("--json"), path.as_os_str()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(info["path"], path.to_string_lossy().as_ref());
    assert_eq!(info["duration_s"], 12.0);

    let out = dir.path().join("frames");
    let output = keyscribe_os(&[
        OsStr::new("frames"),
        path.as_os_str(),
        OsStr::new("--out"),
        out.as_os_str(),
        OsStr::new("--sample-fps"),
        OsStr::new("1"),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["frames"].as_array().unwrap().len(), 12);

    // `index` finds and analyses it, and `keyframes` reads it (a range keeps this short).
    let pipeline = dir.path().join("keyframes-only.toml");
    std::fs::write(&pipeline, "[caption]\nenabled = false\n").unwrap();
    let output = keyscribe_os(&[
        OsStr::new("index"),
        dir.path().as_os_str(),
        OsStr::new("--embedder"),
        embedder().as_os_str(),
        OsStr::new("--pipeline"),
        pipeline.as_os_str(),
        OsStr::new("--quiet"),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let document = dir.path().join("range.json");
    let output = keyscribe_os(&[
        OsStr::new("keyframes"),
        path.as_os_str(),
        OsStr::new("--embedder"),
        embedder().as_os_str(),
        OsStr::new("--start"),
        OsStr::new("4"),
        OsStr::new("--end"),
        OsStr::new("00:08"),
        OsStr::new("-o"),
        document.as_os_str(),
        OsStr::new("--quiet"),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let analysis = keyscribe::analysis::Analysis::load(&document).unwrap();
    assert_eq!(analysis.pipeline["decode"]["start_s"], 4.0);
    assert_eq!(analysis.pipeline["decode"]["end_s"], 8.0);
    assert!(!analysis.keyframes.is_empty());
    for keyframe in &analysis.keyframes {
        assert!((4.0..8.0).contains(&keyframe.time_s), "{keyframe:?}");
        assert!(keyframe.scene.start_s >= 4.0 && keyframe.scene.end_s <= 8.0);
    }
    let frames = analysis.load_frames(&document).unwrap();
    // 2 samples per second from 4 s to 8 s.
    assert_eq!(frames.time_s.len(), 8, "{:?}", frames.time_s);
    assert!(frames.time_s.iter().all(|t| (4.0..8.0).contains(t)));
}

#[test]
fn frames_takes_a_range_with_times_from_the_start_of_the_file() {
    let out = tempfile::tempdir().unwrap();
    let path = video("counter.mp4");
    let output = keyscribe(&[
        "frames",
        path.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--start",
        "00:05",
        "--end",
        "7",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("index.json")).unwrap()).unwrap();
    let files: Vec<&str> = index["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|frame| frame["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "00-00-05.000.jpg",
            "00-00-05.480.jpg",
            "00-00-06.000.jpg",
            "00-00-06.480.jpg"
        ]
    );
    let picture = image::open(out.path().join(files[1])).unwrap().to_rgb8();
    assert_eq!(read_counter(&picture), 137);

    let target = out.path().join("none");
    for (start, end) in [("6", "5"), ("30", "40")] {
        let output = keyscribe(&[
            "frames",
            path.to_str().unwrap(),
            "--out",
            target.to_str().unwrap(),
            "--start",
            start,
            "--end",
            end,
        ]);
        assert_one_line_error(&output, &path, "range");
        assert!(!target.exists());
    }
    let output = keyscribe(&[
        "frames",
        path.to_str().unwrap(),
        "--out",
        "x",
        "--start",
        "1m",
    ]);
    assert_eq!(output.status.code(), Some(2), "bad usage");
    assert!(text(&output.stderr).contains("bad time `1m`"));
}

#[test]
fn a_corrupt_middle_warns_and_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.mp4");
    bad_inputs::corrupt_mp4_media(&common::scenes_sample(), &corrupt, 100_000);
    let out = dir.path().join("frames");
    let output = keyscribe(&[
        "frames",
        corrupt.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    let warning = stderr
        .lines()
        .find(|line| line.starts_with("warning: "))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(warning.contains(corrupt.to_str().unwrap()), "{warning}");
    assert!(warning.contains("could not be decoded"), "{warning}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let gaps = index["decode_gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let (start, end) = (
        gaps[0]["start_s"].as_f64().unwrap(),
        gaps[0]["end_s"].as_f64().unwrap(),
    );
    assert!(10.0 < start && start < end && end < 20.0, "{gaps:?}");
    assert!(warning.contains(&keyscribe::time::MediaTime::from_seconds(start).timecode()));

    // The analysis document records it too.
    let document = dir.path().join("corrupt.json");
    let output = keyscribe_os(&[
        OsStr::new("keyframes"),
        corrupt.as_os_str(),
        OsStr::new("--embedder"),
        embedder().as_os_str(),
        OsStr::new("--start"),
        OsStr::new("10"),
        OsStr::new("--end"),
        OsStr::new("20"),
        OsStr::new("-o"),
        document.as_os_str(),
        OsStr::new("--quiet"),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("could not be decoded"));
    let analysis = keyscribe::analysis::Analysis::load(&document).unwrap();
    assert_eq!(analysis.decode_gaps.len(), 1);
    assert_eq!(analysis.decode_gaps[0].start_s, start);
}

#[test]
fn a_local_playlist_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let playlist = bad_inputs::hls_playlist(dir.path(), "clip.mp4", &video("counter.mp4"));
    let out = dir.path().join("frames");
    for args in [
        vec!["probe", playlist.to_str().unwrap()],
        vec![
            "frames",
            playlist.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    ] {
        let output = keyscribe(&args);
        assert_one_line_error(&output, &playlist, "HLS playlist");
        assert!(!out.exists());
    }
}

#[test]
fn a_video_too_narrow_is_one_line_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let tall = bad_inputs::video_of_size(dir.path(), 2, 16384);
    let out = dir.path().join("frames");
    for size in ["native", "256x256"] {
        let output = keyscribe(&[
            "frames",
            tall.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--size",
            size,
        ]);
        assert_one_line_error(&output, &tall, "2x16384");
    }
}

#[test]
fn images_claiming_huge_sizes_are_refused_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    // A real 1x60000 picture: a few hundred bytes of PNG, 22 GB once centre-cropped.
    let thin = dir.path().join("thin.png");
    let encoder = image::codecs::png::PngEncoder::new_with_quality(
        std::fs::File::create(&thin).unwrap(),
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::NoFilter,
    );
    image::RgbImage::new(1, 60000)
        .write_with_encoder(encoder)
        .unwrap();
    assert!(std::fs::metadata(&thin).unwrap().len() < 1000);
    // A header claiming 20000x20000, with no pixels behind it.
    let huge = dir.path().join("huge.png");
    std::fs::write(&huge, bad_inputs::png_claiming(20000, 20000)).unwrap();
    for (image, words) in [(&thin, "1x60000"), (&huge, "400 megapixels")] {
        let output = keyscribe_in_memory(
            2048,
            &[
                OsStr::new("embed"),
                OsStr::new("--embedder"),
                embedder().as_os_str(),
                image.as_os_str(),
            ],
        );
        assert_one_line_error(&output, image, words);
        let output = keyscribe_in_memory(2048, &[OsStr::new("describe"), image.as_os_str()]);
        assert_one_line_error(&output, image, words);
    }
}
