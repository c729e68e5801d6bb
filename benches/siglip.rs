//! SigLIP2 throughput on 2 threads: the vision tower at batch 1 and 16 (already
//! preprocessed), one text query (tokenization included), and transformers on the same
//! weights and inputs in the same run.
//!
//! The weights are the full-size random SigLIP2-base-patch16-224 of the fixture script:
//!
//! ```text
//! HF_HUB_OFFLINE=1 /work/venvs/openclip/bin/python tests/fixtures/make_siglip.py --full-size target/siglip2-base-full
//! KEYSCRIBE_SIGLIP_FIXTURE=target/siglip2-base-full KEYSCRIBE_REFERENCE_PYTHON=/work/venvs/openclip/bin/python cargo bench --bench siglip
//! ```
//!
//! Without `KEYSCRIBE_SIGLIP_FIXTURE` the bench runs on the reduced committed fixture (which
//! only shows that it works). With `KEYSCRIBE_REFERENCE_PYTHON` it also runs
//! `benches/reference/siglip.py` on the same directory and prints a table of both; peak
//! memory (RSS) of both processes is reported.

#[path = "common/memory.rs"]
mod memory;
#[path = "common/reference.rs"]
mod reference;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

use keyscribe::models::siglip::Siglip;
use memory::status_mib;
use reference::run_reference;

/// Threads for both implementations.
const THREADS: usize = 2;
/// The text query timed (the Python reference uses the same).
const QUERY: &str = "a robot standing on the surface of Mars";

fn fixture_dir() -> PathBuf {
    match std::env::var_os("KEYSCRIBE_SIGLIP_FIXTURE") {
        Some(dir) => PathBuf::from(dir),
        None => {
            eprintln!(
                "KEYSCRIBE_SIGLIP_FIXTURE is not set: timing the reduced test model (see the bench's doc comment for the full-size one)"
            );
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/siglip-tiny")
        }
    }
}

/// `batch` preprocessed inputs cycled from the fixture's reference pixels (transformers'
/// processor output).
fn inputs(dir: &Path, batch: usize) -> Tensor {
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)
            .expect("the fixture has reference.safetensors");
    let pixels = tensors["pixel_values"].to_dtype(DType::F32).unwrap();
    let available = pixels.dim(0).unwrap();
    let index: Vec<u32> = (0..batch).map(|i| (i % available) as u32).collect();
    let index = Tensor::new(index.as_slice(), &Device::Cpu).unwrap();
    pixels.index_select(&index, 0).unwrap()
}

fn siglip(c: &mut Criterion) {
    let dir = fixture_dir();
    let model = Siglip::load(&dir, &Device::Cpu).expect("the bench model loads");
    let mut group = c.benchmark_group("siglip-image");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(2));
    for batch in [1, 16] {
        let pixels = inputs(&dir, batch);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(
            BenchmarkId::new("keyscribe", format!("batch-{batch}")),
            |b| b.iter(|| model.embed_preprocessed(&pixels).unwrap()),
        );
    }
    group.finish();
    let mut group = c.benchmark_group("siglip-text");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("keyscribe", "query"), |b| {
        b.iter(|| model.embed_texts(&[QUERY]).unwrap())
    });
    group.finish();
}

/// Criterion's median estimate for one benchmark, in seconds (criterion writes under
/// `CARGO_TARGET_DIR` when it is set).
fn median_seconds(group: &str, function: &str, parameter: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target
        .join("criterion")
        .join(group)
        .join(function)
        .join(parameter)
        .join("new/estimates.json");
    let estimates: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(estimates["median"]["point_estimate"].as_f64()? / 1e9)
}

/// transformers' figures from `benches/reference/siglip.py`, when a Python is given.
fn reference(dir: &Path) -> Option<serde_json::Value> {
    let threads = THREADS.to_string();
    run_reference(
        "siglip.py",
        &[dir.as_os_str(), "--threads".as_ref(), threads.as_ref()],
    )
}

fn summary(dir: &Path) {
    let ours = [
        (
            "images/s, batch 1",
            median_seconds("siglip-image", "keyscribe", "batch-1").map(|s| 1.0 / s),
            "image_batch1_per_s",
        ),
        (
            "images/s, batch 16",
            median_seconds("siglip-image", "keyscribe", "batch-16").map(|s| 16.0 / s),
            "image_batch16_per_s",
        ),
        (
            "text queries/s",
            median_seconds("siglip-text", "keyscribe", "query").map(|s| 1.0 / s),
            "text_queries_per_s",
        ),
    ];
    let theirs = reference(dir);
    println!("\n| per second | keyscribe | transformers | keyscribe / transformers |");
    println!("| --- | --- | --- | --- |");
    for (label, ours, key) in ours {
        let Some(ours) = ours else { continue };
        let (value, ratio) = theirs
            .as_ref()
            .and_then(|t| t[key].as_f64())
            .map_or(("-".to_string(), "-".to_string()), |v| {
                (format!("{v:.2}"), format!("{:.2}x", ours / v))
            });
        println!("| {label} | {ours:.2} | {value} | {ratio} |");
    }
    if let Some(ms) = median_seconds("siglip-text", "keyscribe", "query") {
        let theirs_ms = theirs
            .as_ref()
            .and_then(|t| t["text_query_s"].as_f64())
            .map_or("-".to_string(), |s| format!("{:.1} ms", s * 1e3));
        println!(
            "\none text query: keyscribe {:.1} ms, transformers {theirs_ms}",
            ms * 1e3
        );
    }
    let rss = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} MiB"));
    println!(
        "peak RSS: keyscribe bench process {}, transformers reference process {}",
        rss(status_mib("VmHWM:")),
        rss(theirs.as_ref().and_then(|t| t["peak_rss_mib"].as_f64()))
    );
}

criterion_group!(benches, siglip);

fn main() {
    keyscribe::allocator::reuse_freed_memory();
    // Both implementations get the same number of threads.
    std::env::set_var("RAYON_NUM_THREADS", THREADS.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build_global()
        .expect("the thread pool starts first");
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary(&fixture_dir());
}
