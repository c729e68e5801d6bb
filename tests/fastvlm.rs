//! FastVLM against transformers' `FastVlmForConditionalGeneration`: preprocessing, image
//! features, last-position logits, 20 greedy tokens and token ids, in both checkpoint
//! layouts, on the fixtures made by `tests/fixtures/make_fastvlm.py`; strict loading of bad
//! checkpoints; and `keyscribe describe --json`.
//!
//! The parity tests read the committed tiny model (`fastvlm-tiny-hf`, `fastvlm-tiny-apple`,
//! the same weights in the two layouts, and `fastvlm-tiny-expected.*`), or the directory
//! named by `KEYSCRIBE_FASTVLM_FIXTURE` (the full-size FastVLM-0.5B with random weights that
//! `make_fastvlm.py --full-size DIR` writes: `DIR/hf`, `DIR/apple`, `DIR/expected.*`).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde::Deserialize;

use keyscribe::models::fastvlm::{FastVlm, Layout};
use keyscribe::models::generation::GenerationSettings;
use keyscribe::models::qwen2_tokenizer::chat_prompt;
use keyscribe::models::store::{self, ModelRole};
use keyscribe::pipeline::verify_model;

/// Largest difference allowed between our last-position logits and the reference's (f32).
const LOGITS_TOLERANCE: f32 = 1e-3;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The model directories (Apple layout, transformers layout) and the expected outputs'
/// path without extension.
struct Fixture {
    apple: PathBuf,
    transformers: PathBuf,
    expected: PathBuf,
}

fn fixture() -> Fixture {
    match std::env::var_os("KEYSCRIBE_FASTVLM_FIXTURE") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            Fixture {
                apple: dir.join("apple"),
                transformers: dir.join("hf"),
                expected: dir.join("expected"),
            }
        }
        None => Fixture {
            apple: fixtures().join("fastvlm-tiny-apple"),
            transformers: fixtures().join("fastvlm-tiny-hf"),
            expected: fixtures().join("fastvlm-tiny-expected"),
        },
    }
}

#[derive(Deserialize)]
struct Case {
    image: String,
    prompt: String,
    prompt_text: String,
    input_ids_hf: Vec<i64>,
    input_ids_apple: Vec<i64>,
    greedy_tokens: Vec<u32>,
    greedy_text: String,
}

#[derive(Deserialize)]
struct TokenizerCase {
    text: String,
    ids: Vec<u32>,
    ids_apple: Vec<u32>,
}

#[derive(Deserialize)]
struct Expected {
    cases: Vec<Case>,
    #[serde(default)]
    tokenizer_cases: Vec<TokenizerCase>,
}

struct Reference {
    expected: Expected,
    tensors: HashMap<String, Tensor>,
    dir: PathBuf,
}

impl Reference {
    fn load() -> Self {
        let base = fixture().expected;
        let json = base.with_extension("json");
        let text =
            std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("{}: {e}", json.display()));
        let tensors =
            candle_core::safetensors::load(base.with_extension("safetensors"), &Device::Cpu)
                .unwrap();
        Self {
            expected: serde_json::from_str(&text).unwrap(),
            tensors,
            dir: json.parent().unwrap().to_path_buf(),
        }
    }

    fn tensor(&self, case: usize, name: &str) -> &Tensor {
        let key = format!("case{case}.{name}");
        self.tensors
            .get(&key)
            .unwrap_or_else(|| panic!("the reference has no {key}"))
    }

    /// A tensor the reference stores for some cases only (the preprocessed pixels).
    fn optional_tensor(&self, case: usize, name: &str) -> Option<&Tensor> {
        self.tensors.get(&format!("case{case}.{name}"))
    }

    /// The case's image: paths are relative to the expected outputs, else to the fixtures.
    fn image(&self, case: &Case) -> RgbImage {
        let beside = self.dir.join(&case.image);
        let path = if beside.exists() {
            beside
        } else {
            fixtures().join(&case.image)
        };
        image::open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .to_rgb8()
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn load(dir: &Path, dtype: DType) -> FastVlm {
    FastVlm::load(dir, dtype, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn both_layouts() -> Vec<(PathBuf, FastVlm)> {
    let fixture = fixture();
    let apple = load(&fixture.apple, DType::F32);
    let transformers = load(&fixture.transformers, DType::F32);
    assert_eq!(apple.config().layout, Layout::Apple);
    assert_eq!(transformers.config().layout, Layout::Transformers);
    vec![(fixture.apple, apple), (fixture.transformers, transformers)]
}

#[test]
fn preprocessing_and_image_features_match_the_reference() {
    let reference = Reference::load();
    assert!(reference.optional_tensor(0, "pixel_values").is_some());
    for (dir, model) in both_layouts() {
        for (index, case) in reference.expected.cases.iter().enumerate() {
            let pixels = model.preprocess(&reference.image(case)).unwrap();
            if let Some(expected) = reference.optional_tensor(index, "pixel_values") {
                let diff = max_abs_diff(&pixels, expected);
                assert!(
                    diff <= 1e-6,
                    "{}: case {index} pixels differ by {diff}",
                    dir.display()
                );
            }
            let outputs = [
                ("vision_features", model.vision_features(&pixels).unwrap()),
                ("image_features", model.image_features(&pixels).unwrap()),
            ];
            for (name, ours) in outputs {
                let expected = reference.tensor(index, name);
                let diff = max_abs_diff(&ours, expected);
                let scale = max_abs(expected).max(1.0);
                assert!(
                    diff <= 1e-4 * scale,
                    "{}: case {index} {name} differ by {diff} (scale {scale})",
                    dir.display()
                );
            }
        }
    }
}

#[test]
fn prompts_and_input_ids_match_the_reference() {
    let reference = Reference::load();
    for (dir, model) in both_layouts() {
        for case in &reference.expected.cases {
            let prompt = chat_prompt(None, &format!("<image>\n{}", case.prompt));
            assert_eq!(prompt, case.prompt_text);
            let expected = match model.config().layout {
                Layout::Apple => &case.input_ids_apple,
                Layout::Transformers => &case.input_ids_hf,
            };
            assert_eq!(
                &model.input_ids(&prompt).unwrap(),
                expected,
                "{}",
                dir.display()
            );
        }
    }
}

#[test]
fn last_position_logits_match_the_reference_in_both_layouts() {
    let reference = Reference::load();
    for (dir, model) in both_layouts() {
        for (index, case) in reference.expected.cases.iter().enumerate() {
            let logits = model
                .prompt_logits(Some(&reference.image(case)), &case.prompt_text)
                .unwrap();
            let diff = max_abs_diff(&logits, reference.tensor(index, "last_logits"));
            assert!(
                diff <= LOGITS_TOLERANCE,
                "{}: case {index} logits differ by {diff}",
                dir.display()
            );
        }
    }
}

#[test]
fn twenty_greedy_tokens_match_the_reference_in_both_layouts() {
    let reference = Reference::load();
    for (dir, model) in both_layouts() {
        for (index, case) in reference.expected.cases.iter().enumerate() {
            let steps = case.greedy_tokens.len();
            assert!(steps >= 20, "the reference has only {steps} greedy tokens");
            let mut streamed = String::new();
            let generation = model
                .describe(
                    &reference.image(case),
                    &case.prompt,
                    &GenerationSettings::greedy(steps),
                    &mut |text| streamed.push_str(text),
                )
                .unwrap();
            assert_eq!(
                generation.token_ids,
                case.greedy_tokens,
                "{}: case {index}",
                dir.display()
            );
            assert_eq!(generation.text, case.greedy_text.trim());
            assert_eq!(streamed.trim(), generation.text);
            assert!(generation.time_to_first_token > generation.vision);
        }
    }
}

#[test]
fn token_ids_match_the_reference_tokenizers() {
    let reference = Reference::load();
    let cases = &reference.expected.tokenizer_cases;
    assert!(cases.len() >= 50, "only {} tokenizer cases", cases.len());
    for (_, model) in both_layouts() {
        for case in cases {
            let expected = match model.config().layout {
                Layout::Apple => &case.ids_apple,
                Layout::Transformers => &case.ids,
            };
            assert_eq!(
                &model.tokenizer().encode(&case.text).unwrap(),
                expected,
                "{:?} ({:?} layout)",
                case.text,
                model.config().layout
            );
        }
    }
}

#[test]
fn bf16_stays_close_to_f32() {
    let reference = Reference::load();
    let model = load(&fixture().transformers, DType::BF16);
    let case = &reference.expected.cases[0];
    let logits = model
        .prompt_logits(Some(&reference.image(case)), &case.prompt_text)
        .unwrap();
    let expected = reference.tensor(0, "last_logits");
    let diff = max_abs_diff(&logits, expected);
    let scale = max_abs(expected);
    assert!(
        diff <= 0.05 * scale,
        "bf16 logits differ by {diff} (scale {scale})"
    );
}

#[test]
fn sampling_is_reproducible_with_a_seed_and_respects_the_token_limit() {
    let reference = Reference::load();
    let model = load(&fixture().transformers, DType::F32);
    let image = reference.image(&reference.expected.cases[0]);
    let settings = GenerationSettings {
        max_new_tokens: 7,
        temperature: 1.0,
        top_p: 0.9,
        seed: 42,
    };
    let first = model
        .describe(&image, "Describe.", &settings, &mut |_| {})
        .unwrap();
    let second = model
        .describe(&image, "Describe.", &settings, &mut |_| {})
        .unwrap();
    assert_eq!(first.token_ids, second.token_ids);
    assert!(first.token_ids.len() <= 7);
}

/// Copies a fixture directory so a test can damage it.
fn copy_dir(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

#[test]
fn a_missing_tensor_is_named_with_its_expected_shape() {
    let dir = copy_dir(&fixtures().join("fastvlm-tiny-apple"));
    let path = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let removed = "model.mm_projector.2.weight";
    assert!(tensors.remove(removed).is_some());
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let error = FastVlm::load(dir.path(), DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(removed) && error.contains("missing"),
        "{error}"
    );
}

#[test]
fn an_extra_tensor_and_a_wrong_model_type_are_errors() {
    let dir = copy_dir(&fixtures().join("fastvlm-tiny-hf"));
    let path = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    tensors.insert(
        "model.language_model.layers.99.mlp.up_proj.weight".into(),
        Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let error = FastVlm::load(dir.path(), DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(error.contains("layers.99"), "{error}");

    let config_path = dir.path().join("config.json");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        config.replace("\"fast_vlm\"", "\"llava_llama\""),
    )
    .unwrap();
    let error = FastVlm::load(dir.path(), DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("config.json") && error.contains("llava_llama"),
        "{error}"
    );
}

#[test]
fn the_apple_tokenizer_needs_its_vocabulary() {
    let dir = copy_dir(&fixtures().join("fastvlm-tiny-apple"));
    std::fs::remove_file(dir.path().join("merges.txt")).unwrap();
    let error = FastVlm::load(dir.path(), DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(error.contains("merges.txt"), "{error}");
}

#[test]
fn describe_json_prints_one_object_with_the_greedy_caption() {
    let reference = Reference::load();
    let case = &reference.expected.cases[0];
    let image = {
        let beside = reference.dir.join(&case.image);
        if beside.exists() {
            beside
        } else {
            fixtures().join(&case.image)
        }
    };
    let output = common::keyscribe()
        .arg("describe")
        .arg("--captioner")
        .arg(&fixture().apple)
        .args([
            "--prompt",
            &case.prompt,
            "--greedy",
            "--json",
            "--max-tokens",
        ])
        .arg(case.greedy_tokens.len().to_string())
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let document: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let object = document.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["caption", "image", "token_ids", "tokens_per_s", "ttft_ms"]
    );
    assert_eq!(document["image"], image.display().to_string());
    assert_eq!(document["caption"], case.greedy_text.trim());
    let ids: Vec<u32> = serde_json::from_value(document["token_ids"].clone()).unwrap();
    assert_eq!(ids, case.greedy_tokens);
    assert!(document["ttft_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn describe_names_an_unreadable_image() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("notes.png");
    std::fs::write(&bogus, "not an image").unwrap();
    let output = common::keyscribe()
        .arg("describe")
        .arg("--captioner")
        .arg(fixtures().join("fastvlm-tiny-apple"))
        .arg(&bogus)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("notes.png"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn a_transformers_port_with_only_tokenizer_json_is_accepted_and_reads_the_same() {
    // transformers 5's `save_pretrained` writes `tokenizer.json` without `vocab.json` and
    // `merges.txt`. The other files are linked, not copied (the full-size fixture is large).
    let full = fixture().transformers;
    let port = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&full).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name != "vocab.json" && name != "merges.txt" {
            std::os::unix::fs::symlink(entry.path(), port.path().join(&name)).unwrap();
        }
    }
    assert!(!port.path().join("vocab.json").exists());

    // The check a directory named with `--captioner` goes through, and `models verify`.
    let manifest = store::manifest("FastVLM-0.5B").unwrap();
    let located = store::use_directory(manifest, port.path())
        .unwrap_or_else(|error| panic!("the check refused the port: {error}"));
    assert_eq!(located.dir, port.path());
    verify_model(ModelRole::Captioner, port.path()).unwrap();

    let reference = Reference::load();
    let original = load(&full, DType::F32);
    let model = load(port.path(), DType::F32);
    for case in &reference.expected.tokenizer_cases {
        assert_eq!(
            model.tokenizer().encode(&case.text).unwrap(),
            case.ids,
            "{:?}",
            case.text
        );
    }
    for (index, case) in reference.expected.cases.iter().enumerate() {
        assert_eq!(
            model.input_ids(&case.prompt_text).unwrap(),
            case.input_ids_hf
        );
        let image = reference.image(case);
        let logits = model
            .prompt_logits(Some(&image), &case.prompt_text)
            .unwrap();
        let diff = max_abs_diff(&logits, reference.tensor(index, "last_logits"));
        assert!(
            diff <= LOGITS_TOLERANCE,
            "case {index}: logits differ by {diff}"
        );
        let expected = original
            .prompt_logits(Some(&image), &case.prompt_text)
            .unwrap();
        assert_eq!(max_abs_diff(&logits, &expected), 0.0, "case {index}");
        let generation = model
            .describe(
                &image,
                &case.prompt,
                &GenerationSettings::greedy(case.greedy_tokens.len()),
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(generation.token_ids, case.greedy_tokens, "case {index}");
    }
}
