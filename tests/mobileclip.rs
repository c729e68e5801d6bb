//! MobileCLIP2 against open_clip: image and text embeddings, preprocessing and token ids on
//! the fixtures made by `tests/fixtures/make_mobileclip.py`, strict loading of bad files,
//! and `keyscribe embed`.
//!
//! The parity tests read the committed reduced models (`mobileclip-s0-tiny`,
//! `mobileclip-s2-tiny`), or the directory named by `KEYSCRIBE_MOBILECLIP_FIXTURE` (e.g. the
//! full-size MobileCLIP2-S0 that `make_mobileclip.py --full-size DIR` writes).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde::Deserialize;

use keyscribe::models::mobileclip::{self, MobileClip};
use keyscribe::models::preprocess;

/// Cosine similarity required between our embeddings and open_clip's.
const MIN_COSINE: f64 = 0.9999;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The checkpoint directories the parity tests run on.
fn fixture_dirs() -> Vec<PathBuf> {
    match std::env::var_os("KEYSCRIBE_MOBILECLIP_FIXTURE") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => vec![
            fixtures().join("mobileclip-s0-tiny"),
            fixtures().join("mobileclip-s2-tiny"),
        ],
    }
}

#[derive(Deserialize)]
struct TokenizerReference {
    texts: Vec<String>,
    ids: Vec<Vec<u32>>,
}

/// `reference.json`: open_clip's outputs for the fixture's inputs.
#[derive(Deserialize)]
struct Reference {
    model: String,
    images: Vec<String>,
    image_embeddings: Vec<Vec<f32>>,
    texts: Vec<String>,
    text_embeddings: Vec<Vec<f32>>,
    tokenizer: TokenizerReference,
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

fn load(dir: &Path) -> MobileClip {
    MobileClip::load(dir, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Per-row cosine similarities of two `[n, d]` matrices.
fn row_cosines(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<f64> {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            let dot: f64 = x
                .iter()
                .zip(y)
                .map(|(p, q)| f64::from(*p) * f64::from(*q))
                .sum();
            let nx: f64 = x.iter().map(|p| f64::from(*p).powi(2)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|q| f64::from(*q).powi(2)).sum::<f64>().sqrt();
            dot / (nx * ny)
        })
        .collect()
}

/// Rows minus the mean row: what depends on the input.
fn centred(rows: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let n = rows.len() as f32;
    let mean: Vec<f32> = (0..rows[0].len())
        .map(|j| rows.iter().map(|r| r[j]).sum::<f32>() / n)
        .collect();
    rows.iter()
        .map(|r| r.iter().zip(&mean).map(|(v, m)| v - m).collect())
        .collect()
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Checks raw and centred cosines against the reference and prints the figures.
fn assert_parity(what: &str, dir: &Path, found: &Tensor, expected: &[Vec<f32>]) {
    let found = found.to_vec2::<f32>().unwrap();
    assert_eq!(found.len(), expected.len(), "{what}: row count");
    let raw = row_cosines(&found, expected);
    let centred_cos = row_cosines(&centred(&found), &centred(expected));
    let min_raw = raw.iter().copied().fold(1.0, f64::min);
    let min_centred = centred_cos.iter().copied().fold(1.0, f64::min);
    let diff = max_abs_diff(&found, expected);
    eprintln!(
        "{} {what}: min cosine {min_raw:.8}, min centred cosine {min_centred:.8}, max abs diff {diff:.2e}",
        dir.display()
    );
    assert!(min_raw >= MIN_COSINE, "{what}: cosines {raw:?}");
    assert!(
        min_centred >= MIN_COSINE,
        "{what}: centred cosines {centred_cos:?}"
    );
}

#[test]
fn image_embeddings_match_open_clip() {
    for dir in fixture_dirs() {
        let reference = reference(&dir);
        let model = load(&dir);
        let embeddings = model.embed_images(&images(&dir, &reference)).unwrap();
        assert_eq!(embeddings.dims(), &[reference.images.len(), model.dim()]);
        assert_parity("images", &dir, &embeddings, &reference.image_embeddings);
    }
}

/// open_clip's preprocessed inputs, as the 8-bit pixels they were computed from.
fn reference_pixels(dir: &Path) -> Tensor {
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("reference_pixels.safetensors"), &Device::Cpu)
            .unwrap();
    tensors["pixels_u8"].clone()
}

#[test]
fn preprocessing_gives_open_clips_pixels() {
    for dir in fixture_dirs() {
        let reference = reference(&dir);
        let model = load(&dir);
        let expected = reference_pixels(&dir);
        for (index, image) in images(&dir, &reference).iter().enumerate() {
            let prepared = model.preprocess().resize_and_crop(image).unwrap();
            let (width, height) = model.input_size();
            assert_eq!((prepared.width(), prepared.height()), (width, height));
            let planar = expected
                .get(index)
                .unwrap()
                .permute((1, 2, 0))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<u8>()
                .unwrap();
            let differing = planar
                .iter()
                .zip(prepared.as_raw())
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(
                differing,
                0,
                "{}: {} of {} values differ",
                reference.images[index],
                differing,
                planar.len()
            );
        }
    }
}

#[test]
fn embeddings_of_open_clips_pixels_match() {
    for dir in fixture_dirs() {
        let reference = reference(&dir);
        let model = load(&dir);
        let pixels = reference_pixels(&dir).to_dtype(DType::F32).unwrap();
        let normalization = model.preprocess().normalization;
        let mean = Tensor::new(&normalization.mean, &Device::Cpu)
            .unwrap()
            .reshape((1, 3, 1, 1))
            .unwrap();
        let std = Tensor::new(&normalization.std, &Device::Cpu)
            .unwrap()
            .reshape((1, 3, 1, 1))
            .unwrap();
        let input = (pixels / 255.0)
            .unwrap()
            .broadcast_sub(&mean)
            .unwrap()
            .broadcast_div(&std)
            .unwrap();
        let embeddings = model.embed_preprocessed(&input).unwrap();
        assert_parity(
            "preprocessed images",
            &dir,
            &embeddings,
            &reference.image_embeddings,
        );
    }
}

#[test]
fn text_embeddings_match_open_clip() {
    for dir in fixture_dirs() {
        let reference = reference(&dir);
        let model = load(&dir);
        let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
        let embeddings = model.embed_texts(&texts).unwrap();
        assert_parity("texts", &dir, &embeddings, &reference.text_embeddings);
    }
}

#[test]
fn token_ids_match_open_clip() {
    for dir in fixture_dirs() {
        let reference = reference(&dir);
        assert!(
            reference.tokenizer.texts.len() >= 50,
            "too few tokenizer strings"
        );
        let model = load(&dir);
        let mut mismatches = Vec::new();
        for (text, expected) in reference
            .tokenizer
            .texts
            .iter()
            .zip(&reference.tokenizer.ids)
        {
            let ids = model.tokenizer().encode(text).unwrap();
            if &ids != expected {
                mismatches.push(format!(
                    "{text:?}:\n  found    {ids:?}\n  expected {expected:?}"
                ));
            }
        }
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
        let batch = model.tokenize(&["a", "b"]).unwrap();
        assert_eq!(batch.dims(), &[2, model.tokenizer().context_length()]);
    }
}

#[test]
fn reference_names_the_model() {
    for dir in fixture_dirs() {
        let reference = reference(&dir);
        let config = mobileclip::read_config(&dir.join(mobileclip::CONFIG_FILE)).unwrap();
        assert!(
            reference.model.starts_with(&config.name[..14]),
            "{} vs {}",
            reference.model,
            config.name
        );
    }
}

/// A copy of the reduced S0 fixture whose weights are `tensors` (or the original's).
fn fixture_copy(tensors: Option<HashMap<String, Tensor>>) -> tempfile::TempDir {
    let source = fixtures().join("mobileclip-s0-tiny");
    let dir = tempfile::tempdir().unwrap();
    for file in [
        mobileclip::CONFIG_FILE,
        mobileclip::TOKENIZER_FILE,
        mobileclip::WEIGHTS_FILE,
    ] {
        std::fs::copy(source.join(file), dir.path().join(file)).unwrap();
    }
    if let Some(tensors) = tensors {
        candle_core::safetensors::save(&tensors, dir.path().join(mobileclip::WEIGHTS_FILE))
            .unwrap();
    }
    dir
}

fn fixture_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixtures()
            .join("mobileclip-s0-tiny")
            .join(mobileclip::WEIGHTS_FILE),
        &Device::Cpu,
    )
    .unwrap()
}

fn load_error(dir: &Path) -> String {
    MobileClip::load(dir, &Device::Cpu).unwrap_err().to_string()
}

#[test]
fn misshapen_tensor_is_named_with_both_shapes() {
    let mut tensors = fixture_tensors();
    let name = "visual.trunk.stages.1.blocks.0.mlp.fc1.weight";
    let shape = tensors[name].dims().to_vec();
    tensors.insert(
        name.into(),
        Tensor::zeros((shape[0] + 1, shape[1], 1, 1), DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = fixture_copy(Some(tensors));
    let error = load_error(dir.path());
    let found = format!("{:?}", [shape[0] + 1, shape[1], 1, 1]);
    assert!(
        error.contains(name) && error.contains(&found) && error.contains(&format!("{shape:?}")),
        "{error}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let mut tensors = fixture_tensors();
    let name = "text.transformer.resblocks.1.mlp.c_proj.bias";
    tensors.remove(name);
    let dir = fixture_copy(Some(tensors));
    let error = load_error(dir.path());
    assert!(error.contains(name) && error.contains("missing"), "{error}");
}

#[test]
fn unused_tensor_means_a_different_architecture() {
    let mut tensors = fixture_tensors();
    tensors.insert(
        "visual.trunk.stages.0.blocks.9.mlp.fc1.bias".into(),
        Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = fixture_copy(Some(tensors));
    let error = load_error(dir.path());
    assert!(
        error.contains("stages.0.blocks.9") && error.contains("not used"),
        "{error}"
    );
}

#[test]
fn truncated_weights_are_an_error_naming_the_file() {
    let dir = fixture_copy(None);
    let weights = dir.path().join(mobileclip::WEIGHTS_FILE);
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let error = load_error(dir.path());
    assert!(error.contains(mobileclip::WEIGHTS_FILE), "{error}");
}

#[test]
fn unsupported_configuration_is_refused() {
    let dir = fixture_copy(None);
    let config = dir.path().join(mobileclip::CONFIG_FILE);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("fastvit_mci0", "vit_base_patch16_224");
    std::fs::write(&config, text).unwrap();
    let error = load_error(dir.path());
    assert!(
        error.contains("vit_base_patch16_224") && error.contains(mobileclip::CONFIG_FILE),
        "{error}"
    );
}

#[test]
fn full_size_presets_describe_the_hub_checkpoints() {
    // The committed fixtures are reduced; the presets they override are the real sizes.
    let config = mobileclip::read_config(
        &fixtures()
            .join("mobileclip-s0-tiny")
            .join(mobileclip::CONFIG_FILE),
    )
    .unwrap();
    assert_eq!(config.text.context_length, 77);
    assert!(!config.text.causal);
    assert_eq!(
        config.preprocess.interpolation,
        preprocess::Interpolation::Bilinear
    );
    assert_eq!(
        config.preprocess.resize_mode,
        preprocess::ResizeMode::Shortest
    );
}

fn keyscribe(args: &[&str]) -> std::process::Output {
    common::keyscribe()
        .args(args)
        .output()
        .expect("the keyscribe binary runs")
}

#[test]
fn embed_json_has_one_row_per_input_in_order() {
    let dir = fixtures().join("mobileclip-s0-tiny");
    let reference = reference(&dir);
    let image_paths: Vec<String> = reference
        .images
        .iter()
        .take(3)
        .map(|name| dir.join(name).to_string_lossy().into_owned())
        .collect();
    let mut args = vec!["embed", "--embedder", dir.to_str().unwrap(), "--json"];
    args.extend(image_paths.iter().map(String::as_str));
    let output = keyscribe(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let document: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is one JSON document");
    assert_eq!(document["model"], "MobileCLIP2-S0 (reduced)");
    assert_eq!(document["dim"], 32);
    let rows: Vec<Vec<f32>> = serde_json::from_value(document["embeddings"].clone()).unwrap();
    assert_eq!(rows.len(), 3);
    let cosines = row_cosines(&rows, &reference.image_embeddings[..3]);
    assert!(cosines.iter().all(|&c| c >= MIN_COSINE), "{cosines:?}");

    let output = keyscribe(&[
        "embed",
        "--embedder",
        dir.to_str().unwrap(),
        "--json",
        "--text",
        &reference.texts[1],
        "--text",
        &reference.texts[0],
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rows: Vec<Vec<f32>> = serde_json::from_value(document["embeddings"].clone()).unwrap();
    let expected = vec![
        reference.text_embeddings[1].clone(),
        reference.text_embeddings[0].clone(),
    ];
    let cosines = row_cosines(&rows, &expected);
    assert!(cosines.iter().all(|&c| c >= MIN_COSINE), "{cosines:?}");
}

#[test]
fn embed_reports_an_unreadable_image_by_name() {
    let dir = fixtures().join("mobileclip-s0-tiny");
    let missing = dir.join("no-such-image.png");
    let output = keyscribe(&[
        "embed",
        "--embedder",
        dir.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no-such-image.png"), "{stderr}");
}
