//! `keyscribe index` on folders nobody vouches for (link loops, FIFOs, devices, broken links,
//! colliding and non-UTF-8 names, Ctrl-C while a huge file is read), and `search` over the
//! library it makes: ranges that do not depend on `--top`, JSON times as `export` gives
//! them, and plain output that cannot drive the terminal. Runs the binary with the tiny
//! fixture embedder on 2-second videos made with the ffmpeg CLI.

mod common;

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use keyscribe::analysis::Analysis;
use keyscribe::time::MediaTime;

/// A run still going after this long has hung (a tiny video takes a second or two).
const HANG_LIMIT: Duration = Duration::from_secs(240);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn embedder() -> PathBuf {
    root().join("tests/fixtures/mobileclip-s0-tiny")
}

/// What a finished run printed.
struct Run {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs keyscribe in `dir` with a cache of its own and no network; a run that outlives
/// [`HANG_LIMIT`] is killed and fails the test.
fn keyscribe<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Run {
    run_keyscribe(dir, args, None)
}

/// As [`keyscribe`], sending SIGINT (Ctrl-C) `interrupt_after` the start when given.
fn run_keyscribe<S: AsRef<OsStr>>(
    dir: &Path,
    args: &[S],
    interrupt_after: Option<Duration>,
) -> Run {
    let mut child = common::keyscribe()
        .args(args)
        .current_dir(dir)
        .env("KEYSCRIBE_CACHE_DIR", dir.join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.join("hf-home"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyscribe runs");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let mut interrupt_at = interrupt_after;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if interrupt_at.is_some_and(|after| started.elapsed() >= after) {
            // SAFETY: signals a child process of ours that has not been waited for.
            assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
            interrupt_at = None;
        }
        if started.elapsed() > HANG_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keyscribe hung: still running after {HANG_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        status,
        stdout: stdout.join().unwrap(),
        stderr: String::from_utf8_lossy(&stderr.join().unwrap()).into_owned(),
    }
}

/// A 2-second 64x48 H.264 video of an FFmpeg test `source` (`testsrc`, `smptebars`, ...).
fn make_video(path: &Path, source: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", &format!("{source}=s=64x48:r=10:d=2")])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .arg(path)
        .status()
        .expect("the ffmpeg CLI runs");
    assert!(status.success(), "ffmpeg made {}", path.display());
}

/// A work folder holding `videos/` and a pipeline without captions (`p.toml`).
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("videos")).unwrap();
    std::fs::write(dir.path().join("p.toml"), "[caption]\nenabled = false\n").unwrap();
    dir
}

fn index(dir: &Path) -> Run {
    keyscribe(
        dir,
        &[
            OsStr::new("index"),
            OsStr::new("videos"),
            OsStr::new("--pipeline"),
            OsStr::new("p.toml"),
            OsStr::new("--embedder"),
            embedder().as_os_str(),
            OsStr::new("--quiet"),
        ],
    )
}

fn search(dir: &Path, query: &str, top: usize, json: bool) -> Run {
    let top = top.to_string();
    let embedder = embedder();
    let mut args = vec![
        OsStr::new("search"),
        OsStr::new("videos"),
        OsStr::new(query),
        OsStr::new("--pipeline"),
        OsStr::new("p.toml"),
        OsStr::new("--embedder"),
        embedder.as_os_str(),
        OsStr::new("--top"),
        OsStr::new(&top),
    ];
    if json {
        args.push(OsStr::new("--json"));
    }
    let run = keyscribe(dir, &args);
    assert!(run.status.success(), "search: {}", run.stderr);
    run
}

fn search_json(dir: &Path, query: &str, top: usize) -> Vec<serde_json::Value> {
    serde_json::from_slice(&search(dir, query, top, true).stdout).unwrap()
}

/// The analysis documents in the library of `dir/videos`, sorted.
fn documents(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("videos/keyscribe-library"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.as_os_str().as_bytes().ends_with(b".analysis.json"))
        .collect();
    found.sort();
    found
}

/// The video paths the library's documents record, sorted.
fn analysed_videos(dir: &Path) -> Vec<String> {
    let mut videos: Vec<String> = documents(dir)
        .iter()
        .map(|document| Analysis::load(document).unwrap().video.path)
        .collect();
    videos.sort();
    videos
}

fn assert_ok(run: &Run) {
    assert!(
        run.status.success(),
        "exit {:?}: {}",
        run.status,
        run.stderr
    );
}

#[test]
fn link_loops_and_links_out_are_not_followed_and_each_video_is_analysed_once() {
    let dir = workspace();
    let videos = dir.path().join("videos");
    make_video(&videos.join("a.mp4"), "testsrc");
    make_video(&videos.join("sub/b.mp4"), "smptebars");
    make_video(&dir.path().join("elsewhere.mp4"), "rgbtestsrc");
    symlink("..", videos.join("sub/up")).unwrap();
    symlink(".", videos.join("sub/here")).unwrap();
    symlink("/", videos.join("everything")).unwrap();
    symlink("sub/b.mp4", videos.join("again.mp4")).unwrap();
    symlink("../elsewhere.mp4", videos.join("outside.mp4")).unwrap();

    let run = index(dir.path());
    assert_ok(&run);
    assert!(
        run.stderr
            .contains("2 analysed, 0 already analysed, 5 ignored, 0 failed"),
        "{}",
        run.stderr
    );
    let analysed = analysed_videos(dir.path());
    assert_eq!(analysed.len(), 2, "{analysed:?}");
    assert!(analysed[0].ends_with("videos/a.mp4") && analysed[1].ends_with("videos/sub/b.mp4"));
    for (entry, why) in [
        (
            "sub/up",
            "a link to a folder (links to folders are not followed)",
        ),
        (
            "sub/here",
            "a link to a folder (links to folders are not followed)",
        ),
        (
            "everything",
            "a link to a folder (links to folders are not followed)",
        ),
        ("again.mp4", "the same file as videos/sub/b.mp4"),
        ("outside.mp4", "a link out of the folder"),
    ] {
        let line = format!("keyscribe: ignored videos/{entry}: {why}");
        assert!(run.stderr.contains(&line), "{line} in {}", run.stderr);
    }
    // The second run finds the same two, already analysed.
    let again = index(dir.path());
    assert_ok(&again);
    assert!(again.stderr.contains("0 analysed, 2 already analysed"));
}

#[test]
fn fifos_sockets_and_devices_named_like_videos_are_skipped_without_opening_them() {
    let dir = workspace();
    let videos = dir.path().join("videos");
    make_video(&videos.join("good.mp4"), "testsrc");
    let fifo = std::ffi::CString::new(videos.join("pipe.mp4").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let _socket = std::os::unix::net::UnixListener::bind(videos.join("socket.mp4")).unwrap();
    symlink("/dev/zero", videos.join("zero.mp4")).unwrap();

    let run = index(dir.path());
    assert_ok(&run);
    for line in [
        "ignored videos/pipe.mp4: a FIFO, not a regular file",
        "ignored videos/socket.mp4: a socket, not a regular file",
        "ignored videos/zero.mp4: a link to a character device, not to a regular file",
        "1 analysed, 0 already analysed, 3 ignored, 0 failed",
    ] {
        assert!(run.stderr.contains(line), "{line} in {}", run.stderr);
    }
    assert_eq!(analysed_videos(dir.path()).len(), 1);
}

#[test]
fn ctrl_c_stops_the_run_while_a_huge_file_is_read() {
    let dir = workspace();
    // 64 GiB of holes: reading it through takes minutes, so only an interrupted read
    // ends within the limit below.
    let huge = std::fs::File::create(dir.path().join("videos/huge.mp4")).unwrap();
    huge.set_len(64 << 30).unwrap();
    let started = Instant::now();
    let run = run_keyscribe(
        dir.path(),
        &[
            OsStr::new("index"),
            OsStr::new("videos"),
            OsStr::new("--pipeline"),
            OsStr::new("p.toml"),
            OsStr::new("--embedder"),
            embedder().as_os_str(),
            OsStr::new("--quiet"),
        ],
        Some(Duration::from_millis(1500)),
    );
    assert_eq!(run.status.code(), Some(130), "{}", run.stderr);
    assert!(
        run.stderr.contains("keyscribe: interrupted"),
        "{}",
        run.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_broken_link_or_bad_file_is_reported_the_rest_indexed_and_the_exit_code_is_1() {
    let dir = workspace();
    let videos = dir.path().join("videos");
    make_video(&videos.join("good.mp4"), "testsrc");
    symlink("gone.mp4", videos.join("broken.mp4")).unwrap();
    std::fs::write(videos.join("notes.mp4"), "not a video\n").unwrap();

    for (run, summary) in [
        (
            index(dir.path()),
            "1 analysed, 0 already analysed, 0 ignored, 2 failed",
        ),
        (
            index(dir.path()),
            "0 analysed, 1 already analysed, 0 ignored, 2 failed",
        ),
    ] {
        assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
        for line in [
            "keyscribe: failed: videos/broken.mp4: a broken link (its target does not exist)",
            "keyscribe: failed: videos/notes.mp4: not a video FFmpeg can read",
            summary,
            "keyscribe: error: 2 of the folder's entries could not be indexed",
        ] {
            assert!(run.stderr.contains(line), "{line} in {}", run.stderr);
        }
    }
    let hits = search_json(dir.path(), "a test pattern", 5);
    assert!(!hits.is_empty());
    assert!(hits
        .iter()
        .all(|hit| hit["video"].as_str().unwrap().ends_with("videos/good.mp4")));
}

#[test]
fn paths_that_shared_a_library_file_each_get_their_own() {
    let dir = workspace();
    let videos = dir.path().join("videos");
    make_video(&videos.join("x/y.mp4"), "testsrc");
    make_video(&videos.join("x__y.mp4"), "smptebars");

    let run = index(dir.path());
    assert_ok(&run);
    assert!(run.stderr.contains("2 analysed"), "{}", run.stderr);
    assert_eq!(documents(dir.path()).len(), 2);
    let analysed = analysed_videos(dir.path());
    assert!(analysed[0].ends_with("videos/x/y.mp4"), "{analysed:?}");
    assert!(analysed[1].ends_with("videos/x__y.mp4"), "{analysed:?}");
    let mut found: Vec<String> = search_json(dir.path(), "colour bars", 20)
        .iter()
        .map(|hit| hit["video"].as_str().unwrap().to_string())
        .collect();
    found.sort();
    found.dedup();
    assert_eq!(found, analysed);
}

#[test]
fn a_library_named_the_earlier_way_is_adopted_not_analysed_again() {
    let dir = workspace();
    make_video(&dir.path().join("videos/sub/one.mp4"), "testsrc");
    assert_ok(&index(dir.path()));
    // Rename the analysis as the earlier scheme named it: path parts joined with `__`.
    let library = dir.path().join("videos/keyscribe-library");
    let [document] = documents(dir.path()).try_into().unwrap();
    let mut analysis = Analysis::load(&document).unwrap();
    let sidecar = analysis.embeddings_path(&document).unwrap();
    let legacy = library.join("sub__one.mp4.analysis.json");
    let legacy_sidecar = library.join("sub__one.mp4.analysis.embeddings.safetensors");
    std::fs::rename(&sidecar, &legacy_sidecar).unwrap();
    analysis.embeddings.as_mut().unwrap().path =
        "sub__one.mp4.analysis.embeddings.safetensors".into();
    analysis.save(&legacy).unwrap();
    std::fs::remove_file(&document).unwrap();

    let run = index(dir.path());
    assert_ok(&run);
    assert!(
        run.stderr.contains("0 analysed, 1 already analysed"),
        "{}",
        run.stderr
    );
    assert_eq!(documents(dir.path()), std::slice::from_ref(&document));
    assert!(!legacy.exists() && !legacy_sidecar.exists());
    let adopted = Analysis::load(&document).unwrap();
    assert!(adopted.embeddings_path(&document).unwrap().is_file());
    assert!(!search_json(dir.path(), "a test pattern", 3).is_empty());
}

#[test]
fn a_name_that_is_not_utf8_does_not_crash_the_run() {
    let dir = workspace();
    let videos = dir.path().join("videos");
    make_video(&videos.join("plain.mp4"), "smptebars");
    make_video(&videos.join("made.mp4"), "testsrc");
    let latin1 = videos.join(OsString::from_vec(b"caf\xe9.mp4".to_vec()));
    std::fs::rename(videos.join("made.mp4"), &latin1).unwrap();

    let run = index(dir.path());
    // Analysed once FFmpeg opens such paths; until then reported as this file's failure.
    // Either way the other video is indexed and the run ends with its summary.
    let analysed = run.stderr.contains("2 analysed, 0 already analysed");
    let reported = run
        .stderr
        .contains("1 analysed, 0 already analysed, 0 ignored, 1 failed")
        && run
            .stderr
            .contains("keyscribe: failed: videos/caf\u{fffd}.mp4: ");
    assert!(analysed || reported, "{}", run.stderr);
    assert_eq!(run.status.code(), Some(if analysed { 0 } else { 1 }));
    let names = analysed_videos(dir.path());
    assert!(names.iter().any(|name| name.ends_with("videos/plain.mp4")));
    if analysed {
        assert!(names
            .iter()
            .any(|name| name.ends_with("videos/caf\u{fffd}.mp4")));
    }
}

/// Whether `text` is a `HH:MM:SS.mmm` timecode.
fn is_timecode(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 12
        && bytes.iter().enumerate().all(|(at, byte)| match at {
            2 | 5 => *byte == b':',
            8 => *byte == b'.',
            _ => byte.is_ascii_digit(),
        })
}

#[test]
fn search_ranges_do_not_depend_on_top_and_json_gives_timecodes() {
    let dir = workspace();
    std::fs::copy(
        root().join("samples/scenes.mp4"),
        dir.path().join("videos/scenes.mp4"),
    )
    .unwrap();
    assert_ok(&index(dir.path()));
    for query in ["colour bars", "a fractal", "a moving test pattern"] {
        let all = search_json(dir.path(), query, 20);
        assert!(all.len() >= 5, "{query}: {} results", all.len());
        for top in [1, 5] {
            assert_eq!(
                search_json(dir.path(), query, top)[..],
                all[..top],
                "{query} top {top}"
            );
        }
        for hit in &all {
            for (seconds, timecode) in [("start_s", "start"), ("end_s", "end"), ("best_s", "best")]
            {
                let seconds = hit[seconds].as_f64().unwrap();
                let timecode = hit[timecode].as_str().unwrap();
                assert!(is_timecode(timecode), "{timecode}");
                assert_eq!(MediaTime::from_seconds(seconds).timecode(), timecode);
            }
            assert!(hit["start_s"].as_f64() < hit["end_s"].as_f64());
        }
    }
    // The same names and format as `export --format json` gives a keyframe's times.
    let [document] = documents(dir.path()).try_into().unwrap();
    let export = keyscribe(
        dir.path(),
        &[
            OsStr::new("export"),
            document.as_os_str(),
            OsStr::new("--format"),
            OsStr::new("json"),
        ],
    );
    assert_ok(&export);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&export.stdout).unwrap();
    assert!(rows[0]["start_s"].is_f64() && is_timecode(rows[0]["start"].as_str().unwrap()));
}

#[test]
fn plain_search_output_shows_control_characters_instead_of_sending_them() {
    let dir = workspace();
    let name = "clip\x1b[2J\x1b]0;owned\x07.mp4";
    make_video(&dir.path().join("videos").join(name), "testsrc");
    let run = keyscribe(
        dir.path(),
        &[
            OsStr::new("index"),
            OsStr::new("videos"),
            OsStr::new("--pipeline"),
            OsStr::new("p.toml"),
            OsStr::new("--embedder"),
            embedder().as_os_str(),
        ],
    );
    assert_ok(&run);
    assert!(
        run.stderr.contains("clip\\x1b[2J\\x1b]0;owned\\x07.mp4"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains('\x1b'), "{:?}", run.stderr);
    // A caption holding escape sequences, as a model could write.
    let [document] = documents(dir.path()).try_into().unwrap();
    let mut analysis = Analysis::load(&document).unwrap();
    for keyframe in &mut analysis.keyframes {
        keyframe.caption = Some("\x1b[31mred alert\x1b[0m\nsecond line".into());
    }
    analysis.save(&document).unwrap();

    let output = search(dir.path(), "a test pattern", 3, false).stdout;
    let printed = String::from_utf8(output).unwrap();
    assert!(
        !printed.contains('\x1b') && !printed.contains('\x07'),
        "{printed:?}"
    );
    assert!(
        printed.contains("clip\\x1b[2J\\x1b]0;owned\\x07.mp4")
            && printed.contains("\\x1b[31mred alert\\x1b[0m second line"),
        "{printed}"
    );
    // One line per result: the caption's line break was printed as a space.
    let hits = search_json(dir.path(), "a test pattern", 3);
    assert_eq!(printed.lines().count(), hits.len(), "{printed}");
    // JSON keeps the text exactly (escaped as JSON escapes it).
    assert_eq!(
        hits[0]["caption"].as_str(),
        Some("\x1b[31mred alert\x1b[0m\nsecond line")
    );
}
