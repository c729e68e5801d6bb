//! MobileCLIP2 throughput on 2 threads: the image tower at batch 1 and 16 (256x256, already
//! preprocessed), a text query, and open_clip on the same weights and inputs in the same run.
//!
//! The weights are the full-size random MobileCLIP2-S0 of the fixture script:
//!
//! ```text
//! HF_HUB_OFFLINE=1 /opt/refpy/bin/python tests/fixtures/make_mobileclip.py --full-size target/mobileclip2-s0-full
//! KEYSCRIBE_MOBILECLIP_FIXTURE=target/mobileclip2-s0-full cargo bench --bench mobileclip
//! ```
//!
//! Without `KEYSCRIBE_MOBILECLIP_FIXTURE` the bench runs on the reduced committed fixture
//! (which only shows that it works). With `KEYSCRIBE_REFERENCE_PYTHON` (e.g.
//! `/opt/refpy/bin/python`) it also runs `benches/reference/mobileclip.py` on the same
//! directory and prints a table of both; peak memory (RSS) of both processes is reported.

#[path = "common/memory.rs"]
mod memory;
#[path = "common/reference.rs"]
mod reference;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

use keyscribe::models::mobileclip::MobileClip;
use memory::status_mib;
use reference::run_reference;

/// Threads for both implementations.
const THREADS: usize = 2;
/// The text query timed (the Python reference uses the same).
const QUERY: &str = "a robot standing on the surface of Mars";

fn fixture_dir() -> PathBuf {
    match std::env::var_os("KEYSCRIBE_MOBILECLIP_FIXTURE") {
        Some(dir) => PathBuf::from(dir),
        None => {
            eprintln!(
                "KEYSCRIBE_MOBILECLIP_FIXTURE is not set: timing the reduced test model (see the bench's doc comment for the full-size one)"
            );
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mobileclip-s0-tiny")
        }
    }
}

/// `batch` preprocessed inputs cycled from the fixture's reference pixels.
fn inputs(model: &MobileClip, dir: &Path, batch: usize) -> Tensor {
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("reference_pixels.safetensors"), &Device::Cpu)
            .expect("the fixture has reference_pixels.safetensors");
    let pixels = tensors["pixels_u8"].to_dtype(DType::F32).unwrap();
    let available = pixels.dim(0).unwrap();
    let index: Vec<u32> = (0..batch).map(|i| (i % available) as u32).collect();
    let index = Tensor::new(index.as_slice(), &Device::Cpu).unwrap();
    let normalization = model.preprocess().normalization;
    let mean = Tensor::new(&normalization.mean, &Device::Cpu)
        .unwrap()
        .reshape((1, 3, 1, 1))
        .unwrap();
    let std = Tensor::new(&normalization.std, &Device::Cpu)
        .unwrap()
        .reshape((1, 3, 1, 1))
        .unwrap();
    (pixels.index_select(&index, 0).unwrap() / 255.0)
        .unwrap()
        .broadcast_sub(&mean)
        .unwrap()
        .broadcast_div(&std)
        .unwrap()
}

fn mobileclip(c: &mut Criterion) {
    let dir = fixture_dir();
    let model = MobileClip::load(&dir, &Device::Cpu).expect("the bench model loads");
    let mut group = c.benchmark_group("mobileclip-image");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(2));
    for batch in [1, 16] {
        let pixels = inputs(&model, &dir, batch);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(
            BenchmarkId::new("keyscribe", format!("batch-{batch}")),
            |b| b.iter(|| model.embed_preprocessed(&pixels).unwrap()),
        );
    }
    group.finish();
    let mut group = c.benchmark_group("mobileclip-text");
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

/// Criterion's median estimate for one benchmark, in seconds.
fn median_seconds(group: &str, function: &str, parameter: &str) -> Option<f64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/criterion")
        .join(group)
        .join(function)
        .join(parameter)
        .join("new/estimates.json");
    let estimates: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(estimates["median"]["point_estimate"].as_f64()? / 1e9)
}

/// open_clip's figures from `benches/reference/mobileclip.py`, when a Python is given.
fn reference(dir: &Path) -> Option<serde_json::Value> {
    let threads = THREADS.to_string();
    run_reference(
        "mobileclip.py",
        &[dir.as_os_str(), "--threads".as_ref(), threads.as_ref()],
    )
}

fn summary(dir: &Path) {
    let ours = [
        (
            "image, batch 1",
            median_seconds("mobileclip-image", "keyscribe", "batch-1").map(|s| 1.0 / s),
            "image_batch1_per_s",
        ),
        (
            "image, batch 16",
            median_seconds("mobileclip-image", "keyscribe", "batch-16").map(|s| 16.0 / s),
            "image_batch16_per_s",
        ),
        (
            "text, one query",
            median_seconds("mobileclip-text", "keyscribe", "query").map(|s| 1.0 / s),
            "text_queries_per_s",
        ),
    ];
    let theirs = reference(dir);
    println!("\n| per second | keyscribe | open_clip | keyscribe / open_clip | open_clip reparameterized | keyscribe / reparameterized |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (label, ours, key) in ours {
        let Some(ours) = ours else { continue };
        let column = |variant: &str| {
            theirs
                .as_ref()
                .and_then(|t| t[variant][key].as_f64())
                .map_or(("-".to_string(), "-".to_string()), |v| {
                    (format!("{v:.1}"), format!("{:.2}x", ours / v))
                })
        };
        let (plain, plain_ratio) = column("open_clip");
        let (reparam, reparam_ratio) = column("open_clip_reparameterized");
        println!("| {label} | {ours:.1} | {plain} | {plain_ratio} | {reparam} | {reparam_ratio} |");
    }
    let rss = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} MiB"));
    println!(
        "\npeak RSS: keyscribe bench process {}, open_clip reference process {}",
        rss(status_mib("VmHWM:")),
        rss(theirs.as_ref().and_then(|t| t["peak_rss_mib"].as_f64()))
    );
}

criterion_group!(benches, mobileclip);

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
