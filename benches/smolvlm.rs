//! SmolVLM speed on 2 threads next to transformers on the same weights and image in the same
//! run: preprocessing, vision tower + connector, time to first token, decode tokens/s and a
//! 30-token keyframe caption, with image splitting off (one 512x512 tile, 64 image tokens)
//! and on (a 16:9 frame: 12 tiles plus the whole image, 832 tokens).
//!
//! The weights are the full-size random SmolVLM-256M of the fixture script:
//!
//! ```text
//! HF_HUB_OFFLINE=1 /work/venvs/openclip/bin/python tests/fixtures/make_smolvlm.py --full-size target/smolvlm-256m-full
//! KEYSCRIBE_SMOLVLM_FIXTURE=target/smolvlm-256m-full KEYSCRIBE_REFERENCE_PYTHON=/work/venvs/openclip/bin/python \
//!     cargo bench --bench smolvlm
//! KEYSCRIBE_SMOLVLM_DTYPE=bf16 KEYSCRIBE_SMOLVLM_SPLITTING=on ... cargo bench --bench smolvlm
//! ```
//!
//! Without `KEYSCRIBE_SMOLVLM_FIXTURE` it times the tiny committed model (which only shows
//! that the bench works). `KEYSCRIBE_SMOLVLM_DTYPE` picks f32 (default) or bf16 for both
//! implementations, `KEYSCRIBE_SMOLVLM_SPLITTING` `off` (default) or `on`,
//! `KEYSCRIBE_BENCH_RUNS` the repetitions (medians are reported).

#[path = "common/memory.rs"]
mod memory;
#[path = "common/reference.rs"]
mod reference;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};

use keyscribe::models::generation::parse_dtype;
use keyscribe::models::smolvlm::processor::chat_prompt;
use keyscribe::models::smolvlm::SmolVlm;
use memory::status_mib;
use reference::run_reference;

/// Threads for both implementations.
const THREADS: usize = 2;
/// New tokens per run (never stopped early): a keyframe caption.
const NEW_TOKENS: usize = 30;
/// The instruction of the benchmark's prompt.
const INSTRUCTION: &str = "Describe this image.";

/// The model directory and the image (the fixture's wide frame).
fn fixture() -> (PathBuf, PathBuf) {
    match std::env::var_os("KEYSCRIBE_SMOLVLM_FIXTURE") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            (dir.join("model"), dir.join("inputs/wide.png"))
        }
        None => {
            eprintln!("KEYSCRIBE_SMOLVLM_FIXTURE is not set: timing the tiny test model");
            let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
            (
                fixtures.join("smolvlm-tiny"),
                fixtures.join("smolvlm-inputs/wide.png"),
            )
        }
    }
}

/// One run's timings, in seconds.
struct Timings {
    preprocess: f64,
    vision: f64,
    time_to_first_token: f64,
    decode_tokens_per_s: f64,
    total: f64,
    prompt_tokens: usize,
}

fn run_once(model: &SmolVlm, image: &image::RgbImage) -> Timings {
    let start = Instant::now();
    let processed = model.preprocess(image).unwrap();
    let preprocessed = Instant::now();
    let features = model.image_features(&processed.pixels).unwrap();
    let encoded = Instant::now();
    let ids = model
        .input_ids(&chat_prompt(None, INSTRUCTION, true), Some(processed.grid))
        .unwrap();
    let embeds = model.prompt_embeddings(&ids, Some(&features)).unwrap();
    let language = model.language();
    let mut cache = language.new_cache();
    // Greedy decoding, as `describe` does it.
    let mut token = language.greedy_tokens(&embeds, &mut cache).unwrap()[0];
    let first = Instant::now();
    for _ in 1..NEW_TOKENS {
        let next = Tensor::new(&[token], &Device::Cpu).unwrap();
        let embedded = language.embed(&next).unwrap().unsqueeze(0).unwrap();
        token = language.greedy_tokens(&embedded, &mut cache).unwrap()[0];
    }
    let done = Instant::now();
    Timings {
        preprocess: (preprocessed - start).as_secs_f64(),
        vision: (encoded - preprocessed).as_secs_f64(),
        time_to_first_token: (first - preprocessed).as_secs_f64(),
        decode_tokens_per_s: (NEW_TOKENS - 1) as f64 / (done - first).as_secs_f64(),
        total: (done - start).as_secs_f64(),
        prompt_tokens: ids.len(),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// transformers' figures from `benches/reference/smolvlm.py`, when a Python is given.
fn reference(dir: &Path, image: &Path, dtype: &str, splitting: bool) -> Option<serde_json::Value> {
    let threads = THREADS.to_string();
    let new_tokens = NEW_TOKENS.to_string();
    let args = [
        dir.as_os_str(),
        image.as_os_str(),
        "--threads".as_ref(),
        threads.as_ref(),
        "--dtype".as_ref(),
        dtype.as_ref(),
        "--new-tokens".as_ref(),
        new_tokens.as_ref(),
        "--splitting".as_ref(),
        if splitting { "on" } else { "off" }.as_ref(),
    ];
    run_reference("smolvlm.py", &args)
}

fn main() {
    keyscribe::allocator::reuse_freed_memory();
    std::env::set_var("RAYON_NUM_THREADS", THREADS.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build_global()
        .expect("the thread pool starts first");
    let dtype_name = std::env::var("KEYSCRIBE_SMOLVLM_DTYPE").unwrap_or_else(|_| "f32".into());
    let dtype = parse_dtype(&dtype_name).expect("KEYSCRIBE_SMOLVLM_DTYPE");
    let splitting = match std::env::var("KEYSCRIBE_SMOLVLM_SPLITTING").as_deref() {
        Ok("on") => true,
        Ok("off") | Err(_) => false,
        Ok(other) => panic!("KEYSCRIBE_SMOLVLM_SPLITTING is {other:?}, not on or off"),
    };
    let runs: usize = std::env::var("KEYSCRIBE_BENCH_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(3);
    let (model_dir, image_path) = fixture();
    let image = image::open(&image_path).unwrap().to_rgb8();
    // The reference runs first: a child process inherits its parent's peak RSS on Linux.
    let theirs = reference(&model_dir, &image_path, &dtype_name, splitting);
    let load_start = Instant::now();
    let mut model = SmolVlm::load(&model_dir, dtype, &Device::Cpu).unwrap();
    model.set_image_splitting(splitting);
    let load = load_start.elapsed().as_secs_f64();
    eprintln!("loaded {} ({dtype_name}) in {load:.1} s", model.name());
    run_once(&model, &image); // warm-up
    let timings: Vec<Timings> = (0..runs).map(|_| run_once(&model, &image)).collect();
    let pick = |f: fn(&Timings) -> f64| median(timings.iter().map(f).collect());
    let rows: [(&str, f64, &str, f64, bool); 5] = [
        (
            "preprocess (ms)",
            pick(|t| t.preprocess) * 1e3,
            "preprocess_s",
            1e3,
            false,
        ),
        (
            "vision tower + connector (ms)",
            pick(|t| t.vision) * 1e3,
            "vision_s",
            1e3,
            false,
        ),
        (
            "time to first token, from preprocessed pixels (ms)",
            pick(|t| t.time_to_first_token) * 1e3,
            "time_to_first_token_s",
            1e3,
            false,
        ),
        (
            "decode (tokens/s)",
            pick(|t| t.decode_tokens_per_s),
            "decode_tokens_per_s",
            1.0,
            true,
        ),
        (
            "30-token caption, image to text (s)",
            pick(|t| t.total),
            "total_s",
            1.0,
            false,
        ),
    ];
    println!(
        "\nSmolVLM {dtype_name}, splitting {}, {} prompt tokens, {runs} runs, medians, {THREADS} threads, {NEW_TOKENS} new tokens",
        if splitting { "on" } else { "off" },
        timings[0].prompt_tokens
    );
    println!("| stage | keyscribe | transformers | keyscribe speed-up |");
    println!("| --- | --- | --- | --- |");
    for (label, value, key, scale, higher_is_better) in rows {
        let reference = theirs
            .as_ref()
            .and_then(|t| t[key].as_f64())
            .map(|v| v * scale);
        let (column, ratio) = match reference {
            Some(r) if higher_is_better => (format!("{r:.1}"), format!("{:.2}x", value / r)),
            Some(r) => (format!("{r:.1}"), format!("{:.2}x", r / value)),
            None => ("-".into(), "-".into()),
        };
        println!("| {label} | {value:.1} | {column} | {ratio} |");
    }
    let rss = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} MiB"));
    println!(
        "\npeak RSS: keyscribe bench process {}, transformers reference process {}",
        rss(status_mib("VmHWM:")),
        rss(theirs.as_ref().and_then(|t| t["peak_rss_mib"].as_f64()))
    );
}
