//! FastVLM speed on 2 threads, stage by stage, next to transformers on the same weights and
//! inputs in the same run: preprocessing, the FastViTHD encoder, the projector, the prompt
//! prefill, time to first token, decode tokens/s, and peak memory.
//!
//! The weights are the full-size random FastVLM-0.5B of the fixture script:
//!
//! ```text
//! HF_HUB_OFFLINE=1 /opt/refpy/bin/python tests/fixtures/make_fastvlm.py --full-size target/fastvlm-0.5b-full
//! KEYSCRIBE_FASTVLM_FIXTURE=target/fastvlm-0.5b-full KEYSCRIBE_REFERENCE_PYTHON=/opt/refpy/bin/python \
//!     cargo bench --bench fastvlm
//! KEYSCRIBE_FASTVLM_DTYPE=bf16 ... cargo bench --bench fastvlm
//! ```
//!
//! Without `KEYSCRIBE_FASTVLM_FIXTURE` it times the tiny committed model (which only shows
//! that the bench works). `KEYSCRIBE_FASTVLM_DTYPE` picks f32 (default) or bf16 for both
//! implementations; `KEYSCRIBE_BENCH_RUNS` the repetitions (medians are reported).

#[path = "common/memory.rs"]
mod memory;
#[path = "common/reference.rs"]
mod reference;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};

use keyscribe::models::fastvlm::FastVlm;
use keyscribe::models::generation::parse_dtype;
use keyscribe::models::qwen2_tokenizer::chat_prompt;
use memory::status_mib;
use reference::run_reference;

/// Threads for both implementations.
const THREADS: usize = 2;
/// New tokens decoded per run (never stopped early).
const NEW_TOKENS: usize = 64;

/// The fixture directory: `hf/`, `apple/` and `expected.json`.
fn fixture() -> (PathBuf, PathBuf, PathBuf) {
    match std::env::var_os("KEYSCRIBE_FASTVLM_FIXTURE") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            (dir.join("hf"), dir.join("expected.json"), dir)
        }
        None => {
            eprintln!("KEYSCRIBE_FASTVLM_FIXTURE is not set: timing the tiny test model");
            let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
            (
                fixtures.join("fastvlm-tiny-hf"),
                fixtures.join("fastvlm-tiny-expected.json"),
                fixtures,
            )
        }
    }
}

/// A table row: label, keyscribe's figure, the reference's key and the factor to the row's
/// unit, and whether higher is better.
type Row = (&'static str, f64, Option<(&'static str, f64)>, bool);

/// One run's timings, in seconds.
#[derive(Default)]
struct Timings {
    preprocess: f64,
    vision: f64,
    projector: f64,
    prefill: f64,
    time_to_first_token: f64,
    decode_tokens_per_s: f64,
}

fn run_once(model: &FastVlm, image: &image::RgbImage, prompt: &str) -> Timings {
    let start = Instant::now();
    let pixels = model.preprocess(image).unwrap();
    let preprocessed = Instant::now();
    let tokens = model.image_tokens(&pixels).unwrap();
    let encoded = Instant::now();
    let features = model.project(&tokens).unwrap();
    let projected = Instant::now();
    let embeds = model.prompt_embeddings(prompt, Some(&features)).unwrap();
    let language = model.language();
    let mut cache = language.new_cache();
    let prefill_start = Instant::now();
    // Greedy decoding, as `describe` does it.
    let mut token = language.greedy_tokens(&embeds, &mut cache).unwrap()[0];
    let prefill = prefill_start.elapsed().as_secs_f64();
    let decode_start = Instant::now();
    for _ in 1..NEW_TOKENS {
        let ids = Tensor::new(&[token], &Device::Cpu).unwrap();
        let embedded = language.embed(&ids).unwrap().unsqueeze(0).unwrap();
        token = language.greedy_tokens(&embedded, &mut cache).unwrap()[0];
    }
    let decode = decode_start.elapsed().as_secs_f64();
    let vision = (encoded - preprocessed).as_secs_f64();
    let projector = (projected - encoded).as_secs_f64();
    let preprocess = (preprocessed - start).as_secs_f64();
    Timings {
        preprocess,
        vision,
        projector,
        prefill,
        time_to_first_token: preprocess + vision + projector + prefill,
        decode_tokens_per_s: (NEW_TOKENS - 1) as f64 / decode,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// transformers' figures from `benches/reference/fastvlm.py`, when a Python is given.
fn reference(dir: &Path, dtype: &str) -> Option<serde_json::Value> {
    let threads = THREADS.to_string();
    let new_tokens = NEW_TOKENS.to_string();
    let args = [
        dir.as_os_str(),
        "--threads".as_ref(),
        threads.as_ref(),
        "--dtype".as_ref(),
        dtype.as_ref(),
        "--new-tokens".as_ref(),
        new_tokens.as_ref(),
    ];
    run_reference("fastvlm.py", &args)
}

fn main() {
    keyscribe::allocator::reuse_freed_memory();
    std::env::set_var("RAYON_NUM_THREADS", THREADS.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build_global()
        .expect("the thread pool starts first");
    let dtype_name = std::env::var("KEYSCRIBE_FASTVLM_DTYPE").unwrap_or_else(|_| "f32".into());
    let dtype = parse_dtype(&dtype_name).expect("KEYSCRIBE_FASTVLM_DTYPE");
    let runs: usize = std::env::var("KEYSCRIBE_BENCH_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(3);
    let (model_dir, expected, base) = fixture();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&expected).expect("expected.json")).unwrap();
    let case = &expected["cases"][0];
    let image_path = {
        let beside = base.join(case["image"].as_str().unwrap());
        if beside.exists() {
            beside
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(case["image"].as_str().unwrap())
        }
    };
    let image = image::open(&image_path).unwrap().to_rgb8();
    let prompt = chat_prompt(
        None,
        &format!("<image>\n{}", case["prompt"].as_str().unwrap()),
    );
    // The reference runs first: a child process inherits its parent's peak RSS on Linux,
    // which would inflate its figure if this process had loaded the model already.
    let theirs = reference(&model_dir, &dtype_name);
    let load_start = Instant::now();
    let model = FastVlm::load(&model_dir, dtype, &Device::Cpu).unwrap();
    let load = load_start.elapsed().as_secs_f64();
    eprintln!("loaded {} ({dtype_name}) in {load:.1} s", model.name());
    run_once(&model, &image, &prompt); // warm-up
    let timings: Vec<Timings> = (0..runs)
        .map(|_| run_once(&model, &image, &prompt))
        .collect();
    let pick = |f: fn(&Timings) -> f64| median(timings.iter().map(f).collect());
    let vision_and_projector = pick(|t| t.vision + t.projector);
    let to_first_token = pick(|t| t.time_to_first_token - t.preprocess);
    let decode = pick(|t| t.decode_tokens_per_s);
    let rows: [Row; 8] = [
        (
            "preprocess: pad, resize, normalise (ms)",
            pick(|t| t.preprocess) * 1e3,
            None,
            false,
        ),
        ("vision encoder (ms)", pick(|t| t.vision) * 1e3, None, false),
        ("projector (ms)", pick(|t| t.projector) * 1e3, None, false),
        (
            "vision encoder + projector (ms)",
            vision_and_projector * 1e3,
            Some(("vision_s", 1e3)),
            false,
        ),
        (
            "LM prefill (ms)",
            pick(|t| t.prefill) * 1e3,
            Some(("prefill_s", 1e3)),
            false,
        ),
        (
            "time to first token, from preprocessed pixels (ms)",
            to_first_token * 1e3,
            Some(("time_to_first_token_s", 1e3)),
            false,
        ),
        (
            "decode (tokens/s)",
            decode,
            Some(("decode_tokens_per_s", 1.0)),
            true,
        ),
        (
            "all 64 new tokens (s)",
            to_first_token + (NEW_TOKENS - 1) as f64 / decode,
            Some(("total_s", 1.0)),
            false,
        ),
    ];
    println!(
        "\nFastVLM {dtype_name}, {runs} runs, medians, {THREADS} threads, {NEW_TOKENS} new tokens"
    );
    println!("| stage | keyscribe | transformers | keyscribe speed-up |");
    println!("| --- | --- | --- | --- |");
    for (label, value, key, higher_is_better) in rows {
        let reference = key.and_then(|(key, scale)| {
            theirs
                .as_ref()
                .and_then(|t| t[key].as_f64())
                .map(|v| v * scale)
        });
        let (column, ratio) = match reference {
            Some(r) if higher_is_better => (format!("{r:.1}"), format!("{:.2}x", value / r)),
            Some(r) => (format!("{r:.1}"), format!("{:.2}x", r / value)),
            None => ("-".into(), "-".into()),
        };
        println!("| {label} | {value:.1} | {column} | {ratio} |");
    }
    let rss = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} MiB"));
    println!(
        "\npeak RSS: keyscribe bench process {} (after the runs {}), transformers reference process {}",
        rss(status_mib("VmHWM:")),
        rss(status_mib("VmRSS:")),
        rss(theirs.as_ref().and_then(|t| t["peak_rss_mib"].as_f64()))
    );
}
