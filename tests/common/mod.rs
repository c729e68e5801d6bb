//! Helpers shared by the integration tests: the synthetic test videos and reading the frame
//! counter that they carry as a barcode.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use image::RgbImage;

/// The directory of test videos made by `samples/make_samples.sh test`, made once per
/// script version and reused by later test runs.
pub fn test_videos() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/make_samples.sh");
        let contents = std::fs::read(&script).expect("samples/make_samples.sh exists");
        let version = contents.iter().fold(0xcbf29ce484222325u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x100000001b3)
        });
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = root.join(format!("test-videos-{version:016x}"));
        if !dir.join("counter.mp4").exists() {
            let staging = root.join(format!("test-videos-staging-{}", std::process::id()));
            let status = Command::new("bash")
                .arg(&script)
                .arg("test")
                .arg(&staging)
                .status()
                .expect("bash runs (the ffmpeg CLI is needed to make test videos)");
            assert!(status.success(), "samples/make_samples.sh test failed");
            if std::fs::rename(&staging, &dir).is_err() {
                // Another test process made it first.
                let _ = std::fs::remove_dir_all(&staging);
            }
        }
        dir
    })
}

/// A test video by file name.
pub fn video(name: &str) -> PathBuf {
    test_videos().join(name)
}

/// The committed scene sample.
pub fn scenes_sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/scenes.mp4")
}

/// Reads the frame counter from a picture of a barcode test video (320x240 source, top 40
/// rows: 16 blocks of 20 px, block b white when bit b is set), scaled to any size.
pub fn read_counter(picture: &RgbImage) -> u32 {
    let (width, height) = picture.dimensions();
    let y = (20.0 / 240.0 * f64::from(height)) as u32;
    (0..16).fold(0, |value, bit| {
        let x = ((bit as f64 * 20.0 + 10.0) / 320.0 * f64::from(width)) as u32;
        let pixel = picture.get_pixel(x, y).0;
        let luma = (u32::from(pixel[0]) + u32::from(pixel[1]) + u32::from(pixel[2])) / 3;
        if luma > 128 {
            value | (1 << bit)
        } else {
            value
        }
    })
}

/// The repository's root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The tiny random-weight MobileCLIP2-S0 in the Hub's layout.
pub fn tiny_embedder() -> PathBuf {
    root().join("tests/fixtures/mobileclip-s0-tiny")
}

/// The tiny random-weight FastVLM in the transformers layout.
pub fn tiny_captioner() -> PathBuf {
    root().join("tests/fixtures/fastvlm-tiny-hf")
}

/// A path argument as text.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fails the test with both streams unless the command succeeded.
pub fn assert_ok(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// The keyscribe binary built for these tests, as a command to give arguments to.
pub fn keyscribe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keyscribe"))
}

/// Runs the keyscribe binary in `dir` as a user would, with a cache of its own
/// (`dir/cache`) and an empty, offline Hugging Face home (`dir/hf-home`); `stdin` is fed
/// to it (an empty stdin when `None`).
pub fn keyscribe_in(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = keyscribe()
        .args(args)
        .current_dir(dir)
        .env("KEYSCRIBE_CACHE_DIR", dir.join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.join("hf-home"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keyscribe runs");
    let mut input = child.stdin.take().expect("stdin is piped");
    let bytes = stdin.unwrap_or_default().to_vec();
    // Fed from a thread: the command may fill its stdout before it reads all of stdin.
    let feeder = std::thread::spawn(move || {
        // A command that does not read stdin closes it early; that is not a failure.
        let _ = input.write_all(&bytes);
    });
    let output = child.wait_with_output().expect("keyscribe finishes");
    feeder.join().expect("the stdin feeder finishes");
    output
}
