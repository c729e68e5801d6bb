//! `keyscribe batch` against the same work done as one `keyscribe run` process per video
//! (what loading the models once per shard saves), and `index --from-parquet` per million
//! frames.
//!
//! ```text
//! cargo bench --bench batch                                  # tiny fixture models
//! KEYSCRIBE_EMBEDDER=DIR KEYSCRIBE_CAPTIONER=DIR cargo bench --bench batch
//! KEYSCRIBE_BENCH_RUNS=5 KEYSCRIBE_INDEX_FRAMES=1000000 cargo bench --bench batch
//! ```
//!
//! The videos are `samples/scenes.mp4` and the decodable test videos
//! (`samples/make_samples.sh test`, made into `target/batch-samples/` when missing). Each
//! configuration runs `KEYSCRIBE_BENCH_RUNS` times (default 3) with a fresh output and
//! cache; medians are printed as JSON lines. The index part writes a frame table of
//! `KEYSCRIBE_INDEX_FRAMES` synthetic 512-d frames (default 250,000) and times building the
//! library from it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::json;

use keyscribe::analysis::{Analysis, FrameEmbeddings};
use keyscribe::batch::library::index_tables;
use keyscribe::batch::tables::{frames_name, write_frames, VideoRows};
use keyscribe::pipeline::StopSignal;

/// Test videos that decode (the others are damaged on purpose).
const VIDEOS: [&str; 10] = [
    "counter.mp4",
    "h264.mkv",
    "h264.mov",
    "hevc.mp4",
    "vp9.webm",
    "av1.mkv",
    "rotated.mp4",
    "vfr.mp4",
    "delayed.mp4",
    "mpeg4.avi",
];

/// Frames per synthetic video in the index part.
const FRAMES_PER_VIDEO: usize = 5_000;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let runs: usize = number("KEYSCRIBE_BENCH_RUNS", 3);
    let embedder = std::env::var_os("KEYSCRIBE_EMBEDDER")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("tests/fixtures/mobileclip-s0-tiny"));
    let captioner = std::env::var_os("KEYSCRIBE_CAPTIONER")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("tests/fixtures/fastvlm-tiny-hf"));
    let samples = root.join("target/batch-samples");
    if !samples.join("counter.mp4").is_file() {
        let status = Command::new("bash")
            .arg(root.join("samples/make_samples.sh"))
            .arg("test")
            .arg(&samples)
            .status()
            .expect("run samples/make_samples.sh");
        assert!(status.success(), "make_samples.sh test failed");
    }
    let mut videos: Vec<PathBuf> = VIDEOS.iter().map(|name| samples.join(name)).collect();
    videos.push(root.join("samples/scenes.mp4"));
    let work = tempfile::tempdir().expect("a temporary directory");
    let manifest = work.path().join("videos.txt");
    let listed: Vec<String> = videos.iter().map(|v| v.display().to_string()).collect();
    std::fs::write(&manifest, listed.join("\n") + "\n").expect("write the manifest");
    let models = [
        "--embedder".as_ref(),
        embedder.as_os_str(),
        "--captioner".as_ref(),
        captioner.as_os_str(),
        "--max-tokens".as_ref(),
        "30".as_ref(),
        "--quiet".as_ref(),
    ];

    let mut batch_times = Vec::new();
    let mut run_times = Vec::new();
    for run in 0..runs {
        let dir = work.path().join(format!("run-{run}"));
        std::fs::create_dir_all(&dir).unwrap();
        let started = Instant::now();
        let status = keyscribe(&dir.join("batch-cache"))
            .arg("batch")
            .arg("--manifest")
            .arg(&manifest)
            .arg("--out")
            .arg(dir.join("batch"))
            .args(models)
            .status()
            .expect("keyscribe batch runs");
        assert!(status.success(), "keyscribe batch failed");
        batch_times.push(started.elapsed().as_secs_f64());

        let started = Instant::now();
        for (number, video) in videos.iter().enumerate() {
            let status = keyscribe(&dir.join("run-cache"))
                .arg("run")
                .arg(video)
                .arg("--output")
                .arg(dir.join(format!("{number}.analysis.json")))
                .args(models)
                .status()
                .expect("keyscribe run runs");
            assert!(status.success(), "keyscribe run {} failed", video.display());
        }
        run_times.push(started.elapsed().as_secs_f64());
    }
    let (batch, separate) = (median(&mut batch_times), median(&mut run_times));
    println!(
        "{}",
        json!({
            "bench": "batch vs one run per video",
            "videos": videos.len(),
            "embedder": embedder.display().to_string(),
            "captioner": captioner.display().to_string(),
            "runs": runs,
            "batch_s": round(batch),
            "separate_runs_s": round(separate),
            "speedup": round(separate / batch),
        })
    );

    index_bench(work.path(), number("KEYSCRIBE_INDEX_FRAMES", 250_000));
}

/// Times `index_tables` over one synthetic frame table.
fn index_bench(work: &Path, frames: usize) {
    // The video and model columns come from a real analysis document's records.
    let template: Analysis = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/scenes.analysis.json"
    )))
    .expect("the golden analysis parses");
    let dim = 512;
    let videos = frames.div_ceil(FRAMES_PER_VIDEO);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let tables = work.join("tables");
    std::fs::create_dir_all(&tables).unwrap();
    let embeddings: Vec<FrameEmbeddings> = (0..videos)
        .map(|video| {
            let count = FRAMES_PER_VIDEO.min(frames - video * FRAMES_PER_VIDEO);
            let mut values: Vec<f32> = (0..count * dim).map(|_| next()).collect();
            for row in values.chunks_mut(dim) {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                row.iter_mut().for_each(|v| *v /= norm);
            }
            FrameEmbeddings {
                time_s: (0..count).map(|frame| frame as f64 * 0.5).collect(),
                change: vec![0.0; count],
                embeddings: values,
                dim,
                threshold: None,
            }
        })
        .collect();
    let paths: Vec<String> = (0..videos).map(|v| format!("video-{v:05}.mp4")).collect();
    let rows: Vec<VideoRows<'_>> = paths
        .iter()
        .zip(&embeddings)
        .map(|(path, frames)| VideoRows {
            path,
            analysis: &template,
            frames,
            settings_sha256: "bench",
        })
        .collect();
    write_frames(&tables.join(frames_name(0)), &rows, dim).expect("write the frame table");
    drop(rows);
    drop(embeddings);
    let started = Instant::now();
    let report = index_tables(
        &tables,
        &work.join("library"),
        10_000_000,
        &StopSignal::new(),
    )
    .expect("index the tables");
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "bench": "index --from-parquet",
            "frames": report.frames(),
            "dim": dim,
            "seconds": round(seconds),
            "seconds_per_million_frames": round(seconds * 1e6 / report.frames() as f64),
        })
    );
}

/// The keyscribe binary with a cache of its own and no network.
fn keyscribe(cache: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyscribe"));
    command
        .env("KEYSCRIBE_CACHE_DIR", cache)
        .env("HF_HUB_OFFLINE", "1");
    command
}

/// An environment variable as a number, or `default`.
fn number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
