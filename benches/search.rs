//! Scene search at library scale: build time, index size and memory, query latency, and
//! recall@10 against exact `f32` search, on synthetic libraries (see
//! `tests/common/synthetic_library.rs`) of 30-minute videos sampled at 2 frames per second.
//!
//! ```text
//! cargo bench --bench search
//! KEYSCRIBE_BENCH_SIZES=1000,10000,100000,1000000,10000000 cargo bench --bench search
//! ```
//!
//! - `KEYSCRIBE_BENCH_SIZES`: library sizes in frames (default `1000,10000,100000,1000000`;
//!   10 million takes about 8 minutes on 2 cores, most of it generating the library and
//!   searching it exactly, and about 22 GB of disk while building: the 11 GB index and its
//!   10 GB spill file).
//! - `KEYSCRIBE_BENCH_QUERIES`: queries per size (default 50).
//! - `KEYSCRIBE_BENCH_DIR`: where the index and its spill file are written (default: the
//!   system's temporary directory).
//!
//! The library is generated video by video and never held as `f32`: each video is added to
//! the index builder (which spills its 16-bit vectors to disk) and scored exactly against
//! every query, keeping each query's true top 10.
//!
//! Columns: build time (adding videos, writing and opening the index, not generating the
//! data); the index file; the part every query scans; how much this process's resident
//! memory grew while answering the queries (the scanned part plus the pages of candidates'
//! vectors touched, which the system may drop again); the latency of a full search
//! (`top_k` = 10, default settings); the latency of the scan alone (re-ranking 10); and
//! recall@10 of `nearest_frames` against exact search for several candidate counts.

#[path = "common/memory.rs"]
mod memory;
#[path = "../tests/common/synthetic_library.rs"]
mod synthetic_library;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use keyscribe::search::{IndexBuilder, SearchConfig, SearchIndex, VideoInput};
use memory::status_mib;
use rayon::prelude::*;
use synthetic_library::{exact_top, Library};

const DIM: usize = 512;
const CONCEPTS: usize = 4000;
const FRAMES_PER_VIDEO: usize = 3600;
const TOP_K: usize = 10;
const CANDIDATE_COUNTS: [usize; 4] = [256, 1024, 2048, 4096];

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter_map(|item| item.trim().replace('_', "").parse::<f64>().ok())
        .map(|value| value as usize)
        .collect()
}

/// Resident memory of this process, in bytes (Linux; 0 elsewhere).
fn resident_bytes() -> usize {
    status_mib("VmRSS:").map_or(0, |mib| (mib * 1024.0 * 1024.0) as usize)
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

fn main() {
    let sizes = env_list("KEYSCRIBE_BENCH_SIZES", "1000,10000,100000,1000000");
    let query_count = env_list("KEYSCRIBE_BENCH_QUERIES", "50")
        .first()
        .copied()
        .unwrap_or(50);
    let directory = std::env::var("KEYSCRIBE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let config = SearchConfig::default();
    println!(
        "search benchmark: {DIM}-d, {query_count} queries, top {TOP_K}, {} threads, default rerank_candidates = {}",
        rayon::current_num_threads(),
        config.rerank_candidates
    );
    println!(
        "| frames | build s | index file MB | scanned MB | RSS growth MB | query p50 ms | query p95 ms | scan only p50 ms | {} |",
        CANDIDATE_COUNTS.map(|c| format!("recall@10 C={c}")).join(" | ")
    );
    println!("|{}", " ---: |".repeat(8 + CANDIDATE_COUNTS.len()));

    for size in sizes {
        let library = Library::new(DIM, CONCEPTS, 7);
        let queries: Vec<_> = (0..query_count as u64).map(|i| library.query(i)).collect();
        let mut truth: Vec<Vec<(f32, usize)>> = vec![Vec::new(); queries.len()];
        let path = directory.join(format!(
            "keyscribe-bench-{}-{size}.index",
            std::process::id()
        ));

        let mut building = Duration::ZERO;
        let mut builder = IndexBuilder::spilling_to(&directory).expect("spill file");
        let mut first_row = 0;
        let mut video_number = 0;
        while first_row < size {
            let frames = FRAMES_PER_VIDEO.min(size - first_row);
            let video = library.video(video_number, frames);
            let started = Instant::now();
            builder
                .add_video(VideoInput {
                    video: &video.name,
                    duration: video.duration,
                    times: &video.times,
                    embeddings: &video.embeddings,
                    scenes: &video.scenes,
                })
                .expect("add video");
            building += started.elapsed();
            truth
                .par_iter_mut()
                .zip(&queries)
                .for_each(|(best, query)| {
                    exact_top(&query.embedding, &video.embeddings, first_row, TOP_K, best)
                });
            first_row += frames;
            video_number += 1;
        }
        let started = Instant::now();
        builder.write(&path).expect("write index");
        let resident_before = resident_bytes();
        let index = SearchIndex::open(&path).expect("open index");
        building += started.elapsed();

        for query in queries.iter().take(3) {
            index
                .search(&query.embedding, &query.text, TOP_K, &config)
                .expect("search");
        }
        let mut latencies: Vec<Duration> = queries
            .iter()
            .map(|query| {
                let started = Instant::now();
                let hits = index
                    .search(&query.embedding, &query.text, TOP_K, &config)
                    .expect("search");
                assert!(!hits.is_empty());
                started.elapsed()
            })
            .collect();
        latencies.sort();
        let resident_growth = resident_bytes().saturating_sub(resident_before);
        // The scan alone: re-ranking only the ten best estimates reads almost no vectors.
        let mut scan_latencies: Vec<Duration> = queries
            .iter()
            .map(|query| {
                let started = Instant::now();
                index
                    .nearest_frames(&query.embedding, TOP_K, TOP_K)
                    .expect("nearest frames");
                started.elapsed()
            })
            .collect();
        scan_latencies.sort();

        let recalls = CANDIDATE_COUNTS.map(|candidates| {
            let found: usize = queries
                .iter()
                .zip(&truth)
                .map(|(query, best)| {
                    let frames = index
                        .nearest_frames(&query.embedding, TOP_K, candidates)
                        .expect("nearest frames");
                    frames
                        .iter()
                        .filter(|frame| best.iter().any(|(_, row)| *row == frame.frame))
                        .count()
                })
                .sum();
            found as f64 / (queries.len() * TOP_K) as f64
        });
        let megabytes = |bytes: usize| bytes as f64 / 1e6;
        println!(
            "| {size} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {} |",
            building.as_secs_f64(),
            megabytes(index.total_bytes()),
            megabytes(index.scanned_bytes()),
            megabytes(resident_growth),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.95),
            percentile(&scan_latencies, 0.5),
            recalls.map(|r| format!("{r:.3}")).join(" | ")
        );
        drop(index);
        let _ = std::fs::remove_file(&path);
    }
}
