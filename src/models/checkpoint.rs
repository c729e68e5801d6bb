//! What a checkpoint directory must hold: one rule, from the layout the directory's own
//! configuration declares, used by the loaders and by every check of a directory before
//! loading (`--embedder DIR`, `--captioner DIR`, the Hugging Face cache, `models verify`).
//!
//! | layout | detected by | needs |
//! | --- | --- | --- |
//! | open_clip (MobileCLIP2) | `open_clip_config.json` | that file, `open_clip_model.safetensors`, `tokenizer.json` |
//! | FastVLM, Apple's (`llava_qwen2`) or the transformers port (`fast_vlm`) | `config.json`'s `model_type` | `config.json`; `model.safetensors`, or `model.safetensors.index.json` and every shard it lists; `tokenizer.json`, or `vocab.json` + `merges.txt` |
//! | SmolVLM (`idefics3`) | `config.json`'s `model_type` | `config.json`; the weights as for FastVLM; `tokenizer.json`; `preprocessor_config.json` |
//! | SigLIP2 fixed resolution (`siglip`) | `config.json`'s `model_type` | `config.json` + `preprocessor_config.json`; `model.safetensors`; `tokenizer.json` + `tokenizer_config.json` + `special_tokens_map.json` |
//!
//! Where alternatives exist the first one present is read: transformers 5's
//! `save_pretrained` writes a FastVLM with `tokenizer.json` alone, Apple's repositories
//! ship `vocab.json` + `merges.txt` (and the added tokens in `tokenizer_config.json` or
//! `added_tokens.json`, read when present).

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::fastvlm;
use super::store::ModelRole;
use super::{read_json, ModelError};

/// open_clip's configuration file, whose presence marks its layout.
pub const OPEN_CLIP_CONFIG: &str = "open_clip_config.json";
/// open_clip's weights file.
pub const OPEN_CLIP_WEIGHTS: &str = "open_clip_model.safetensors";
/// The transformers configuration file, whose `model_type` names the layout.
pub const CONFIG: &str = "config.json";
/// The weights of a transformers-style checkpoint in one file.
pub const WEIGHTS: &str = "model.safetensors";
/// The index of a transformers-style checkpoint's weight shards.
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
/// The Hugging Face tokenizer file.
pub const TOKENIZER_JSON: &str = "tokenizer.json";
/// The `model_type` of SmolVLM's checkpoints (transformers' Idefics3).
pub const IDEFICS3: &str = "idefics3";
/// A byte-level BPE vocabulary.
pub const VOCAB: &str = "vocab.json";
/// A byte-level BPE merge list.
pub const MERGES: &str = "merges.txt";
/// A transformers image processor's configuration.
pub const PREPROCESSOR_CONFIG: &str = "preprocessor_config.json";
/// A transformers tokenizer's configuration (special tokens, BOS/EOS, padding side).
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
/// A transformers tokenizer's special tokens.
pub const SPECIAL_TOKENS_MAP: &str = "special_tokens_map.json";
/// `config.json`'s `model_type` of SigLIP and fixed-resolution SigLIP2 checkpoints.
pub const SIGLIP_MODEL_TYPE: &str = "siglip";

/// How a checkpoint directory is laid out, as its configuration file declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointLayout {
    /// open_clip's, as the Hub serves MobileCLIP2 (`timm/MobileCLIP2-S0-OpenCLIP`).
    OpenClip,
    /// A FastVLM in one of its two published layouts.
    FastVlm(fastvlm::Layout),
    /// A SmolVLM: transformers' Idefics3 layout (`HuggingFaceTB/SmolVLM-256M-Instruct`).
    SmolVlm,
    /// transformers' `SiglipModel`, as the fixed-resolution SigLIP2 checkpoints ship it
    /// (`google/siglip2-base-patch16-224`).
    Siglip,
}

impl CheckpointLayout {
    /// The layout `dir` declares: `open_clip_config.json` makes it open_clip's, else
    /// `config.json`'s `model_type` names a FastVLM layout or SmolVLM's (`idefics3`). `None`
    /// when the directory has neither file; a `model_type` keyscribe does not read is an
    /// error naming it.
    pub fn detect(dir: &Path) -> Result<Option<Self>, ModelError> {
        if dir.join(OPEN_CLIP_CONFIG).is_file() {
            return Ok(Some(CheckpointLayout::OpenClip));
        }
        let path = dir.join(CONFIG);
        let Some(config) = read_json(&path)? else {
            return Ok(None);
        };
        let model_type = config.get("model_type").and_then(Value::as_str);
        if model_type == Some(IDEFICS3) {
            return Ok(Some(CheckpointLayout::SmolVlm));
        }
        if model_type == Some(SIGLIP_MODEL_TYPE) {
            return Ok(Some(CheckpointLayout::Siglip));
        }
        match model_type.and_then(fastvlm::Layout::from_model_type) {
            Some(layout) => Ok(Some(CheckpointLayout::FastVlm(layout))),
            None => Err(ModelError::Config {
                path,
                problem: format!(
                    "`model_type` is {model_type:?}; keyscribe reads FastVLM (`llava_qwen2`, \
                     `fast_vlm`), SmolVLM (`{IDEFICS3}`), SigLIP2 (`{SIGLIP_MODEL_TYPE}`) and \
                     open_clip MobileCLIP2 checkpoints (`{OPEN_CLIP_CONFIG}`)"
                ),
            }),
        }
    }

    /// The layout a model of `role` is usually published in: the one whose files a
    /// directory without any configuration file is told it lacks.
    pub fn usual_for(role: ModelRole) -> Self {
        match role {
            ModelRole::Embedder => CheckpointLayout::OpenClip,
            ModelRole::Captioner => CheckpointLayout::FastVlm(fastvlm::Layout::Apple),
        }
    }

    /// What models of this layout are for.
    pub fn role(self) -> ModelRole {
        match self {
            CheckpointLayout::OpenClip | CheckpointLayout::Siglip => ModelRole::Embedder,
            CheckpointLayout::FastVlm(_) | CheckpointLayout::SmolVlm => ModelRole::Captioner,
        }
    }

    /// What the layout needs.
    fn requirements(self, dir: &Path) -> Result<Requirements, ModelError> {
        let one = |file: &str| vec![vec![file.to_string()]];
        let all = |files: &[&str]| vec![files.iter().map(|file| file.to_string()).collect()];
        Ok(match self {
            CheckpointLayout::Siglip => Requirements {
                config: all(&[CONFIG, PREPROCESSOR_CONFIG]),
                weights: one(WEIGHTS),
                tokenizer: all(&[TOKENIZER_JSON, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP]),
            },
            CheckpointLayout::OpenClip => Requirements {
                config: one(OPEN_CLIP_CONFIG),
                weights: one(OPEN_CLIP_WEIGHTS),
                tokenizer: one(TOKENIZER_JSON),
            },
            CheckpointLayout::FastVlm(_) => Requirements {
                config: one(CONFIG),
                weights: transformers_weights(dir)?,
                tokenizer: vec![
                    vec![TOKENIZER_JSON.to_string()],
                    vec![VOCAB.to_string(), MERGES.to_string()],
                ],
            },
            CheckpointLayout::SmolVlm => Requirements {
                config: vec![vec![CONFIG.to_string(), PREPROCESSOR_CONFIG.to_string()]],
                weights: transformers_weights(dir)?,
                tokenizer: one(TOKENIZER_JSON),
            },
        })
    }
}

/// The weights of a transformers checkpoint: `model.safetensors`, or the index and every
/// shard it lists.
fn transformers_weights(dir: &Path) -> Result<Alternatives, ModelError> {
    let mut sharded = vec![WEIGHTS_INDEX.to_string()];
    let index = dir.join(WEIGHTS_INDEX);
    if !dir.join(WEIGHTS).is_file() && index.is_file() {
        sharded.extend(shards_listed_by(&index)?);
    }
    Ok(vec![vec![WEIGHTS.to_string()], sharded])
}

/// One need of a layout: met by any one of the alternatives, in order of preference; an
/// alternative by all of its files.
type Alternatives = Vec<Vec<String>>;

/// The needs of a layout.
struct Requirements {
    config: Alternatives,
    weights: Alternatives,
    tokenizer: Alternatives,
}

/// The first alternative whose files are all in `dir`; else `None`, with what each
/// alternative lacks added to `missing` (`a + b or c`).
fn choose(
    dir: &Path,
    alternatives: &Alternatives,
    missing: &mut Vec<String>,
) -> Option<Vec<String>> {
    let absent: Vec<Vec<&str>> = alternatives
        .iter()
        .map(|files| {
            files
                .iter()
                .filter(|file| !dir.join(file).is_file())
                .map(String::as_str)
                .collect()
        })
        .collect();
    match absent.iter().position(Vec::is_empty) {
        Some(index) => Some(alternatives[index].clone()),
        None => {
            let described: Vec<String> = absent.iter().map(|files| files.join(" + ")).collect();
            missing.push(described.join(" or "));
            None
        }
    }
}

impl fmt::Display for CheckpointLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckpointLayout::OpenClip => "an open_clip (MobileCLIP2) checkpoint",
            CheckpointLayout::FastVlm(fastvlm::Layout::Apple) => {
                "Apple's FastVLM checkpoint (`llava_qwen2`)"
            }
            CheckpointLayout::FastVlm(fastvlm::Layout::Transformers) => {
                "a transformers FastVLM checkpoint (`fast_vlm`)"
            }
            CheckpointLayout::SmolVlm => "a SmolVLM checkpoint (`idefics3`)",
            CheckpointLayout::Siglip => "a SigLIP2 checkpoint (`siglip`)",
        })
    }
}

/// Where a FastVLM's tokenizer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerFiles {
    /// A Hugging Face `tokenizer.json`.
    Json(PathBuf),
    /// A BPE vocabulary and merge list; the added tokens come from the files beside them.
    VocabAndMerges {
        /// `vocab.json`.
        vocab: PathBuf,
        /// `merges.txt`.
        merges: PathBuf,
    },
}

/// The files of a checkpoint directory, found by its layout's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointFiles {
    /// An open_clip checkpoint.
    OpenClip {
        /// `open_clip_config.json`.
        config: PathBuf,
        /// `open_clip_model.safetensors`.
        weights: PathBuf,
        /// `tokenizer.json`.
        tokenizer: PathBuf,
    },
    /// A FastVLM checkpoint.
    FastVlm {
        /// Which of the two layouts.
        layout: fastvlm::Layout,
        /// `config.json`.
        config: PathBuf,
        /// `model.safetensors`, or the shards the index lists.
        weights: Vec<PathBuf>,
        /// The tokenizer's files.
        tokenizer: TokenizerFiles,
    },
    /// A SmolVLM (Idefics3) checkpoint.
    SmolVlm {
        /// `config.json`.
        config: PathBuf,
        /// `preprocessor_config.json`.
        preprocessor: PathBuf,
        /// `model.safetensors`, or the shards the index lists.
        weights: Vec<PathBuf>,
        /// `tokenizer.json`.
        tokenizer: PathBuf,
    },
    /// A SigLIP2 checkpoint.
    Siglip {
        /// `config.json`.
        config: PathBuf,
        /// `preprocessor_config.json`.
        preprocessor: PathBuf,
        /// `model.safetensors`.
        weights: PathBuf,
        /// `tokenizer.json`.
        tokenizer: PathBuf,
        /// `tokenizer_config.json`.
        tokenizer_config: PathBuf,
        /// `special_tokens_map.json`.
        special_tokens_map: PathBuf,
    },
}

impl CheckpointFiles {
    /// Finds the files of the checkpoint in `dir`, by the layout it declares (a directory
    /// without any configuration file is checked as `assumed`'s usual layout, so the error
    /// names what is missing). Every missing file is named in one error.
    pub fn find(dir: &Path, assumed: ModelRole) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such directory (expected a model checkpoint directory)",
                ),
            });
        }
        let layout = CheckpointLayout::detect(dir)?.unwrap_or(CheckpointLayout::usual_for(assumed));
        let needs = layout.requirements(dir)?;
        let mut missing = Vec::new();
        let config = choose(dir, &needs.config, &mut missing);
        let weights = choose(dir, &needs.weights, &mut missing);
        let tokenizer = choose(dir, &needs.tokenizer, &mut missing);
        let (Some(config), Some(weights), Some(tokenizer)) = (config, weights, tokenizer) else {
            return Err(ModelError::MissingFiles {
                dir: dir.to_path_buf(),
                files: missing,
                layout: layout.to_string(),
            });
        };
        // Every alternative names at least one file.
        let path = |file: &String| dir.join(file);
        let weight_files = || match weights.split_first() {
            // The index holds no tensors; its shards do.
            Some((index, shards)) if index == WEIGHTS_INDEX => shards.iter().map(path).collect(),
            _ => weights.iter().map(path).collect(),
        };
        Ok(match layout {
            CheckpointLayout::Siglip => CheckpointFiles::Siglip {
                config: path(&config[0]),
                preprocessor: path(&config[1]),
                weights: path(&weights[0]),
                tokenizer: path(&tokenizer[0]),
                tokenizer_config: path(&tokenizer[1]),
                special_tokens_map: path(&tokenizer[2]),
            },
            CheckpointLayout::OpenClip => CheckpointFiles::OpenClip {
                config: path(&config[0]),
                weights: path(&weights[0]),
                tokenizer: path(&tokenizer[0]),
            },
            CheckpointLayout::SmolVlm => CheckpointFiles::SmolVlm {
                config: path(&config[0]),
                preprocessor: path(&config[1]),
                weights: weight_files(),
                tokenizer: path(&tokenizer[0]),
            },
            CheckpointLayout::FastVlm(fastvlm_layout) => CheckpointFiles::FastVlm {
                layout: fastvlm_layout,
                config: path(&config[0]),
                weights: weight_files(),
                tokenizer: match tokenizer.as_slice() {
                    [vocab, merges] => TokenizerFiles::VocabAndMerges {
                        vocab: path(vocab),
                        merges: path(merges),
                    },
                    _ => TokenizerFiles::Json(path(&tokenizer[0])),
                },
            },
        })
    }

    /// The layout the files were found by.
    pub fn layout(&self) -> CheckpointLayout {
        match self {
            CheckpointFiles::OpenClip { .. } => CheckpointLayout::OpenClip,
            CheckpointFiles::FastVlm { layout, .. } => CheckpointLayout::FastVlm(*layout),
            CheckpointFiles::SmolVlm { .. } => CheckpointLayout::SmolVlm,
            CheckpointFiles::Siglip { .. } => CheckpointLayout::Siglip,
        }
    }

    /// The safetensors files holding the weights.
    pub fn weights(&self) -> &[PathBuf] {
        match self {
            CheckpointFiles::OpenClip { weights, .. } | CheckpointFiles::Siglip { weights, .. } => {
                std::slice::from_ref(weights)
            }
            CheckpointFiles::FastVlm { weights, .. } | CheckpointFiles::SmolVlm { weights, .. } => {
                weights
            }
        }
    }

    /// The error for a directory that holds another kind of model than `wanted`.
    pub fn not_a(&self, wanted: ModelRole, dir: &Path) -> ModelError {
        ModelError::WrongModel {
            dir: dir.to_path_buf(),
            found: self.layout().to_string(),
            wanted: wanted.with_article().to_string(),
        }
    }
}

/// The shard files named in a `*.safetensors.index.json` file's `weight_map`, sorted and
/// without repeats; an unreadable index, or one naming no shards, is an error naming it.
pub fn shards_listed_by(index: &Path) -> Result<Vec<String>, ModelError> {
    let bad = |problem: &str| ModelError::BadFile {
        path: index.to_path_buf(),
        problem: problem.to_string(),
    };
    let value = read_json(index)?.ok_or_else(|| ModelError::Io {
        path: index.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
    })?;
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no `weight_map` object"))?;
    let mut shards = map
        .values()
        .map(|file| {
            file.as_str()
                .filter(|name| is_file_name(name))
                .map(str::to_string)
                .ok_or_else(|| bad(&format!("`weight_map` names {file}, not a file beside it")))
        })
        .collect::<Result<Vec<String>, ModelError>>()?;
    shards.sort();
    shards.dedup();
    if shards.is_empty() {
        return Err(bad("`weight_map` names no shards"));
    }
    Ok(shards)
}

/// Whether `name` is one file name (no directory part, not `.` or `..`).
fn is_file_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(
        (components.next(), components.next()),
        (Some(std::path::Component::Normal(part)), None) if part == name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    fn touch(dir: &Path, files: &[&str]) {
        for file in files {
            std::fs::write(dir.join(file), "x").unwrap();
        }
    }

    fn fastvlm_config(dir: &Path, model_type: &str) {
        std::fs::write(
            dir.join(CONFIG),
            format!(r#"{{"model_type": "{model_type}"}}"#),
        )
        .unwrap();
    }

    #[test]
    fn the_fixtures_are_found_in_their_layouts() {
        let s0 = fixtures().join("mobileclip-s0-tiny");
        assert_eq!(
            CheckpointFiles::find(&s0, ModelRole::Captioner).unwrap(),
            CheckpointFiles::OpenClip {
                config: s0.join(OPEN_CLIP_CONFIG),
                weights: s0.join(OPEN_CLIP_WEIGHTS),
                tokenizer: s0.join(TOKENIZER_JSON),
            }
        );
        let hf = fixtures().join("fastvlm-tiny-hf");
        let found = CheckpointFiles::find(&hf, ModelRole::Captioner).unwrap();
        assert_eq!(
            found.layout(),
            CheckpointLayout::FastVlm(fastvlm::Layout::Transformers)
        );
        assert!(matches!(
            found,
            CheckpointFiles::FastVlm {
                tokenizer: TokenizerFiles::Json(_),
                ..
            }
        ));
        let apple = fixtures().join("fastvlm-tiny-apple");
        let found = CheckpointFiles::find(&apple, ModelRole::Captioner).unwrap();
        assert_eq!(
            found.layout(),
            CheckpointLayout::FastVlm(fastvlm::Layout::Apple)
        );
        assert_eq!(
            found,
            CheckpointFiles::FastVlm {
                layout: fastvlm::Layout::Apple,
                config: apple.join(CONFIG),
                weights: vec![apple.join(WEIGHTS)],
                tokenizer: TokenizerFiles::VocabAndMerges {
                    vocab: apple.join(VOCAB),
                    merges: apple.join(MERGES),
                },
            }
        );
    }

    #[test]
    fn either_tokenizer_form_serves_both_fastvlm_layouts() {
        for model_type in ["fast_vlm", "llava_qwen2"] {
            let json_only = tempfile::tempdir().unwrap();
            fastvlm_config(json_only.path(), model_type);
            touch(json_only.path(), &[WEIGHTS, TOKENIZER_JSON]);
            assert!(
                CheckpointFiles::find(json_only.path(), ModelRole::Captioner).is_ok(),
                "{model_type}"
            );
            let bpe_only = tempfile::tempdir().unwrap();
            fastvlm_config(bpe_only.path(), model_type);
            touch(bpe_only.path(), &[WEIGHTS, VOCAB, MERGES]);
            assert!(
                CheckpointFiles::find(bpe_only.path(), ModelRole::Captioner).is_ok(),
                "{model_type}"
            );
        }
    }

    #[test]
    fn every_missing_file_is_named_with_its_alternatives() {
        let dir = tempfile::tempdir().unwrap();
        fastvlm_config(dir.path(), "fast_vlm");
        touch(dir.path(), &[VOCAB]);
        let error = CheckpointFiles::find(dir.path(), ModelRole::Captioner)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "missing model.safetensors or model.safetensors.index.json, \
                 tokenizer.json or merges.txt"
            ) && error.contains("transformers FastVLM"),
            "{error}"
        );
        // No configuration at all: the files of the role's usual layout.
        let empty = tempfile::tempdir().unwrap();
        let error = CheckpointFiles::find(empty.path(), ModelRole::Embedder)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "missing open_clip_config.json, open_clip_model.safetensors, tokenizer.json"
            ),
            "{error}"
        );
    }

    #[test]
    fn sharded_weights_need_every_shard_their_index_lists() {
        let dir = tempfile::tempdir().unwrap();
        fastvlm_config(dir.path(), "llava_qwen2");
        touch(
            dir.path(),
            &[TOKENIZER_JSON, "model-00001-of-00002.safetensors"],
        );
        std::fs::write(
            dir.path().join(WEIGHTS_INDEX),
            r#"{"metadata": {}, "weight_map": {"a": "model-00002-of-00002.safetensors",
                "b": "model-00001-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let error = CheckpointFiles::find(dir.path(), ModelRole::Captioner)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("missing model.safetensors or model-00002-of-00002.safetensors"),
            "{error}"
        );
        touch(dir.path(), &["model-00002-of-00002.safetensors"]);
        let found = CheckpointFiles::find(dir.path(), ModelRole::Captioner).unwrap();
        assert_eq!(
            found.weights(),
            [
                dir.path().join("model-00001-of-00002.safetensors"),
                dir.path().join("model-00002-of-00002.safetensors")
            ]
        );
        // An index naming a path outside the directory is refused.
        std::fs::write(
            dir.path().join(WEIGHTS_INDEX),
            r#"{"weight_map": {"a": "../elsewhere.safetensors"}}"#,
        )
        .unwrap();
        let error = CheckpointFiles::find(dir.path(), ModelRole::Captioner)
            .unwrap_err()
            .to_string();
        assert!(error.contains("../elsewhere.safetensors"), "{error}");
    }

    #[test]
    fn the_smolvlm_fixture_is_found_in_its_layout() {
        let dir = fixtures().join("smolvlm-tiny");
        assert_eq!(
            CheckpointFiles::find(&dir, ModelRole::Captioner).unwrap(),
            CheckpointFiles::SmolVlm {
                config: dir.join(CONFIG),
                preprocessor: dir.join(PREPROCESSOR_CONFIG),
                weights: vec![dir.join(WEIGHTS)],
                tokenizer: dir.join(TOKENIZER_JSON),
            }
        );
        assert_eq!(CheckpointLayout::SmolVlm.role(), ModelRole::Captioner);
        let bare = tempfile::tempdir().unwrap();
        fastvlm_config(bare.path(), IDEFICS3);
        touch(bare.path(), &[WEIGHTS, VOCAB, MERGES]);
        let error = CheckpointFiles::find(bare.path(), ModelRole::Captioner)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("missing preprocessor_config.json, tokenizer.json")
                && error.contains("SmolVLM"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_model_type_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fastvlm_config(dir.path(), "llava_llama");
        let error = CheckpointFiles::find(dir.path(), ModelRole::Captioner)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("config.json") && error.contains("llava_llama"),
            "{error}"
        );
    }
}
