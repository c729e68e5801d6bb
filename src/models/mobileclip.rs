//! MobileCLIP2 (and MobileCLIP) image and text embeddings, loaded from the directory layout
//! the Hub serves (`timm/MobileCLIP2-S0-OpenCLIP`): `open_clip_config.json`,
//! `open_clip_model.safetensors`, `tokenizer.json`.
//!
//! The architecture comes from `open_clip_config.json`: the image tower is the timm model
//! it names (`fastvit_mci0` .. `fastvit_mci4`, see [`super::fastvit`]) with its classifier
//! head as the projection to `embed_dim`, the text tower is open_clip's CLIP transformer
//! ([`super::clip_text`]), and the preprocessing is open_clip's eval transform for the
//! config's `preprocess_cfg` ([`super::preprocess`]). Embeddings are L2-normalised, as
//! open_clip's `encode_image(normalize=True)` / `encode_text(normalize=True)`.
//!
//! One extension for test models: a top-level `timm_model_kwargs` object in the config is
//! passed to the timm model as keyword arguments (reduced `layers` / `embed_dims`), as the
//! fixture script does. Hub files do not have it.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde_json::{Map, Value};

use super::checkpoint::{self, CheckpointFiles};
use super::clip_text::{TextConfig, TextTransformer};
use super::clip_tokenizer::ClipTokenizer;
use super::fastvit::{self, FastVit};
use super::preprocess::{Interpolation, Normalization, Preprocess, ResizeMode};
use super::store::ModelRole;
use super::weights::Checkpoint;
use super::ModelError;

/// The configuration file of an open_clip checkpoint directory.
pub const CONFIG_FILE: &str = checkpoint::OPEN_CLIP_CONFIG;
/// The weights file of an open_clip checkpoint directory.
pub const WEIGHTS_FILE: &str = checkpoint::OPEN_CLIP_WEIGHTS;
/// The tokenizer file of an open_clip checkpoint directory.
pub const TOKENIZER_FILE: &str = checkpoint::TOKENIZER_JSON;

/// Images per forward pass of the image tower in [`MobileClip::embed_images`].
const IMAGE_BATCH: usize = 16;
/// Texts per forward pass of the text tower in [`MobileClip::embed_texts`].
const TEXT_BATCH: usize = 16;

/// OpenAI CLIP's channel means, open_clip's default.
const OPENAI_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's channel standard deviations, open_clip's default.
const OPENAI_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// What `open_clip_config.json` says about the model.
#[derive(Debug, Clone, PartialEq)]
pub struct MobileClipConfig {
    /// A display name derived from the architecture (e.g. `MobileCLIP2-S0`).
    pub name: String,
    /// The image tower.
    pub vision: fastvit::Config,
    /// The text tower.
    pub text: TextConfig,
    /// The image preprocessing.
    pub preprocess: Preprocess,
}

/// Reads and checks `open_clip_config.json`.
pub fn read_config(path: &Path) -> Result<MobileClipConfig, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let root: Value = serde_json::from_str(&text).map_err(|error| ModelError::Config {
        path: path.to_path_buf(),
        problem: format!("not valid JSON ({error})"),
    })?;
    ConfigReader { path }.read(&root)
}

/// Reads fields of the config with errors naming the file and the field.
struct ConfigReader<'a> {
    path: &'a Path,
}

impl ConfigReader<'_> {
    fn problem(&self, problem: impl Into<String>) -> ModelError {
        ModelError::Config {
            path: self.path.to_path_buf(),
            problem: problem.into(),
        }
    }

    fn object<'v>(
        &self,
        value: &'v Value,
        name: &str,
    ) -> Result<&'v Map<String, Value>, ModelError> {
        value
            .get(name)
            .and_then(Value::as_object)
            .ok_or_else(|| self.problem(format!("`{name}` is missing or not an object")))
    }

    fn usize_or(
        &self,
        map: &Map<String, Value>,
        section: &str,
        name: &str,
        default: usize,
    ) -> Result<usize, ModelError> {
        match map.get(name) {
            None => Ok(default),
            Some(value) => value
                .as_u64()
                .filter(|&v| v > 0)
                .map(|v| v as usize)
                .ok_or_else(|| {
                    self.problem(format!(
                        "`{section}.{name}` must be a positive integer, found {value}"
                    ))
                }),
        }
    }

    /// Fails when a field that changes the architecture is set to something this code
    /// does not implement (a value other than open_clip's default).
    fn require_default(
        &self,
        map: &Map<String, Value>,
        section: &str,
        name: &str,
        defaults: &[Value],
    ) -> Result<(), ModelError> {
        match map.get(name) {
            Some(value) if !defaults.contains(value) => Err(self.problem(format!(
                "`{section}.{name}` = {value} is not supported (MobileCLIP2 uses {})",
                defaults.first().unwrap_or(&Value::Null)
            ))),
            _ => Ok(()),
        }
    }

    fn triple(
        &self,
        value: Option<&Value>,
        name: &str,
        default: [f32; 3],
    ) -> Result<[f32; 3], ModelError> {
        let Some(value) = value else {
            return Ok(default);
        };
        if let Some(single) = value.as_f64() {
            return Ok([single as f32; 3]);
        }
        let values: Option<Vec<f32>> = value
            .as_array()
            .map(|items| items.iter().map(|v| v.as_f64().map(|v| v as f32)).collect())
            .unwrap_or(None);
        match values.as_deref() {
            Some(&[a, b, c]) => Ok([a, b, c]),
            _ => Err(self.problem(format!(
                "`preprocess_cfg.{name}` must be three numbers, found {value}"
            ))),
        }
    }

    fn read(&self, root: &Value) -> Result<MobileClipConfig, ModelError> {
        let model = self.object(root, "model_cfg")?;
        let model_value = Value::Object(model.clone());
        let vision = self.object(&model_value, "vision_cfg")?;
        let text = self.object(&model_value, "text_cfg")?;
        let embed_dim = self.usize_or(model, "model_cfg", "embed_dim", 0)?;
        if embed_dim == 0 {
            return Err(self.problem("`model_cfg.embed_dim` is missing"));
        }
        self.require_default(model, "model_cfg", "quick_gelu", &[Value::Bool(false)])?;

        let timm_name = vision
            .get("timm_model_name")
            .and_then(Value::as_str)
            .ok_or_else(|| self.problem("`model_cfg.vision_cfg.timm_model_name` is missing: only timm image towers are supported"))?;
        let preset = fastvit::Config::preset(timm_name).ok_or_else(|| {
            self.problem(format!(
                "image tower `{timm_name}` is not supported (fastvit_mci0 .. fastvit_mci4 are)"
            ))
        })?;
        self.require_default(vision, "vision_cfg", "timm_pool", &["avg".into()])?;
        self.require_default(
            vision,
            "vision_cfg",
            "timm_proj",
            &[Value::Null, "none".into()],
        )?;
        self.require_default(
            vision,
            "vision_cfg",
            "timm_proj_bias",
            &[Value::Bool(false)],
        )?;
        let (reduced, vision_config) = match root.get("timm_model_kwargs") {
            None => (false, preset),
            Some(Value::Object(kwargs)) => (
                true,
                preset
                    .with_timm_kwargs(kwargs)
                    .map_err(|problem| self.problem(format!("`timm_model_kwargs`: {problem}")))?,
            ),
            Some(other) => {
                return Err(self.problem(format!(
                    "`timm_model_kwargs` must be an object, found {other}"
                )))
            }
        };
        let vision_config = fastvit::Config {
            num_classes: embed_dim,
            ..vision_config
        };
        let (width, height) = match vision.get("image_size") {
            Some(Value::Array(sides)) => match sides.as_slice() {
                [h, w] => match (h.as_u64(), w.as_u64()) {
                    (Some(h), Some(w)) if h > 0 && w > 0 => (w as u32, h as u32),
                    _ => {
                        return Err(
                            self.problem("`vision_cfg.image_size` must be positive integers")
                        )
                    }
                },
                _ => {
                    return Err(self.problem("`vision_cfg.image_size` must be one or two integers"))
                }
            },
            _ => {
                let size = self.usize_or(vision, "vision_cfg", "image_size", 224)? as u32;
                (size, size)
            }
        };

        for (name, defaults) in [
            ("embed_cls", vec![Value::Bool(false)]),
            ("pool_type", vec!["argmax".into()]),
            ("proj_type", vec!["linear".into()]),
            ("proj_bias", vec![Value::Bool(false)]),
            ("final_ln_after_pool", vec![Value::Bool(false)]),
            ("ls_init_value", vec![Value::Null]),
            ("hf_model_name", vec![Value::Null, "".into()]),
            ("hf_tokenizer_name", vec![Value::Null, "".into()]),
            ("qk_norm", vec![Value::Bool(false)]),
            ("scaled_cosine_attn", vec![Value::Bool(false)]),
            ("scale_heads", vec![Value::Bool(false)]),
            ("scale_attn_inner", vec![Value::Bool(false)]),
            ("scale_attn", vec![Value::Bool(false)]),
            ("scale_fc", vec![Value::Bool(false)]),
            ("act_kwargs", vec![Value::Null]),
            ("norm_kwargs", vec![Value::Null]),
        ] {
            self.require_default(text, "text_cfg", name, &defaults)?;
        }
        let mlp_ratio = match text.get("mlp_ratio") {
            None => 4.0,
            Some(value) => value.as_f64().filter(|&r| r > 0.0).ok_or_else(|| {
                self.problem(format!(
                    "`text_cfg.mlp_ratio` must be a positive number, found {value}"
                ))
            })?,
        };
        let causal = !text
            .get("no_causal_mask")
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.problem("`text_cfg.no_causal_mask` must be a boolean"))
            })
            .transpose()?
            .unwrap_or(false);
        let text_config = TextConfig {
            context_length: self.usize_or(text, "text_cfg", "context_length", 77)?,
            vocab_size: self.usize_or(text, "text_cfg", "vocab_size", 49408)?,
            width: self.usize_or(text, "text_cfg", "width", 512)?,
            heads: self.usize_or(text, "text_cfg", "heads", 8)?,
            layers: self.usize_or(text, "text_cfg", "layers", 12)?,
            mlp_ratio,
            embed_dim,
            causal,
        };

        let empty = Map::new();
        let preprocess = match root.get("preprocess_cfg") {
            None => &empty,
            Some(Value::Object(map)) => map,
            Some(other) => {
                return Err(
                    self.problem(format!("`preprocess_cfg` must be an object, found {other}"))
                )
            }
        };
        let interpolation = match preprocess.get("interpolation").and_then(Value::as_str) {
            None | Some("bicubic") | Some("random") => Interpolation::Bicubic,
            Some("bilinear") => Interpolation::Bilinear,
            Some(other) => {
                return Err(self.problem(format!(
                    "`preprocess_cfg.interpolation` = {other:?} is not supported"
                )))
            }
        };
        let resize_mode = match preprocess.get("resize_mode").and_then(Value::as_str) {
            None | Some("shortest") => ResizeMode::Shortest,
            Some("longest") => ResizeMode::Longest,
            Some("squash") => ResizeMode::Squash,
            Some(other) => {
                return Err(self.problem(format!(
                    "`preprocess_cfg.resize_mode` = {other:?} is not supported"
                )))
            }
        };
        let fill = match preprocess.get("fill_color") {
            None => 0,
            Some(value) => value.as_u64().filter(|&v| v <= 255).ok_or_else(|| {
                self.problem(format!(
                    "`preprocess_cfg.fill_color` must be 0..=255, found {value}"
                ))
            })? as u8,
        };
        let normalization = Normalization {
            mean: self.triple(preprocess.get("mean"), "mean", OPENAI_MEAN)?,
            std: self.triple(preprocess.get("std"), "std", OPENAI_STD)?,
        };
        if normalization.std.iter().any(|&s| s <= 0.0) {
            return Err(self.problem("`preprocess_cfg.std` must be positive"));
        }

        let variant = match timm_name {
            "fastvit_mci0" => "MobileCLIP2-S0",
            "fastvit_mci1" => "MobileCLIP-S1",
            "fastvit_mci2" => "MobileCLIP2-S2",
            "fastvit_mci3" => "MobileCLIP2-S3",
            _ => "MobileCLIP2-S4",
        };
        Ok(MobileClipConfig {
            name: if reduced {
                format!("{variant} (reduced)")
            } else {
                variant.to_string()
            },
            vision: vision_config,
            text: text_config,
            preprocess: Preprocess {
                width,
                height,
                resize_mode,
                interpolation,
                fill: [fill; 3],
                normalization,
            },
        })
    }
}

/// Rows scaled to unit L2 norm (norms below 1e-12 clamped, as `F.normalize`).
fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norms = x
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    x.broadcast_div(&norms)
}

/// A loaded MobileCLIP2 model: image and text towers, tokenizer and preprocessing.
#[derive(Debug)]
pub struct MobileClip {
    config: MobileClipConfig,
    image_tower: FastVit,
    text_tower: TextTransformer,
    tokenizer: ClipTokenizer,
    device: Device,
}

impl MobileClip {
    /// Loads a checkpoint directory (`open_clip_config.json`, `open_clip_model.safetensors`,
    /// `tokenizer.json`) onto `device`.
    ///
    /// Every tensor the configuration needs must be in the file with its shape, and every
    /// tensor in the file must be used: errors name the file, the tensor and the shapes.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let files = CheckpointFiles::find(dir, ModelRole::Embedder)?;
        let CheckpointFiles::OpenClip {
            config: config_file,
            weights,
            tokenizer: tokenizer_file,
        } = &files
        else {
            return Err(files.not_a(ModelRole::Embedder, dir));
        };
        let config = read_config(config_file)?;
        let checkpoint = Checkpoint::open(std::slice::from_ref(weights))?;
        let vb = checkpoint.var_builder(DType::F32, device, None);
        let image_tower = FastVit::load(vb.pp("visual").pp("trunk"), &config.vision)?;
        let text_tower = TextTransformer::load(vb.pp("text"), &config.text)?;
        checkpoint.ensure_all_used(|name| {
            fastvit::is_unused_buffer(name) || name == "logit_scale" || name == "logit_bias"
        })?;
        let tokenizer = ClipTokenizer::from_file(tokenizer_file, config.text.context_length)?;
        Ok(Self {
            config,
            image_tower,
            text_tower,
            tokenizer,
            device: device.clone(),
        })
    }

    /// The model's name, e.g. `MobileCLIP2-S0`.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.config.text.embed_dim
    }

    /// The image tower's input size `(width, height)`.
    pub fn input_size(&self) -> (u32, u32) {
        (self.config.preprocess.width, self.config.preprocess.height)
    }

    /// The configuration read from the checkpoint directory.
    pub fn config(&self) -> &MobileClipConfig {
        &self.config
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The preprocessing open_clip applies before the image tower.
    pub fn preprocess(&self) -> &Preprocess {
        &self.config.preprocess
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// L2-normalised embeddings of RGB images of any size: `[images, dim]`, preprocessed
    /// exactly as open_clip does (resize, crop, normalise).
    pub fn embed_images(&self, images: &[RgbImage]) -> Result<Tensor, ModelError> {
        let mut parts = Vec::with_capacity(images.len().div_ceil(IMAGE_BATCH));
        for chunk in images.chunks(IMAGE_BATCH) {
            let pixels = self.config.preprocess.batch(chunk, &self.device)?;
            parts.push(self.embed_preprocessed(&pixels)?);
        }
        self.concat(parts)
    }

    /// L2-normalised embeddings of a batch already at the input size and normalised:
    /// `[batch, 3, height, width]` -> `[batch, dim]`.
    pub fn embed_preprocessed(&self, pixels: &Tensor) -> Result<Tensor, ModelError> {
        let (_, channels, height, width) = pixels.dims4()?;
        let (input_w, input_h) = self.input_size();
        if channels != 3 || (width as u32, height as u32) != (input_w, input_h) {
            return Err(ModelError::Candle(candle_core::Error::Msg(format!(
                "expected images of shape [batch, 3, {input_h}, {input_w}], found {:?}",
                pixels.dims()
            ))));
        }
        Ok(l2_normalize(&self.image_tower.forward(pixels)?)?)
    }

    /// open_clip's token ids for texts: `[texts, context_length]` (u32).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Tensor, ModelError> {
        let context = self.tokenizer.context_length();
        let mut ids = Vec::with_capacity(texts.len() * context);
        for text in texts {
            ids.extend(self.tokenizer.encode(text)?);
        }
        Ok(Tensor::from_vec(ids, (texts.len(), context), &self.device)?)
    }

    /// L2-normalised embeddings of texts: `[texts, dim]`.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Tensor, ModelError> {
        let mut parts = Vec::with_capacity(texts.len().div_ceil(TEXT_BATCH));
        for chunk in texts.chunks(TEXT_BATCH) {
            let ids = self.tokenize(chunk)?;
            parts.push(l2_normalize(&self.text_tower.forward(&ids)?)?);
        }
        self.concat(parts)
    }

    fn concat(&self, parts: Vec<Tensor>) -> Result<Tensor, ModelError> {
        if parts.is_empty() {
            return Ok(Tensor::zeros((0, self.dim()), DType::F32, &self.device)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }
}
