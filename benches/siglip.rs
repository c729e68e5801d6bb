//! SigLIP2 throughput on 2 threads: the vision tower at batch 1 and 16 (already
//! preprocessed), one text query (tokenization included), in f32 and with bf16 weights
//! (`Siglip::load_with_dtype`), and transformers (f32) on the same weights and inputs in
//! the same run.
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

/// The implementations timed: criterion's function name and the weights' dtype.
const VARIANTS: [(&str, DType); 2] = [("keyscribe", DType::F32), ("keyscribe-bf16", DType::BF16)];

fn siglip(c: &mut Criterion) {
    let dir = fixture_dir();
    for (name, dtype) in VARIANTS {
        let model =
            Siglip::load_with_dtype(&dir, dtype, &Device::Cpu).expect("the bench model loads");
        let mut group = c.benchmark_group("siglip-image");
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(10))
            .warm_up_time(Duration::from_secs(2));
        for batch in [1, 16] {
            let pixels = inputs(&dir, batch);
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_function(BenchmarkId::new(name, format!("batch-{batch}")), |b| {
                b.iter(|| model.embed_preprocessed(&pixels).unwrap())
            });
        }
        group.finish();
        let mut group = c.benchmark_group("siglip-text");
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(5))
            .warm_up_time(Duration::from_secs(2))
            .throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new(name, "query"), |b| {
            b.iter(|| model.embed_texts(&[QUERY]).unwrap())
        });
        group.finish();
    }
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
    let rows = [
        (
            "images/s, batch 1",
            "siglip-image",
            "batch-1",
            1.0,
            "image_batch1_per_s",
        ),
        (
            "images/s, batch 16",
            "siglip-image",
            "batch-16",
            16.0,
            "image_batch16_per_s",
        ),
        (
            "text queries/s",
            "siglip-text",
            "query",
            1.0,
            "text_queries_per_s",
        ),
    ];
    let theirs = reference(dir);
    println!(
        "\n| per second | transformers f32 | keyscribe f32 | ratio | keyscribe bf16 | ratio |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (label, group, parameter, items, key) in rows {
        let reference = theirs.as_ref().and_then(|t| t[key].as_f64());
        let mut line = format!(
            "| {label} | {} |",
            reference.map_or("-".to_string(), |v| format!("{v:.2}"))
        );
        for (name, _) in VARIANTS {
            let ours = median_seconds(group, name, parameter).map(|s| items / s);
            let value = ours.map_or("-".to_string(), |v| format!("{v:.2}"));
            let ratio = ours
                .zip(reference)
                .map_or("-".to_string(), |(ours, theirs)| {
                    format!("{:.2}x", ours / theirs)
                });
            line.push_str(&format!(" {value} | {ratio} |"));
        }
        println!("{line}");
    }
    let query_ms = |name: &str| {
        median_seconds("siglip-text", name, "query")
            .map_or("-".to_string(), |s| format!("{:.1} ms", s * 1e3))
    };
    let theirs_ms = theirs
        .as_ref()
        .and_then(|t| t["text_query_s"].as_f64())
        .map_or("-".to_string(), |s| format!("{:.1} ms", s * 1e3));
    println!(
        "\none text query: transformers {theirs_ms}, keyscribe f32 {}, bf16 {}",
        query_ms("keyscribe"),
        query_ms("keyscribe-bf16")
    );
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
