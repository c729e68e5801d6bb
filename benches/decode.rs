//! Decode + sample at 2 fps + scale to 256x256, on 60 s of 720p and 1080p H.264, next to
//! `ffmpeg -v error -i X -vf fps=2,scale=256:256 -f null -` on the same files in the same run,
//! and keyscribe again with every frame decoded (`decode_every_frame`: what skipping the
//! frames sampling cannot use saves).
//!
//! The bench videos are made on first use with `samples/make_samples.sh bench` (into
//! target/bench-videos). After criterion's report, a table gives medians, frames per second,
//! times real time, and the ratio keyscribe / FFmpeg.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use keyscribe::video::{DecodeOptions, FrameReader, ResizeMode, SampleRate, Size};

const VIDEO_SECONDS: f64 = 60.0;
const SAMPLE_FPS: f64 = 2.0;

fn bench_videos() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench-videos");
    if !dir.join("bench-1080p.mp4").exists() {
        let status = Command::new("bash")
            .arg(root.join("samples/make_samples.sh"))
            .arg("bench")
            .arg(&dir)
            .status()
            .expect("bash runs");
        assert!(status.success(), "making the bench videos failed");
    }
    dir
}

fn keyscribe_decode(path: &Path, decode_every_frame: bool) -> usize {
    let options = DecodeOptions {
        sample_rate: SampleRate::PerSecond(SAMPLE_FPS),
        size: Size::Exact {
            width: 256,
            height: 256,
        },
        mode: ResizeMode::Stretch,
        decode_every_frame,
        ..DecodeOptions::default()
    };
    let reader = FrameReader::open(path, options).expect("bench video opens");
    let mut frames = 0;
    for frame in reader {
        frame.expect("bench video decodes");
        frames += 1;
    }
    frames
}

fn ffmpeg_decode(path: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-vf", "fps=2,scale=256:256", "-f", "null", "-"])
        .status()
        .expect("the ffmpeg CLI runs");
    assert!(status.success());
}

fn decode(c: &mut Criterion) {
    let dir = bench_videos();
    for name in ["720p", "1080p"] {
        let path = dir.join(format!("bench-{name}.mp4"));
        let mut group = c.benchmark_group(format!("decode-{name}"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(20))
            .warm_up_time(Duration::from_secs(1))
            .throughput(Throughput::Elements((VIDEO_SECONDS * SAMPLE_FPS) as u64));
        group.bench_function(BenchmarkId::new("keyscribe", "fps2-256"), |b| {
            b.iter(|| keyscribe_decode(&path, false))
        });
        group.bench_function(BenchmarkId::new("keyscribe-every-frame", "fps2-256"), |b| {
            b.iter(|| keyscribe_decode(&path, true))
        });
        group.bench_function(BenchmarkId::new("ffmpeg-cli", "fps2-256"), |b| {
            b.iter(|| ffmpeg_decode(&path))
        });
        group.finish();
    }
}

/// Criterion's median estimate for one benchmark, in seconds.
fn median_seconds(group: &str, function: &str) -> Option<f64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/criterion")
        .join(group)
        .join(function)
        .join("fps2-256/new/estimates.json");
    let estimates: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(estimates["median"]["point_estimate"].as_f64()? / 1e9)
}

fn summary() {
    println!("\n| video | keyscribe | keyscribe, every frame decoded | ffmpeg CLI | keyscribe / ffmpeg |");
    println!("| --- | --- | --- | --- | --- |");
    for name in ["720p", "1080p"] {
        let group = format!("decode-{name}");
        let (Some(ours), Some(every), Some(theirs)) = (
            median_seconds(&group, "keyscribe"),
            median_seconds(&group, "keyscribe-every-frame"),
            median_seconds(&group, "ffmpeg-cli"),
        ) else {
            continue;
        };
        let describe = |seconds: f64| {
            format!(
                "{seconds:.2} s ({:.0} source frames/s, {:.1}x real time)",
                VIDEO_SECONDS * 29.97 / seconds,
                VIDEO_SECONDS / seconds
            )
        };
        println!(
            "| 60 s {name} H.264 | {} | {} | {} | {:.2} |",
            describe(ours),
            describe(every),
            describe(theirs),
            ours / theirs
        );
    }
}

criterion_group!(benches, decode);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
