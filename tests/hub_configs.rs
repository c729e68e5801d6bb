//! The open models' real configuration files (rebuilt byte for byte, see
//! `tests/fixtures/hub-configs/README.md`) are the pinned ones and read as the real models.

use std::path::{Path, PathBuf};

use keyscribe::models::preprocess::Interpolation;
use keyscribe::models::siglip::read_config;
use keyscribe::models::smolvlm::processor::ImageProcessorConfig;
use keyscribe::models::store::manifest;

fn hub_configs(repo: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hub-configs")
        .join(repo)
}

/// Asserts that every file in `dir` has the SHA-256 that `model`'s manifest pins for it.
fn assert_pinned(dir: &Path, model: &str) {
    let manifest = manifest(model).unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let pinned = manifest
            .sha256
            .get(&name)
            .unwrap_or_else(|| panic!("{model} pins no {name}"));
        assert_eq!(
            &keyscribe::cache::file_sha256(&path).unwrap(),
            pinned,
            "{name}"
        );
        checked += 1;
    }
    assert!(checked >= 2, "{checked}");
    assert_eq!(manifest.check_pinned(dir, None).unwrap(), checked);
}

#[test]
fn siglip2_base_224s_own_files_read_as_the_published_architecture() {
    let dir = hub_configs("siglip2-base-patch16-224");
    assert_pinned(&dir, "SigLIP2-base-224");
    let config = read_config(
        &dir.join("config.json"),
        &dir.join("preprocessor_config.json"),
    )
    .unwrap();
    assert_eq!(config.name, "SigLIP2-base-patch16-224");
    let vision = &config.vision;
    assert_eq!(
        (
            vision.hidden_size,
            vision.num_hidden_layers,
            vision.num_attention_heads
        ),
        (768, 12, 12)
    );
    assert_eq!((vision.image_size, vision.patch_size), (224, 16));
    assert!(vision.use_head);
    let text = &config.text;
    assert_eq!(
        (text.vocab_size, text.max_position_embeddings),
        (256000, 64)
    );
    assert_eq!((text.hidden_size, text.num_hidden_layers), (768, 12));
}

#[test]
fn smolvlm_256ms_own_processor_files_split_into_512_tiles() {
    let dir = hub_configs("smolvlm-256m-instruct");
    assert_pinned(&dir, "SmolVLM-256M");
    let config = ImageProcessorConfig::from_dir(&dir, 1).unwrap();
    assert!(config.resize && config.splitting);
    assert_eq!((config.longest_edge, config.tile), (2048, 512));
    assert_eq!(config.filter, Interpolation::Lanczos);
    assert_eq!(config.image_seq_len, 64);
    assert_eq!((config.mean, config.std), ([0.5; 3], [0.5; 3]));
}
