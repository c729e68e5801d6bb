//! SigLIP2 against transformers: the vision transformer, image and text embeddings, the
//! image processor's pixels and the tokenizer's ids on the fixtures made by
//! `tests/fixtures/make_siglip.py`, and strict loading of bad files.
//!
//! The parity tests read the committed reduced model (`siglip-tiny`), or the directory named
//! by `KEYSCRIBE_SIGLIP_FIXTURE` (e.g. the full-size SigLIP2-base-patch16-224 that
//! `make_siglip.py --full-size DIR` writes).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use keyscribe::models::siglip::vision::{VisionConfig, VisionTransformer};
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
