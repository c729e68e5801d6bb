//! Matrix-product throughput of the CPU kernels on FastVLM-0.5B's shapes, 2 threads: the
//! f32 product (`gemm` crate) and the packed bf16 product, as GFLOP/s, for the prompt
//! prefill's and FastViTHD's 1x1 convolutions' shapes, and as weight GB/s (read from
//! memory, not cache) for one decoded token.
//!
//! ```text
//! cargo bench --bench products
//! ```

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use keyscribe::kernels::{pointwise_conv, Activation, ProductWeight};

/// Threads, as in the model benches.
const THREADS: usize = 2;

/// Bytes of bf16 weights a decode row cycles through (well beyond the 32 MiB L3 cache).
const COLD_BYTES: usize = 512 << 20;

/// `(what, rows, inputs, outputs)`.
const SHAPES: &[(&str, usize, usize, usize)] = &[
    ("prefill qkv", 316, 896, 1152),
    ("prefill o_proj", 316, 896, 896),
    ("prefill gate_up", 316, 896, 9728),
    ("prefill down", 316, 4864, 896),
    ("vision stage 1 fc1", 65536, 96, 288),
    ("vision stage 2 fc1", 16384, 192, 576),
    ("vision stage 3 fc1", 4096, 384, 1152),
    ("vision stage 3 fc2", 4096, 1152, 384),
    ("vision stage 4 qkv", 1024, 768, 2304),
    ("vision stage 5 fc1", 256, 1536, 4608),
    ("decode gate_up", 1, 896, 9728),
    ("decode down", 1, 4864, 896),
];

/// Median seconds of `runs` calls of `f` after one warm-up call.
fn median_seconds(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn main() -> candle_core::Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build_global()
        .expect("the global thread pool is set once");
    keyscribe::allocator::reuse_freed_memory();
    let device = Device::Cpu;
    println!("| product | rows x inputs x outputs | f32 | packed bf16 |");
    println!("| --- | --- | --- | --- |");
    for &(what, rows, inputs, outputs) in SHAPES {
        let x = Tensor::randn(0f32, 1.0, (rows, inputs), &device)?;
        // A decoded token reads weights from memory, not cache: enough copies to
        // overflow the caches, one product with each per timed pass.
        let copies = if rows == 1 {
            (COLD_BYTES / (inputs * outputs * 2)).max(1)
        } else {
            1
        };
        let mut f32_weights = Vec::with_capacity(copies);
        let mut bf16_weights = Vec::with_capacity(copies);
        for _ in 0..copies {
            let torch_weight = Tensor::randn(0f32, 0.05, (outputs, inputs), &device)?;
            f32_weights.push(ProductWeight::from_torch(&torch_weight)?);
            bf16_weights.push(ProductWeight::from_torch(
                &torch_weight.to_dtype(DType::BF16)?,
            )?);
        }
        let runs = if rows == 1 { 21 } else { 11 };
        let time = |weights: &[ProductWeight]| {
            median_seconds(runs, || {
                for weight in weights {
                    pointwise_conv(&x, weight, None, Activation::Identity).expect("product");
                }
            }) / weights.len() as f64
        };
        let (f32_s, bf16_s) = (time(&f32_weights), time(&bf16_weights));
        let rate = |seconds: f64, bytes: usize| {
            if rows == 1 {
                format!(
                    "{:.1} GB/s",
                    (inputs * outputs * bytes) as f64 / seconds / 1e9
                )
            } else {
                let flops = 2.0 * (rows * inputs * outputs) as f64;
                format!("{:.0} GFLOP/s", flops / seconds / 1e9)
            }
        };
        println!(
            "| {what} | {rows} x {inputs} x {outputs} | {} ({:.3} ms) | {} ({:.3} ms) |",
            rate(f32_s, 4),
            f32_s * 1e3,
            rate(bf16_s, 2),
            bf16_s * 1e3
        );
    }
    Ok(())
}
