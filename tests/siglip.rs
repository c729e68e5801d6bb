//! SigLIP2 against transformers: the vision transformer, image and text embeddings, the
//! image processor's pixels and the tokenizer's ids on the fixtures made by
//! `tests/fixtures/make_siglip.py`, and strict loading of bad files.
//!
//! The parity tests read the committed reduced model (`siglip-tiny`), or the directory named
//! by `KEYSCRIBE_SIGLIP_FIXTURE` (e.g. the full-size SigLIP2-base-patch16-224 that
//! `make_siglip.py --full-size DIR` writes).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde::Deserialize;

use keyscribe::models::preprocess;
use keyscribe::models::siglip::vision::{VisionConfig, VisionTransformer};
use keyscribe::models::siglip::Siglip;
use keyscribe::models::weights::Checkpoint;

/// Cosine similarity required between our embeddings and transformers'.
const MIN_COSINE: f64 = 0.9999;

fn fixture_dir() -> PathBuf {
    match std::env::var_os("KEYSCRIBE_SIGLIP_FIXTURE") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/siglip-tiny"),
    }
}

/// `config.json`, the part the tests read.
#[derive(Deserialize)]
struct ModelConfig {
    vision_config: VisionConfig,
}

fn vision_config(dir: &Path) -> VisionConfig {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    serde_json::from_str::<ModelConfig>(&text)
        .unwrap()
        .vision_config
}

/// The tensors `make_siglip.py` wrote to `reference.safetensors`.
fn reference_tensor(dir: &Path, name: &str) -> Tensor {
    let tensors =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    tensors[name].to_dtype(DType::F32).unwrap()
}

/// Per-row cosine similarities of two `[n, d]` tensors.
fn row_cosines(a: &Tensor, b: &Tensor) -> Vec<f64> {
    let a = a.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    assert_eq!(a.len(), b.len(), "row counts differ");
    a.iter()
        .zip(&b)
        .map(|(x, y)| {
            assert_eq!(x.len(), y.len(), "row widths differ");
            let dot: f64 = x.iter().zip(y).map(|(p, q)| p * q).sum();
            let nx = x.iter().map(|p| p * p).sum::<f64>().sqrt();
            let ny = y.iter().map(|q| q * q).sum::<f64>().sqrt();
            dot / (nx * ny)
        })
        .collect()
}

fn assert_close_rows(what: &str, found: &Tensor, expected: &Tensor) {
    let cosines = row_cosines(found, expected);
    let worst = cosines.iter().copied().fold(1.0, f64::min);
    let diff = (found - expected)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    eprintln!("{what}: min cosine {worst:.8}, max abs diff {diff:.2e}");
    assert!(worst >= MIN_COSINE, "{what}: cosines {cosines:?}");
}

#[test]
fn vision_transformer_matches_transformers() {
    let dir = fixture_dir();
    let config = vision_config(&dir);
    let checkpoint = Checkpoint::open(&[dir.join("model.safetensors")]).unwrap();
    let vb = checkpoint.var_builder(DType::F32, &Device::Cpu, None);
    let tower = VisionTransformer::load(vb.pp("vision_model"), &config).unwrap();
    assert!(tower.has_head());

    let pixels = reference_tensor(&dir, "pixel_values");
    let hidden = tower.forward(&pixels).unwrap();
    let expected_hidden = reference_tensor(&dir, "last_hidden_state");
    assert_eq!(hidden.dims(), expected_hidden.dims());
    let (batch, positions, width) = hidden.dims3().unwrap();
    assert_eq!(positions, config.positions());
    assert_close_rows(
        "last hidden state (per position)",
        &hidden.reshape((batch * positions, width)).unwrap(),
        &expected_hidden.reshape((batch * positions, width)).unwrap(),
    );
    let pooled = tower.pool(&hidden).unwrap();
    assert_close_rows(
        "pooled output",
        &pooled,
        &reference_tensor(&dir, "pooler_output"),
    );
}

#[test]
fn vision_transformer_loads_without_its_head() {
    let dir = fixture_dir();
    let config = VisionConfig {
        use_head: false,
        ..vision_config(&dir)
    };
    let checkpoint = Checkpoint::open(&[dir.join("model.safetensors")]).unwrap();
    let vb = checkpoint.var_builder(DType::F32, &Device::Cpu, None);
    let tower = VisionTransformer::load(vb.pp("vision_model"), &config).unwrap();
    assert!(!tower.has_head());
    let pixels = reference_tensor(&dir, "pixel_values");
    let hidden = tower.forward(&pixels).unwrap();
    let (batch, positions, width) = hidden.dims3().unwrap();
    assert_close_rows(
        "last hidden state without the head",
        &hidden.reshape((batch * positions, width)).unwrap(),
        &reference_tensor(&dir, "last_hidden_state")
            .reshape((batch * positions, width))
            .unwrap(),
    );
    assert!(tower.pool(&hidden).is_err());
    // The head's tensors were not read.
    assert!(checkpoint
        .ensure_all_used(|name| !name.starts_with("vision_model."))
        .is_err());
}

#[derive(Deserialize)]
struct TokenizerCases {
    texts: Vec<String>,
    ids: Vec<Vec<u32>>,
}

/// `reference.json`: transformers' outputs for the fixture's inputs.
#[derive(Deserialize)]
struct Reference {
    image_processor: String,
    tokenizer: String,
    images: Vec<String>,
    image_embeddings: Vec<Vec<f32>>,
    texts: Vec<String>,
    text_ids: Vec<Vec<u32>>,
    text_embeddings: Vec<Vec<f32>>,
    logit_scale: f32,
    logit_bias: f32,
    tokenizer_cases: TokenizerCases,
}

fn reference(dir: &Path) -> Reference {
    let path = dir.join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn images(dir: &Path, reference: &Reference) -> Vec<RgbImage> {
    reference
        .images
        .iter()
        .map(|name| image::open(dir.join(name)).unwrap().to_rgb8())
        .collect()
}

fn load(dir: &Path) -> Siglip {
    Siglip::load(dir, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn rows(rows: &[Vec<f32>]) -> Tensor {
    let width = rows[0].len();
    Tensor::from_vec(rows.concat(), (rows.len(), width), &Device::Cpu).unwrap()
}

#[test]
fn reference_used_the_default_processor_classes() {
    let reference = reference(&fixture_dir());
    // What `AutoProcessor` picks in transformers 5.24 with torchvision installed.
    assert_eq!(reference.image_processor, "SiglipImageProcessor");
    assert_eq!(reference.tokenizer, "GemmaTokenizer");
}

#[test]
fn processor_pixels_match_transformers() {
    let dir = fixture_dir();
    let reference = reference(&dir);
    let model = load(&dir);
    let pixels = model.preprocess(&images(&dir, &reference)).unwrap();
    let expected = reference_tensor(&dir, "pixel_values");
    assert_eq!(pixels.dims(), expected.dims());
    let diff = (&pixels - &expected)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    eprintln!("processor pixels: max abs diff {diff:.2e}");
    assert!(diff <= 1e-5, "pixels differ by up to {diff}");
}

#[test]
fn image_embeddings_match_transformers() {
    let dir = fixture_dir();
    let reference = reference(&dir);
    let model = load(&dir);
    let found = model.embed_images(&images(&dir, &reference)).unwrap();
    assert_eq!(found.dims(), [reference.images.len(), model.dim()]);
    assert_close_rows(
        "image embeddings",
        &found,
        &rows(&reference.image_embeddings),
    );
}

#[test]
fn frames_at_the_input_size_skip_the_resize() {
    let dir = fixture_dir();
    let reference = reference(&dir);
    let model = load(&dir);
    let pictures = images(&dir, &reference);
    let (width, height) = model.input_size();
    let stretched: Vec<RgbImage> = pictures
        .iter()
        .map(|image| {
            preprocess::resize_torchvision(
                image,
                width,
                height,
                preprocess::Interpolation::Bilinear,
            )
        })
        .collect();
    let fast = model.embed_resized(&stretched).unwrap();
    let full = model.embed_images(&pictures).unwrap();
    assert_eq!(
        fast.to_vec2::<f32>().unwrap(),
        full.to_vec2::<f32>().unwrap()
    );
    // The fixture's pictures are not at the input size: the fast path refuses them.
    assert_ne!(pictures[0].dimensions(), (width, height));
    assert!(model.embed_resized(&pictures[..1]).is_err());
}

#[test]
fn text_embeddings_match_transformers() {
    let dir = fixture_dir();
    let reference = reference(&dir);
    let model = load(&dir);
    let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
    let ids = model.tokenize(&texts).unwrap().to_vec2::<u32>().unwrap();
    assert_eq!(ids, reference.text_ids);
    let found = model.embed_texts(&texts).unwrap();
    assert_eq!(found.dims(), [texts.len(), model.dim()]);
    assert_close_rows("text embeddings", &found, &rows(&reference.text_embeddings));
}

#[test]
fn token_ids_match_transformers() {
    let dir = fixture_dir();
    let reference = reference(&dir);
    let model = load(&dir);
    let cases = &reference.tokenizer_cases;
    assert!(cases.texts.len() >= 100 || std::env::var_os("KEYSCRIBE_SIGLIP_FIXTURE").is_some());
    let mut mismatches = Vec::new();
    for (text, expected) in cases.texts.iter().zip(&cases.ids) {
        let found = model.tokenizer().encode(text).unwrap();
        if &found != expected {
            mismatches.push(format!("{text:?}: {found:?} != {expected:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} texts differ:\n{}",
        mismatches.len(),
        cases.texts.len(),
        mismatches.join("\n")
    );
}

#[test]
fn loads_with_its_name_and_logit_parameters() {
    let dir = fixture_dir();
    let reference = reference(&dir);
    let model = load(&dir);
    let config = &model.config().vision;
    if std::env::var_os("KEYSCRIBE_SIGLIP_FIXTURE").is_none() {
        assert_eq!(model.name(), "SigLIP-w64-d2-patch16-64");
    }
    assert_eq!(
        model.input_size(),
        (config.image_size as u32, config.image_size as u32)
    );
    assert_eq!(model.logit_scale(), reference.logit_scale);
    assert_eq!(model.logit_bias(), reference.logit_bias);
    assert_eq!(model.embed_texts(&[]).unwrap().dims(), [0, model.dim()]);
    assert_eq!(model.embed_images(&[]).unwrap().dims(), [0, model.dim()]);
}

/// The files of the tiny fixture's checkpoint.
const CHECKPOINT_FILES: [&str; 6] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
];

/// A copy of the tiny fixture whose weights are `tensors` (or the original's).
fn fixture_copy(tensors: Option<HashMap<String, Tensor>>) -> tempfile::TempDir {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/siglip-tiny");
    let dir = tempfile::tempdir().unwrap();
    for file in CHECKPOINT_FILES {
        std::fs::copy(source.join(file), dir.path().join(file)).unwrap();
    }
    if let Some(tensors) = tensors {
        candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    }
    dir
}

fn fixture_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/siglip-tiny/model.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

fn load_error(dir: &Path) -> String {
    Siglip::load(dir, &Device::Cpu).unwrap_err().to_string()
}

#[test]
fn missing_tensor_is_named() {
    for name in [
        "vision_model.encoder.layers.1.self_attn.k_proj.bias",
        "vision_model.head.probe",
        "text_model.head.weight",
        "logit_bias",
    ] {
        let mut tensors = fixture_tensors();
        tensors.remove(name);
        let dir = fixture_copy(Some(tensors));
        let error = load_error(dir.path());
        assert!(error.contains(name) && error.contains("missing"), "{error}");
    }
}

#[test]
fn misshapen_tensor_is_named_with_both_shapes() {
    let mut tensors = fixture_tensors();
    let name = "text_model.encoder.layers.0.mlp.fc1.weight";
    let shape = tensors[name].dims().to_vec();
    tensors.insert(
        name.into(),
        Tensor::zeros((shape[0] + 1, shape[1]), DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = fixture_copy(Some(tensors));
    let error = load_error(dir.path());
    let found = format!("{:?}", [shape[0] + 1, shape[1]]);
    assert!(
        error.contains(name) && error.contains(&found) && error.contains(&format!("{shape:?}")),
        "{error}"
    );
}

#[test]
fn unused_tensor_means_a_different_architecture() {
    let mut tensors = fixture_tensors();
    tensors.insert(
        "vision_model.encoder.layers.2.mlp.fc1.bias".into(),
        Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = fixture_copy(Some(tensors));
    let error = load_error(dir.path());
    assert!(
        error.contains("layers.2") && error.contains("not used"),
        "{error}"
    );
}

#[test]
fn missing_files_are_listed() {
    let dir = fixture_copy(None);
    std::fs::remove_file(dir.path().join("preprocessor_config.json")).unwrap();
    std::fs::remove_file(dir.path().join("special_tokens_map.json")).unwrap();
    let error = load_error(dir.path());
    assert!(
        error.contains("preprocessor_config.json") && error.contains("special_tokens_map.json"),
        "{error}"
    );
}

#[test]
fn unsupported_processor_settings_are_refused() {
    let dir = fixture_copy(None);
    let path = dir.path().join("preprocessor_config.json");
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        original.replace("\"resample\": 2", "\"resample\": 3"),
    )
    .unwrap();
    let error = load_error(dir.path());
    assert!(error.contains("resample"), "{error}");
    std::fs::write(&path, original.replace("\"height\": 64", "\"height\": 96")).unwrap();
    let error = load_error(dir.path());
    assert!(error.contains("size"), "{error}");
}

#[test]
fn bf16_weights_stay_close_to_the_reference() {
    let dir = fixture_dir();
    let reference = reference(&dir);
    let model = Siglip::load_with_dtype(&dir, DType::BF16, &Device::Cpu).unwrap();
    let images = model.embed_images(&images(&dir, &reference)).unwrap();
    let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
    let texts = model.embed_texts(&texts).unwrap();
    for (what, found, expected) in [
        ("bf16 image embeddings", images, &reference.image_embeddings),
        ("bf16 text embeddings", texts, &reference.text_embeddings),
    ] {
        let cosines = row_cosines(&found, &rows(expected));
        let worst = cosines.iter().copied().fold(1.0, f64::min);
        eprintln!("{what}: min cosine {worst:.6}");
        assert!(worst >= 0.99, "{what}: cosines {cosines:?}");
    }
}
