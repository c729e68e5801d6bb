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
