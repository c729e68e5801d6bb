//! `keyscribe watch` against live sources made by the FFmpeg CLI: a TCP server sending the
//! committed sample in real time (`ffmpeg -re ... -f mpegts tcp://...?listen=1`), a server
//! that stops and starts again, and MPEG-TS on stdin, with the tiny fixture models.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{arg, scenes_sample, text, tiny_captioner, tiny_embedder};
use keyscribe::analysis::Analysis;

/// A keyframe's line arrives within the finality of its scene (4 s with the default
/// selection), plus the time another change under way may hold it back
/// (`max_transition_s + persistence_s`, 3 s), plus captioning and a loaded machine's slack.
const LATENCY_BOUND_S: f64 = 4.0 + 3.0 + 3.0;

/// A running `keyscribe watch` whose stdout lines are collected as they arrive.
struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<(Duration, Value)>>>,
    reader: JoinHandle<()>,
    started: Instant,
}

impl Watch {
    /// Starts `keyscribe watch SOURCE` in `dir` with the tiny models, segments
    /// `dir/live-NNN.analysis.json` and `extra` flags; stdin is `stdin`.
    fn start(dir: &Path, source: &str, extra: &[&str], stdin: Stdio) -> Watch {
        let mut child = common::keyscribe()
            .args(["watch", source, "--embedder", arg(&tiny_embedder())])
            .args(["--captioner", arg(&tiny_captioner()), "-o", "live"])
            .args(extra)
            .current_dir(dir)
            .env("KEYSCRIBE_CACHE_DIR", dir.join("cache"))
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HOME", dir.join("hf-home"))
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("keyscribe runs");
        let started = Instant::now();
        let stdout = child.stdout.take().expect("stdout is piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.expect("stdout is text");
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"));
                collected.lock().unwrap().push((started.elapsed(), value));
            }
        });
        Watch {
            child,
            lines,
            reader,
            started,
        }
    }

    /// Waits until `done` holds for the lines so far, failing after `timeout`.
    fn wait_for(&mut self, timeout: Duration, done: impl Fn(&[(Duration, Value)]) -> bool) {
        while !done(&self.lines.lock().unwrap()) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("keyscribe ended ({status}) before the awaited lines");
            }
            assert!(
                self.started.elapsed() < timeout,
                "timed out waiting for lines"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT, as Ctrl-C does.
    fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The process's resident memory now, in MiB (0 once it has ended).
    fn resident_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |kib| kib / 1024.0)
    }

    /// Waits for the end (at most `timeout`); returns the exit status, the lines and stderr.
    fn finish(mut self, timeout: Duration) -> (ExitStatus, Vec<(Duration, Value)>, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("keyscribe watch did not end");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.reader.join().expect("the stdout reader finishes");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        (status, lines, stderr)
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ffmpeg -re` serving `seconds` of the sample from `from` s as MPEG-TS to the first
/// client of `tcp://127.0.0.1:PORT`.
fn serve(port: u16, from: f64, seconds: Option<f64>) -> Child {
    let mut command = Command::new("ffmpeg");
    command.args(["-loglevel", "error", "-re", "-ss", &from.to_string()]);
    if let Some(seconds) = seconds {
        command.args(["-t", &seconds.to_string()]);
    }
    command
        .arg("-i")
        .arg(scenes_sample())
        .args(["-c", "copy", "-f", "mpegts"])
        .arg(format!("tcp://127.0.0.1:{port}?listen=1"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the ffmpeg CLI runs")
}

/// The sample as MPEG-TS in `dir`.
fn sample_ts(dir: &Path) -> PathBuf {
    let ts = dir.join("scenes.ts");
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(scenes_sample())
        .args(["-c", "copy", "-f", "mpegts"])
        .arg(&ts)
        .status()
        .expect("the ffmpeg CLI runs");
    assert!(status.success());
    ts
}

fn keyframes(lines: &[(Duration, Value)]) -> Vec<&Value> {
    lines
        .iter()
        .map(|(_, line)| line)
        .filter(|line| line.get("event").is_none())
        .collect()
}

/// Every keyframe line is well formed, and they come in order.
fn check_keyframe_lines(keyframes: &[&Value]) {
    let mut previous: Option<(f64, f64)> = None;
    for (index, line) in keyframes.iter().enumerate() {
        assert_eq!(line["index"], index, "{line}");
        let time = line["time_s"].as_f64().unwrap();
        let start = line["scene_start_s"].as_f64().unwrap();
        assert!(start <= time, "{line}");
        if let Some((previous_time, previous_start)) = previous {
            assert!(time > previous_time && start > previous_start, "{line}");
        }
        previous = Some((time, start));
        let wall_clock = line["wall_clock"].as_str().unwrap();
        assert!(
            wall_clock.len() == 24 && wall_clock.ends_with('Z') && &wall_clock[10..11] == "T",
            "{wall_clock}"
        );
        assert_eq!(line["timecode"].as_str().unwrap().len(), 12);
        assert!(line["change"].as_f64().is_some());
        assert!(line["caption"].is_string() || line["caption_dropped"] == true);
    }
}

/// The segment documents in `dir`, in order: each complete (it loads, its sidecar matches)
/// and nothing half-written beside them.
fn segments(dir: &Path) -> Vec<Analysis> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        !names.iter().any(|name| name.ends_with(".partial")),
        "{names:?}"
    );
    let documents: Vec<&String> = names
        .iter()
        .filter(|name| name.starts_with("live-") && name.ends_with(".analysis.json"))
        .collect();
    documents
        .iter()
        .enumerate()
        .map(|(index, name)| {
            assert_eq!(**name, format!("live-{index:03}.analysis.json"));
            let path = dir.join(name);
            let analysis = Analysis::load(&path).unwrap();
            let frames = analysis.load_frames(&path).unwrap();
            assert_eq!(
                frames.time_s.len(),
                analysis.embeddings.as_ref().unwrap().frames
            );
            assert_eq!(analysis.live.as_ref().unwrap().segment, index);
            analysis
        })
        .collect()
}

#[test]
fn scene_changes_arrive_as_json_lines_in_order_within_the_finality() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // 16 s of the sample from 14 s: the cuts at 17.55 (a dissolve), 22 and 28 s.
    let mut server = serve(port, 14.0, None);
    let source = format!("tcp://127.0.0.1:{port}");
    let watch = Watch::start(
        dir.path(),
        &source,
        &["--no-reconnect", "--segment-s", "10", "--stall-s", "5"],
        Stdio::null(),
    );
    let (status, lines, stderr) = watch.finish(Duration::from_secs(40));
    let _ = server.wait();
    assert!(status.success(), "{status}\n{stderr}");
    let keyframes = keyframes(&lines);
    assert!(keyframes.len() >= 3, "{lines:?}\n{stderr}");
    check_keyframe_lines(&keyframes);
    let latencies: Vec<f64> = keyframes
        .iter()
        .map(|line| line["latency_s"].as_f64().unwrap())
        .collect();
    eprintln!("latency from a scene's first frame to its line: {latencies:?} s");
    // The first scene starts with the stream; later ones at the changes.
    for (line, latency) in keyframes[1..].iter().zip(&latencies[1..]) {
        assert!(
            *latency > 0.0 && *latency < LATENCY_BOUND_S,
            "{line}: {latency}"
        );
    }
    // The lines come as the stream plays, not all at its end.
    let first_told = lines[0].0.as_secs_f64();
    let last_told = lines.last().unwrap().0.as_secs_f64();
    assert!(last_told - first_told > 4.0, "{lines:?}");

    let segments = segments(dir.path());
    assert!(segments.len() >= 2, "{segments:?}");
    let recorded: usize = segments.iter().map(|s| s.keyframes.len()).sum();
    assert_eq!(recorded, keyframes.len());
    for segment in &segments {
        let live = segment.live.as_ref().unwrap();
        for keyframe in &segment.keyframes {
            assert!((live.start_s..live.end_s + 1e-6).contains(&keyframe.time_s));
            assert!(keyframe.caption.is_some());
        }
    }
    // A recorded session works with the other commands.
    let export = common::keyscribe()
        .args([
            "export",
            "live-001.analysis.json",
            "--format",
            "vtt",
            "-o",
            "-",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    common::assert_ok(&export);
    assert!(text(&export.stdout).starts_with("WEBVTT"));
    let search = common::keyscribe()
        .args([
            "search",
            "live-000.analysis.json",
            "a test pattern",
            "--json",
        ])
        .args(["--embedder", arg(&tiny_embedder())])
        .current_dir(dir.path())
        .env("KEYSCRIBE_CACHE_DIR", dir.path().join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    common::assert_ok(&search);
    let report = common::keyscribe()
        .args(["report", "live-000.analysis.json", "-o", "report.html"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    common::assert_ok(&report);
    assert!(text(&report.stderr).contains("a live stream"));
}

#[test]
fn a_server_that_stops_and_starts_again_gives_a_gap_and_ctrl_c_leaves_complete_segments() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // 6 s, a pause, then the sample again from 20 s.
    let restarted = std::thread::spawn(move || {
        let _ = serve(port, 14.0, Some(6.0)).wait();
        std::thread::sleep(Duration::from_secs(1));
        serve(port, 20.0, None)
    });
    let source = format!("tcp://127.0.0.1:{port}");
    let mut watch = Watch::start(
        dir.path(),
        &source,
        &["--segment-s", "5", "--stall-s", "3", "--vtt", "live.vtt"],
        Stdio::null(),
    );
    let is_gap = |line: &Value| line["event"] == "gap";
    watch.wait_for(Duration::from_secs(25), |lines| {
        lines
            .iter()
            .position(|(_, line)| is_gap(line))
            .is_some_and(|gap| lines[gap..].iter().any(|(_, line)| !is_gap(line)))
    });
    watch.interrupt();
    let (status, lines, stderr) = watch.finish(Duration::from_secs(20));
    let mut server = restarted.join().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(status.success(), "{status}\n{stderr}");
    assert!(stderr.contains("source lost"), "{stderr}");
    let gap = lines
        .iter()
        .map(|(_, line)| line)
        .find(|line| is_gap(line))
        .unwrap();
    let (gap_start, gap_end) = (
        gap["start_s"].as_f64().unwrap(),
        gap["end_s"].as_f64().unwrap(),
    );
    assert!(gap_end > gap_start + 0.5, "{gap}");
    let keyframes = keyframes(&lines);
    check_keyframe_lines(&keyframes);
    // Times go on on the wall clock after the gap.
    assert!(keyframes
        .iter()
        .any(|line| line["scene_start_s"].as_f64().unwrap() > gap_end));

    let segments = segments(dir.path());
    let recorded: usize = segments.iter().map(|s| s.keyframes.len()).sum();
    assert_eq!(recorded, keyframes.len());
    let gaps: Vec<_> = segments.iter().flat_map(|s| &s.decode_gaps).collect();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let vtt = std::fs::read_to_string(dir.path().join("live.vtt")).unwrap();
    assert!(vtt.starts_with("WEBVTT\n"));
    assert_eq!(vtt.matches(" --> ").count(), keyframes.len(), "{vtt}");
}

#[test]
fn a_stream_on_stdin_is_watched_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let ts = sample_ts(dir.path());
    let watch = Watch::start(
        dir.path(),
        "-",
        &["--segment-s", "10"],
        Stdio::from(std::fs::File::open(&ts).unwrap()),
    );
    let (status, lines, stderr) = watch.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    let keyframes = keyframes(&lines);
    assert!(keyframes.len() >= 3, "{lines:?}");
    check_keyframe_lines(&keyframes);
    let segments = segments(dir.path());
    assert_eq!(segments.len(), 3);
    assert_eq!(segments[0].video.path, "<stdin>");
}

/// The scene sample three times over at 160x90 as MPEG-TS: small pictures decode many times
/// faster than the embedder takes them in, whatever the machine.
fn small_long_ts(dir: &Path) -> PathBuf {
    let ts = dir.join("small.ts");
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-stream_loop", "2", "-i"])
        .arg(scenes_sample())
        .args([
            "-vf",
            "scale=160:90",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .args(["-an", "-f", "mpegts"])
        .arg(&ts)
        .status()
        .expect("the ffmpeg CLI runs");
    assert!(status.success());
    ts
}

#[test]
fn a_burst_from_a_stalled_source_drops_frames_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let ts = std::fs::read(small_long_ts(dir.path())).unwrap();
    let mut watch = Watch::start(
        dir.path(),
        "-",
        &["--sample-fps", "all", "--segment-s", "10"],
        Stdio::piped(),
    );
    let mut stdin = watch.child.stdin.take().unwrap();
    // A little of the stream, a stall shorter than --stall-s, then the rest at once: far
    // more frames than the embedder takes in real time.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&ts[..ts.len() / 8]);
        std::thread::sleep(Duration::from_secs(2));
        let _ = stdin.write_all(&ts[ts.len() / 8..]);
    });
    let mut peak_mib: f64 = 0.0;
    while watch.child.try_wait().unwrap().is_none() {
        peak_mib = peak_mib.max(watch.resident_mib());
        assert!(watch.started.elapsed() < Duration::from_secs(40));
        std::thread::sleep(Duration::from_millis(50));
    }
    feeder.join().unwrap();
    let (status, lines, stderr) = watch.finish(Duration::from_secs(5));
    assert!(status.success(), "{status}\n{stderr}");
    let keyframes = keyframes(&lines);
    check_keyframe_lines(&keyframes);
    let dropped = keyframes.last().unwrap()["dropped_frames"]
        .as_u64()
        .unwrap();
    let segments = segments(dir.path());
    let recorded: u64 = segments
        .iter()
        .map(|s| s.live.as_ref().unwrap().dropped_frames)
        .sum();
    assert!(recorded > 0 && recorded >= dropped, "{recorded} {dropped}");
    assert!(stderr.contains("frames dropped"), "{stderr}");
    eprintln!("{recorded} frames dropped; peak resident memory {peak_mib:.0} MiB");
    assert!(peak_mib < 400.0, "{peak_mib} MiB");
}

#[test]
fn a_captioner_slower_than_the_scenes_leaves_counted_keyframes_uncaptioned() {
    let dir = tempfile::tempdir().unwrap();
    let ts = sample_ts(dir.path());
    let watch = Watch::start(
        dir.path(),
        "-",
        &[
            "--caption-interval-s",
            "2",
            "--set",
            "select.sensitivity=1.5",
            "--set",
            "select.min_scene_s=1",
        ],
        Stdio::from(std::fs::File::open(&ts).unwrap()),
    );
    let (status, lines, stderr) = watch.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{stderr}");
    let keyframes = keyframes(&lines);
    check_keyframe_lines(&keyframes);
    let dropped: Vec<&&Value> = keyframes
        .iter()
        .filter(|line| line["caption_dropped"] == true)
        .collect();
    assert!(!dropped.is_empty(), "{keyframes:?}");
    assert!(dropped.iter().all(|line| line["caption"].is_null()));
    assert_eq!(
        keyframes.last().unwrap()["dropped_captions"]
            .as_u64()
            .unwrap(),
        dropped.len() as u64
    );
    let segments = segments(dir.path());
    let recorded: u64 = segments
        .iter()
        .map(|s| s.live.as_ref().unwrap().dropped_captions)
        .sum();
    assert_eq!(recorded, dropped.len() as u64);
    assert!(stderr.contains("without a caption"), "{stderr}");
}

#[test]
fn a_file_or_a_bad_source_is_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let sample = scenes_sample();
    for (source, words) in [
        (arg(&sample), "keyscribe run"),
        ("no-such-camera", "not a URL"),
    ] {
        let output = common::keyscribe_in(dir.path(), &["watch", source], None);
        assert_eq!(output.status.code(), Some(1));
        let stderr = text(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(source) && stderr.contains(words),
            "{stderr}"
        );
    }
    for (flags, words) in [
        (["--vtt", "-"], "stdout carries the JSON lines"),
        (["--segment-s", "0"], "--segment-s 0"),
    ] {
        let mut args = vec!["watch", "-"];
        args.extend(flags);
        let output = common::keyscribe_in(dir.path(), &args, None);
        assert_eq!(output.status.code(), Some(1));
        let stderr = text(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(words), "{stderr}");
    }
}
