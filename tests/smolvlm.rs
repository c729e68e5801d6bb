//! SmolVLM against transformers' `Idefics3ForConditionalGeneration` and the `Idefics3Processor`
//! that `AutoProcessor` loads: chat prompts, input ids and pixels for square, wide and tall
//! images with image splitting on and off, image features, last-position logits and 20 greedy
//! tokens, a text-only chat turn, bf16, sampling, and strict loading of damaged checkpoints.
//!
//! The tests read the committed tiny model (`tests/fixtures/smolvlm-tiny` and
//! `smolvlm-tiny-expected.*`, made by `tests/fixtures/make_smolvlm.py`), or the directory named
//! by `KEYSCRIBE_SMOLVLM_FIXTURE` (the full-size SmolVLM-256M with random weights that
//! `make_smolvlm.py --full-size DIR` writes: `DIR/model`, `DIR/expected.*`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde::Deserialize;

use keyscribe::models::generation::GenerationSettings;
use keyscribe::models::smolvlm::processor::{chat_prompt, TileGrid};
use keyscribe::models::smolvlm::SmolVlm;
use keyscribe::models::ModelError;

/// Largest difference allowed between our last-position logits and the reference's (f32).
const LOGITS_TOLERANCE: f32 = 1e-3;
/// Largest difference allowed between our pixels and the processor's.
const PIXEL_TOLERANCE: f32 = 1e-6;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The model directory and the expected outputs' path without extension.
fn fixture() -> (PathBuf, PathBuf) {
    match std::env::var_os("KEYSCRIBE_SMOLVLM_FIXTURE") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            (dir.join("model"), dir.join("expected"))
        }
        None => (
            fixtures().join("smolvlm-tiny"),
            fixtures().join("smolvlm-tiny-expected"),
        ),
    }
}

#[derive(Deserialize)]
struct Case {
    image: String,
    prompt: String,
    splitting: bool,
    prompt_text: String,
    input_ids: Vec<u32>,
    rows: usize,
    cols: usize,
    tiles: usize,
    greedy_tokens: Vec<u32>,
    greedy_margins: Vec<f32>,
    greedy_text: String,
}

#[derive(Deserialize)]
struct TextCase {
    system: String,
    user: String,
    prompt_text: String,
    input_ids: Vec<u32>,
    greedy_tokens: Vec<u32>,
    greedy_text: String,
}

#[derive(Deserialize)]
struct Expected {
    cases: Vec<Case>,
    text_case: TextCase,
}

struct Reference {
    expected: Expected,
    tensors: HashMap<String, Tensor>,
    dir: PathBuf,
}

impl Reference {
    fn load() -> Self {
        let base = fixture().1;
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

    fn tensor(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("the reference has no {key}"))
    }

    fn image(&self, case: &Case) -> RgbImage {
        let path = self.dir.join(&case.image);
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

fn load(dtype: DType) -> SmolVlm {
    let dir = fixture().0;
    SmolVlm::load(&dir, dtype, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// The model with splitting set as the case wants.
fn for_case(model: &mut SmolVlm, case: &Case) {
    model.set_image_splitting(case.splitting);
}

#[test]
fn the_checkpoint_says_to_split_and_the_setting_overrides_it() {
    let mut model = load(DType::F32);
    assert!(model.image_splitting());
    model.set_image_splitting(false);
    assert!(!model.image_splitting());
    let tile = model.config().processor.tile;
    let frame = RgbImage::from_pixel(320, 180, image::Rgb([10, 200, 30]));
    let single = model.preprocess(&frame).unwrap();
    assert_eq!(single.grid, TileGrid { rows: 0, cols: 0 });
    assert_eq!(single.pixels.dims(), [1, 3, tile as usize, tile as usize]);
}

#[test]
fn prompts_ids_and_pixels_match_the_processor() {
    let reference = Reference::load();
    let mut model = load(DType::F32);
    for (index, case) in reference.expected.cases.iter().enumerate() {
        for_case(&mut model, case);
        assert_eq!(chat_prompt(None, &case.prompt, true), case.prompt_text);
        let processed = model.preprocess(&reference.image(case)).unwrap();
        let label = format!(
            "case {index} ({}, splitting {})",
            case.image, case.splitting
        );
        assert_eq!(
            processed.grid,
            TileGrid {
                rows: case.rows,
                cols: case.cols
            },
            "{label}"
        );
        assert_eq!(processed.grid.images(), case.tiles, "{label}");
        let expected = reference.tensor(&format!("case{index}.pixel_values"));
        let diff = max_abs_diff(&processed.pixels, expected);
        assert!(diff <= PIXEL_TOLERANCE, "{label}: pixels differ by {diff}");
        assert_eq!(
            model
                .input_ids(&case.prompt_text, Some(processed.grid))
                .unwrap(),
            case.input_ids,
            "{label}"
        );
    }
    let text = &reference.expected.text_case;
    assert_eq!(
        chat_prompt(Some(&text.system), &text.user, false),
        text.prompt_text
    );
    assert_eq!(
        model.input_ids(&text.prompt_text, None).unwrap(),
        text.input_ids
    );
}

#[test]
fn image_features_and_last_logits_match_the_reference() {
    let reference = Reference::load();
    let mut model = load(DType::F32);
    for (index, case) in reference.expected.cases.iter().enumerate() {
        for_case(&mut model, case);
        let image = reference.image(case);
        let features = model
            .image_features(&model.preprocess(&image).unwrap().pixels)
            .unwrap();
        let expected = reference.tensor(&format!("case{index}.image_features"));
        let diff = max_abs_diff(&features, expected);
        let scale = max_abs(expected).max(1.0);
        assert!(
            diff <= 1e-4 * scale,
            "case {index}: image features differ by {diff} (scale {scale})"
        );
        let logits = model.prompt_logits(Some(&image), &case.input_ids).unwrap();
        let diff = max_abs_diff(
            &logits,
            reference.tensor(&format!("case{index}.last_logits")),
        );
        assert!(
            diff <= LOGITS_TOLERANCE,
            "case {index}: logits differ by {diff}"
        );
    }
    let text = &reference.expected.text_case;
    let logits = model.prompt_logits(None, &text.input_ids).unwrap();
    let diff = max_abs_diff(&logits, reference.tensor("text.last_logits"));
    assert!(diff <= LOGITS_TOLERANCE, "text: logits differ by {diff}");
}

#[test]
fn twenty_greedy_tokens_match_the_reference() {
    let reference = Reference::load();
    let mut model = load(DType::F32);
    for (index, case) in reference.expected.cases.iter().enumerate() {
        for_case(&mut model, case);
        let steps = case.greedy_tokens.len();
        assert!(steps >= 20, "the reference has only {steps} greedy tokens");
        let mut streamed = String::new();
        let generation = model
            .describe(
                &reference.image(case),
                &case.prompt,
                &GenerationSettings::greedy(steps),
                &mut |piece| streamed.push_str(piece),
            )
            .unwrap();
        assert_eq!(generation.token_ids, case.greedy_tokens, "case {index}");
        assert_eq!(generation.text, case.greedy_text.trim(), "case {index}");
        assert_eq!(streamed.trim(), generation.text, "case {index}");
        assert_eq!(generation.prompt_tokens, case.input_ids.len());
    }
    let text = &reference.expected.text_case;
    let generation = model
        .generate_text(
            Some(&text.system),
            &text.user,
            &GenerationSettings::greedy(text.greedy_tokens.len()),
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(generation.token_ids, text.greedy_tokens);
    assert_eq!(generation.text, text.greedy_text.trim());
}

#[test]
fn generation_stops_at_the_end_of_utterance() {
    let model = load(DType::F32);
    let end = model.tokenizer().token_id("<end_of_utterance>").unwrap();
    use keyscribe::models::generation::TokenText;
    assert!(model.tokenizer().stop_ids().contains(&end));
}

#[test]
fn sampling_is_reproducible_from_its_seed() {
    let reference = Reference::load();
    let mut model = load(DType::F32);
    let case = reference.expected.cases.last().unwrap();
    for_case(&mut model, case);
    let settings = GenerationSettings {
        max_new_tokens: 12,
        temperature: 0.8,
        top_p: 0.9,
        seed: 7,
    };
    let image = reference.image(case);
    let first = model
        .describe(&image, &case.prompt, &settings, &mut |_| {})
        .unwrap();
    let second = model
        .describe(&image, &case.prompt, &settings, &mut |_| {})
        .unwrap();
    assert_eq!(first.token_ids, second.token_ids);
    assert!(!first.token_ids.is_empty());
}

#[test]
fn bf16_runs_close_to_the_f32_reference() {
    let reference = Reference::load();
    let mut model = load(DType::BF16);
    for (index, case) in reference.expected.cases.iter().enumerate() {
        for_case(&mut model, case);
        let image = reference.image(case);
        let logits = model.prompt_logits(Some(&image), &case.input_ids).unwrap();
        let expected = reference.tensor(&format!("case{index}.last_logits"));
        let diff = max_abs_diff(&logits, expected);
        let scale = max_abs(expected);
        assert!(
            diff.is_finite() && diff <= 0.1 * scale,
            "case {index}: bf16 logits differ by {diff} (scale {scale})"
        );
        // bf16 products round the activations: the first token is the reference's where the
        // reference was decided by more than the error, else one it scored within the error.
        let best = logits.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        if case.greedy_margins[0] > 2.0 * diff {
            assert_eq!(best, case.greedy_tokens[0], "case {index}");
        } else {
            let scores = expected.to_vec1::<f32>().unwrap();
            let top = scores[case.greedy_tokens[0] as usize];
            assert!(top - scores[best as usize] <= 2.0 * diff, "case {index}");
        }
        let generation = model
            .describe(
                &image,
                &case.prompt,
                &GenerationSettings::greedy(8),
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(generation.token_ids.len(), 8);
        assert_eq!(generation.token_ids[0], best, "case {index}");
        assert!(!generation.text.is_empty());
    }
}

/// A copy of the tiny fixture whose weights `edit` changes.
fn damaged(edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> tempfile::TempDir {
    let source = fixtures().join("smolvlm-tiny");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let path = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, &path).unwrap();
    dir
}

fn load_error(dir: &Path) -> String {
    match SmolVlm::load(dir, DType::F32, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(error) => error.to_string(),
    }
}

#[test]
fn strict_loading_names_the_tensor() {
    let projection = "model.connector.modality_projection.proj.weight";
    let missing = damaged(|tensors| {
        tensors.remove(projection);
    });
    let error = load_error(missing.path());
    assert!(
        error.contains(projection) && error.contains("missing"),
        "{error}"
    );

    let layer = "model.vision_model.encoder.layers.1.mlp.fc2.weight";
    let misshapen = damaged(|tensors| {
        let shape = tensors[layer].dims().to_vec();
        tensors.insert(
            layer.to_string(),
            Tensor::zeros((shape[0], shape[1] + 1), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let error = load_error(misshapen.path());
    assert!(error.contains(layer), "{error}");

    let extra = "model.text_model.layers.0.self_attn.q_proj.bias";
    let unused = damaged(|tensors| {
        tensors.insert(
            extra.to_string(),
            Tensor::zeros(64, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let error = load_error(unused.path());
    assert!(
        error.contains(extra) && error.contains("not used"),
        "{error}"
    );
}

#[test]
fn a_fastvlm_directory_is_not_a_smolvlm() {
    let dir = fixtures().join("fastvlm-tiny-hf");
    let error = SmolVlm::load(&dir, DType::F32, &Device::Cpu).unwrap_err();
    assert!(matches!(error, ModelError::WrongModel { .. }), "{error}");
}
