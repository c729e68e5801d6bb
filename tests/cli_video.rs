//! The `probe` and `frames` commands as a user runs them.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{read_counter, video};

fn keyscribe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyscribe"))
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyscribe"))
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
