//! FastVLM: the FastViTHD image encoder, a two-layer projector and a Qwen2 language model.
//!
//! An image is padded to a square with the mean colour, resized to the encoder's input size
//! (1024x1024 for the published models) and encoded into a grid of feature vectors (16x16 of
//! 3072 channels); the projector maps each to the language model's width, and the sequence
//! is spliced into the chat prompt where the user's turn names the image. Generation is
//! one prefill over the whole prompt, then one cached step per token.
//!
//! Two checkpoint layouts load with the same code: Apple's original (`model_type`
//! `llava_qwen2`, tensors under `model.vision_tower.vision_tower.model`, `model.mm_projector`
//! and `model.layers`) and the transformers port (`FastVlmForConditionalGeneration`). The
//! model is written against the port's names; `apple_name` is the one table that maps
//! them to Apple's.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;
use serde_json::Value;

use super::checkpoint::CheckpointFiles;
use super::fastvit::{self, FastVit};
use super::generation::{generate, Generation, GenerationSettings};
use super::preprocess::{self, Interpolation, Normalization};
use super::qwen2::{Qwen2, Qwen2Config};
use super::qwen2_tokenizer::{chat_prompt, Qwen2Tokenizer};
use super::store::ModelRole;
use super::weights::Checkpoint;
use super::{read_json, ModelError};
use crate::kernels;
use crate::kernels::{Activation, Linear};

/// Where the user's turn puts the image.
pub const IMAGE_PLACEHOLDER: &str = "<image>";
/// The id Apple's code puts in the prompt ids where the image features go.
pub const APPLE_IMAGE_SENTINEL: i64 = -200;

/// Which of the two published layouts a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Apple's original LLaVA-Qwen2 checkpoint (`model_type: llava_qwen2`).
    Apple,
    /// The transformers port (`model_type: fast_vlm`).
    Transformers,
}

impl Layout {
    /// The layout `config.json`'s `model_type` names, if it is a FastVLM's.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "llava_qwen2" => Some(Layout::Apple),
            "fast_vlm" => Some(Layout::Transformers),
            _ => None,
        }
    }
}

/// Everything the model's files say about its architecture and input.
#[derive(Debug, Clone)]
pub struct FastVlmConfig {
    /// The checkpoint layout.
    pub layout: Layout,
    /// The image encoder (timm `fastvit_mci3` for the published models).
    pub vision: fastvit::Config,
    /// The language model.
    pub text: Qwen2Config,
    /// Side of the square encoder input, in pixels.
    pub image_size: u32,
    /// Normalisation of the encoder input.
    pub normalization: Normalization,
    /// The colour images are padded to a square with (the mean, in 8 bits).
    pub pad_fill: [u8; 3],
    /// The `<image>` token id of the transformers layout.
    pub image_token_id: Option<u32>,
}

impl FastVlmConfig {
    /// Reads `config.json` and the image processor's configuration from a checkpoint
    /// directory.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("config.json");
        let config = read_json(&path)?.ok_or_else(|| ModelError::Io {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        })?;
        let bad = |problem: String| ModelError::Config {
            path: path.clone(),
            problem,
        };
        let model_type = config.get("model_type").and_then(Value::as_str);
        let (layout, text) = match model_type.and_then(Layout::from_model_type) {
            Some(Layout::Apple) => {
                check_apple_fields(&config).map_err(bad)?;
                (Layout::Apple, Qwen2Config::from_json(&config, false, &path)?)
            }
            Some(Layout::Transformers) => {
                let text = config
                    .get("text_config")
                    .ok_or_else(|| bad("`text_config` is missing".into()))?;
                let tie = config
                    .get("tie_word_embeddings")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                (Layout::Transformers, Qwen2Config::from_json(text, tie, &path)?)
            }
            None => {
                return Err(bad(format!(
                    "`model_type` is {model_type:?}; a FastVLM checkpoint has `llava_qwen2` (Apple) or `fast_vlm` (transformers)"
                )))
            }
        };
        let vision = vision_config(config.get("vision_config")).map_err(bad)?;
        let image_token_id = match layout {
            Layout::Apple => None,
            Layout::Transformers => Some(
                config
                    .get("image_token_id")
                    .or_else(|| config.get("image_token_index"))
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("`image_token_id` is missing".into()))?
                    as u32,
            ),
        };
        let processor = ImageProcessor::from_dir(dir)?;
        Ok(Self {
            layout,
            vision,
            text,
            image_size: processor.size,
            normalization: processor.normalization,
            pad_fill: processor
                .normalization
                .mean
                .map(|mean| (mean * 255.0).clamp(0.0, 255.0) as u8),
            image_token_id,
        })
    }

    /// Image features per image: the encoder's output grid, flattened.
    pub fn image_tokens(&self) -> usize {
        let side = self.image_size as usize / self.vision.stride();
        side * side
    }

    /// A name for documents: the published size the language model matches, else its
    /// dimensions.
    pub fn name(&self) -> String {
        match (self.text.hidden_size, self.text.num_hidden_layers) {
            (896, 24) => "FastVLM-0.5B".into(),
            (1536, 28) => "FastVLM-1.5B".into(),
            (3584, 28) => "FastVLM-7B".into(),
            (hidden, layers) => format!("FastVLM (Qwen2 {layers} layers x {hidden})"),
        }
    }
}

/// The Apple fields keyscribe relies on, checked so an unsupported variant is an error.
fn check_apple_fields(config: &Value) -> Result<(), String> {
    let expect = |key: &str, wanted: &str| match config.get(key).and_then(Value::as_str) {
        None => Ok(()),
        Some(found) if found == wanted => Ok(()),
        Some(found) => Err(format!(
            "`{key}` is {found:?}; keyscribe supports {wanted:?}"
        )),
    };
    expect("mm_projector_type", "mlp2x_gelu")?;
    expect("image_aspect_ratio", "pad")?;
    expect("mm_patch_merge_type", "flat")
}

/// The image encoder's architecture: `vision_config` (`architecture` + timm `model_args`)
/// when the file has one, else FastViTHD (`fastvit_mci3`).
fn vision_config(vision: Option<&Value>) -> Result<fastvit::Config, String> {
    let architecture = vision
        .and_then(|vision| vision.get("architecture"))
        .and_then(Value::as_str)
        .unwrap_or("fastvit_mci3");
    let preset = fastvit::Config::preset(architecture).ok_or_else(|| {
        format!("`vision_config.architecture` {architecture:?} is not a FastViT MCi model")
    })?;
    let mut arguments = vision
        .and_then(|vision| vision.get("model_args"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    // The weights say which form each module is in; the flag adds nothing.
    arguments.remove("inference_mode");
    arguments.insert("num_classes".into(), Value::from(0));
    preset
        .with_timm_kwargs(&arguments)
        .map_err(|problem| format!("`vision_config.model_args`: {problem}"))
}

/// The image processor's input size and normalisation.
struct ImageProcessor {
    size: u32,
    normalization: Normalization,
}

impl ImageProcessor {
    /// Reads `preprocessor_config.json` (or the `image_processor` of
    /// `processor_config.json`); absent, FastVLM's own: 1024, mean 0, std 1.
    fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let mut found = None;
        for (file, key) in [
            ("preprocessor_config.json", None),
            ("processor_config.json", Some("image_processor")),
        ] {
            let path = dir.join(file);
            if let Some(value) = read_json(&path)? {
                let value = match key {
                    Some(key) => value.get(key).cloned(),
                    None => Some(value),
                };
                if let Some(value) = value {
                    found = Some((path, value));
                    break;
                }
            }
        }
        let Some((path, config)) = found else {
            return Ok(Self {
                size: 1024,
                normalization: Normalization {
                    mean: [0.0; 3],
                    std: [1.0; 3],
                },
            });
        };
        let bad = |problem: &str| ModelError::Config {
            path: path.clone(),
            problem: problem.to_string(),
        };
        let side = |value: Option<&Value>| -> Option<u64> {
            let value = value?;
            value
                .as_u64()
                .or_else(|| value.get("height").and_then(Value::as_u64))
                .or_else(|| value.get("shortest_edge").and_then(Value::as_u64))
        };
        let size = side(config.get("crop_size"))
            .or_else(|| side(config.get("size")))
            .ok_or_else(|| bad("neither `crop_size` nor `size` gives the input size"))?;
        let triple = |key: &str, default: f32| -> Result<[f32; 3], ModelError> {
            match config.get(key) {
                None | Some(Value::Null) => Ok([default; 3]),
                Some(value) => {
                    let values: Vec<f32> = value
                        .as_array()
                        .map(|items| {
                            items
                                .iter()
                                .filter_map(Value::as_f64)
                                .map(|v| v as f32)
                                .collect()
                        })
                        .unwrap_or_default();
                    values
                        .try_into()
                        .map_err(|_| bad(&format!("`{key}` is not a list of three numbers")))
                }
            }
        };
        let normalize = config
            .get("do_normalize")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let normalization = if normalize {
            Normalization {
                mean: triple("image_mean", 0.0)?,
                std: triple("image_std", 1.0)?,
            }
        } else {
            Normalization {
                mean: [0.0; 3],
                std: [1.0; 3],
            }
        };
        if size == 0 || normalization.std.contains(&0.0) {
            return Err(bad(
                "the input size and the standard deviations must be positive",
            ));
        }
        Ok(Self {
            size: size as u32,
            normalization,
        })
    }
}

/// Where the vision tower's stages sit in Apple's flat `network` list: per stage, the
/// indices of its downsampling layer, positional embedding and blocks.
#[derive(Debug, Clone)]
struct AppleNetwork {
    stages: Vec<(Option<usize>, Option<usize>, usize)>,
}

impl AppleNetwork {
    fn new(config: &fastvit::Config) -> Self {
        let mut next = 0;
        let mut take = || {
            next += 1;
            next - 1
        };
        let mut previous = config.embed_dims[0];
        let stages = (0..config.layers.len())
            .map(|stage| {
                let dim = config.embed_dims[stage];
                let downsample = (config.downsamples[stage] || dim != previous).then(&mut take);
                let pos_emb = config.pos_embs[stage].then(&mut take);
                previous = dim;
                (downsample, pos_emb, take())
            })
            .collect();
        Self { stages }
    }
}

/// Top-level prefixes: the transformers port's, Apple's.
const PREFIXES: [(&str, &str); 5] = [
    (
        "model.vision_tower.timm_model.",
        "model.vision_tower.vision_tower.model.",
    ),
    (
        "model.multi_modal_projector.linear_1.",
        "model.mm_projector.0.",
    ),
    (
        "model.multi_modal_projector.linear_2.",
        "model.mm_projector.2.",
    ),
    ("model.language_model.", "model."),
    ("lm_head.", "lm_head."),
];

/// Module names inside the vision tower: timm's, Apple's.
const VISION_MODULES: [(&str, &str); 9] = [
    ("stem.", "patch_embed."),
    ("final_conv.", "conv_exp."),
    ("se.fc1.", "se.reduce."),
    ("se.fc2.", "se.expand."),
    ("mlp.", "convffn."),
    ("proj.0.reparam_conv.", "proj.0.lkb_reparam."),
    ("layer_scale.gamma", "layer_scale"),
    ("layer_scale_1.gamma", "layer_scale_1"),
    ("layer_scale_2.gamma", "layer_scale_2"),
];

/// The name Apple's checkpoint gives a tensor the transformers port calls `name`.
fn apple_name(name: &str, network: &AppleNetwork) -> String {
    let Some((port, apple, rest)) = PREFIXES
        .iter()
        .find_map(|(port, apple)| name.strip_prefix(port).map(|rest| (*port, *apple, rest)))
    else {
        return name.to_string();
    };
    if !port.starts_with("model.vision_tower.") {
        return format!("{apple}{rest}");
    }
    let mut rest = rest.to_string();
    if let Some(stage_path) = rest.strip_prefix("stages.") {
        let (stage, inner) = stage_path.split_once('.').unwrap_or((stage_path, ""));
        if let Some((downsample, pos_emb, blocks)) = stage
            .parse::<usize>()
            .ok()
            .and_then(|s| network.stages.get(s))
        {
            let mapped = if let Some(block) = inner.strip_prefix("blocks.") {
                Some(format!("network.{blocks}.{block}"))
            } else if let (Some(inner), Some(index)) =
                (inner.strip_prefix("downsample."), downsample)
            {
                Some(format!("network.{index}.{inner}"))
            } else if let (Some(inner), Some(index)) = (inner.strip_prefix("pos_emb."), pos_emb) {
                Some(format!("network.{index}.{inner}"))
            } else {
                None
            };
            if let Some(mapped) = mapped {
                rest = mapped;
            }
        }
    }
    for (timm, apple_module) in VISION_MODULES {
        if let Some(at) = rest.find(timm) {
            let starts_segment = at == 0 || rest.as_bytes()[at - 1] == b'.';
            if starts_segment {
                rest.replace_range(at..at + timm.len(), apple_module);
            }
        }
    }
    format!("{apple}{rest}")
}

/// Tensors a checkpoint may hold that FastVLM never reads: BatchNorm counters, and the
/// classifier projection Apple's image tower carries.
fn is_unused(name: &str) -> bool {
    fastvit::is_unused_buffer(name)
        || name == "model.vision_tower.vision_tower.model.head.proj"
        || name.starts_with("model.vision_tower.timm_model.head.")
}

/// A loaded FastVLM.
pub struct FastVlm {
    config: FastVlmConfig,
    vision: FastVit,
    projector: (Linear, Linear),
    language: Qwen2,
    tokenizer: Qwen2Tokenizer,
    device: Device,
}

impl std::fmt::Debug for FastVlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastVlm")
            .field("config", &self.config)
            .finish()
    }
}

impl FastVlm {
    /// Loads a checkpoint directory in either layout onto `device`.
    ///
    /// The model runs in `dtype`. With bf16 on the CPU, the weights of every matrix product
    /// (the language model's and projector's linear layers, the image encoder's 1x1
    /// convolutions and attention) are kept in bf16 and multiplied as a bf16 model does;
    /// activations, and the image encoder's other convolutions, stay in f32.
    /// Loading is strict: a missing or misshapen tensor, or one the architecture does not
    /// use, is an error naming it.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self, ModelError> {
        let files = CheckpointFiles::find(dir, ModelRole::Captioner)?;
        let CheckpointFiles::FastVlm {
            weights, tokenizer, ..
        } = &files
        else {
            return Err(files.not_a(ModelRole::Captioner, dir));
        };
        let config = FastVlmConfig::from_dir(dir)?;
        let checkpoint = Checkpoint::open(weights)?;
        let rename: Option<super::weights::Renamer> = match config.layout {
            Layout::Transformers => None,
            Layout::Apple => {
                let network = AppleNetwork::new(&config.vision);
                Some(Box::new(move |name: &str| apple_name(name, &network)))
            }
        };
        let vb = checkpoint.var_builder(dtype, device, rename);
        let vision = FastVit::load(vb.pp("model.vision_tower.timm_model"), &config.vision)?;
        let projector = load_projector(vb.pp("model.multi_modal_projector"), &config)?;
        let language = Qwen2::load(
            vb.pp("model.language_model"),
            vb.pp("lm_head"),
            &config.text,
        )?;
        checkpoint.ensure_all_used(is_unused)?;
        let tokenizer = Qwen2Tokenizer::load(tokenizer)?;
        if tokenizer.vocab_size() > config.text.vocab_size {
            return Err(ModelError::Config {
                path: dir.join("config.json"),
                problem: format!(
                    "the tokenizer has {} tokens but the model only {}",
                    tokenizer.vocab_size(),
                    config.text.vocab_size
                ),
            });
        }
        Ok(Self {
            config,
            vision,
            projector,
            language,
            tokenizer,
            device: device.clone(),
        })
    }

    /// The model's name, e.g. `FastVLM-0.5B`.
    pub fn name(&self) -> String {
        self.config.name()
    }

    /// The configuration read from the checkpoint.
    pub fn config(&self) -> &FastVlmConfig {
        &self.config
    }

    /// The language model (for stepping it directly, as the benchmark does).
    pub fn language(&self) -> &Qwen2 {
        &self.language
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Qwen2Tokenizer {
        &self.tokenizer
    }

    /// The encoder input of an RGB image of any size: padded to a square with the mean
    /// colour, resized (bicubic, as PIL) to the input size and normalised; `[1, 3, S, S]`.
    /// Pictures outside the limits of [`crate::picture`] are refused.
    pub fn preprocess(&self, image: &RgbImage) -> Result<Tensor, ModelError> {
        crate::picture::check_size(image.width(), image.height())?;
        let side = self.config.image_size;
        let resized = preprocess::pad_to_square_and_resize(
            image,
            self.config.pad_fill,
            side,
            Interpolation::Bicubic,
        );
        Ok(preprocess::to_tensor(
            &[resized],
            &self.config.normalization,
            &self.device,
        )?)
    }

    /// The encoder's feature map of preprocessed pixels, NCHW as timm returns it.
    pub fn vision_features(&self, pixels: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.vision.forward_features(pixels)?)
    }

    /// The image tokens of preprocessed pixels, before the projector: the encoder's feature
    /// map flattened row by row, `[1, tokens, channels]`.
    pub fn image_tokens(&self, pixels: &Tensor) -> Result<Tensor, ModelError> {
        let nhwc = self
            .vision
            .forward_features_nhwc(&pixels.permute((0, 2, 3, 1))?)?;
        let (batch, height, width, channels) = nhwc.dims4()?;
        Ok(nhwc.reshape((batch, height * width, channels))?)
    }

    /// The projector: image tokens to the language model's width, `[1, tokens, hidden]`.
    pub fn project(&self, image_tokens: &Tensor) -> Result<Tensor, ModelError> {
        let tokens = image_tokens.to_dtype(self.language.activation_dtype())?;
        let hidden = kernels::gelu(&self.projector.0.forward(&tokens)?)?;
        Ok(self.projector.1.forward(&hidden)?)
    }

    /// The projected image features of preprocessed pixels: `[1, tokens, hidden]`.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor, ModelError> {
        self.project(&self.image_tokens(pixels)?)
    }

    /// The prompt's ids as the reference builds them: Apple's layout puts one
    /// [`APPLE_IMAGE_SENTINEL`] where the image goes, the transformers layout repeats the
    /// `<image>` token once per image feature.
    pub fn input_ids(&self, prompt: &str) -> Result<Vec<i64>, ModelError> {
        let mut ids = Vec::new();
        for (index, chunk) in prompt.split(IMAGE_PLACEHOLDER).enumerate() {
            if index > 0 {
                match self.config.image_token_id {
                    None => ids.push(APPLE_IMAGE_SENTINEL),
                    Some(token) => ids.extend(std::iter::repeat_n(
                        i64::from(token),
                        self.config.image_tokens(),
                    )),
                }
            }
            ids.extend(self.tokenizer.encode(chunk)?.into_iter().map(i64::from));
        }
        Ok(ids)
    }

    /// The input embeddings of a prompt, the image features spliced in at the placeholder:
    /// `[1, positions, hidden]`.
    pub fn prompt_embeddings(
        &self,
        prompt: &str,
        image_features: Option<&Tensor>,
    ) -> Result<Tensor, ModelError> {
        let chunks: Vec<&str> = prompt.split(IMAGE_PLACEHOLDER).collect();
        let placeholders = chunks.len() - 1;
        if placeholders != usize::from(image_features.is_some()) {
            return Err(ModelError::Candle(candle_core::Error::Msg(format!(
                "the prompt has {placeholders} `{IMAGE_PLACEHOLDER}` placeholders for {} images",
                usize::from(image_features.is_some())
            ))));
        }
        let mut parts = Vec::with_capacity(2 * chunks.len());
        for (index, chunk) in chunks.iter().enumerate() {
            if index > 0 {
                if let Some(features) = image_features {
                    parts.push(features.squeeze(0)?);
                }
            }
            let ids = self.tokenizer.encode(chunk)?;
            if !ids.is_empty() {
                let ids = Tensor::new(ids.as_slice(), &self.device)?;
                parts.push(self.language.embed(&ids)?);
            }
        }
        Ok(Tensor::cat(&parts, 0)?.unsqueeze(0)?)
    }

    /// The language model's logits after the whole prompt, with `image` at the placeholder:
    /// `[vocab]` (f32).
    pub fn prompt_logits(
        &self,
        image: Option<&RgbImage>,
        prompt: &str,
    ) -> Result<Tensor, ModelError> {
        let features = match image {
            Some(image) => Some(self.image_features(&self.preprocess(image)?)?),
            None => None,
        };
        let embeds = self.prompt_embeddings(prompt, features.as_ref())?;
        let mut cache = self.language.new_cache();
        Ok(self
            .language
            .forward_embeds(&embeds, &mut cache)?
            .squeeze(0)?
            .to_dtype(DType::F32)?)
    }

    /// Describes an image: the chat prompt with `<image>` then `instruction` in the user's
    /// turn. `on_token` receives the text as it grows.
    pub fn describe(
        &self,
        image: &RgbImage,
        instruction: &str,
        settings: &GenerationSettings,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        let start = Instant::now();
        let features = self.image_features(&self.preprocess(image)?)?;
        let vision = start.elapsed();
        // A placeholder typed in the instruction is text here, not a second image.
        let instruction = instruction.replace(IMAGE_PLACEHOLDER, "<img>");
        let prompt = chat_prompt(None, &format!("{IMAGE_PLACEHOLDER}\n{instruction}"));
        let embeds = self.prompt_embeddings(&prompt, Some(&features))?;
        let mut generation = generate(
            &self.language,
            &self.tokenizer,
            &embeds,
            start,
            settings,
            on_token,
        )?;
        generation.vision = vision;
        Ok(generation)
    }

    /// Answers a text-only chat turn with the language model (for summaries).
    pub fn generate_text(
        &self,
        system: Option<&str>,
        user: &str,
        settings: &GenerationSettings,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        let start = Instant::now();
        // A placeholder typed in the text is text here, not an image.
        let user = user.replace(IMAGE_PLACEHOLDER, "<img>");
        let system = system.map(|system| system.replace(IMAGE_PLACEHOLDER, "<img>"));
        let embeds = self.prompt_embeddings(&chat_prompt(system.as_deref(), &user), None)?;
        generate(
            &self.language,
            &self.tokenizer,
            &embeds,
            start,
            settings,
            on_token,
        )
    }
}

fn load_projector(vb: VarBuilder, config: &FastVlmConfig) -> candle_core::Result<(Linear, Linear)> {
    let (features, hidden) = (config.vision.num_features(), config.text.hidden_size);
    let linear = |name: &str, inputs: usize| -> candle_core::Result<Linear> {
        Linear::from_torch_as_loaded(
            &vb.pp(name).get((hidden, inputs), "weight")?,
            Some(&vb.pp(name).get(hidden, "bias")?),
            Activation::Identity,
        )
    };
    Ok((linear("linear_1", features)?, linear("linear_2", hidden)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apple_names_follow_the_conversion_table() {
        let network = AppleNetwork::new(&fastvit::Config::mci3());
        let cases = [
            (
                "model.vision_tower.timm_model.stem.0.reparam_conv.weight",
                "model.vision_tower.vision_tower.model.patch_embed.0.reparam_conv.weight",
            ),
            (
                "model.vision_tower.timm_model.stages.0.blocks.0.layer_scale.gamma",
                "model.vision_tower.vision_tower.model.network.0.0.layer_scale",
            ),
            (
                "model.vision_tower.timm_model.stages.1.downsample.proj.0.reparam_conv.bias",
                "model.vision_tower.vision_tower.model.network.1.proj.0.lkb_reparam.bias",
            ),
            (
                "model.vision_tower.timm_model.stages.3.pos_emb.reparam_conv.weight",
                "model.vision_tower.vision_tower.model.network.6.reparam_conv.weight",
            ),
            (
                "model.vision_tower.timm_model.stages.3.blocks.0.mlp.conv.bn.running_var",
                "model.vision_tower.vision_tower.model.network.7.0.convffn.conv.bn.running_var",
            ),
            (
                "model.vision_tower.timm_model.stages.4.blocks.1.layer_scale_2.gamma",
                "model.vision_tower.vision_tower.model.network.10.1.layer_scale_2",
            ),
            (
                "model.vision_tower.timm_model.final_conv.se.fc1.weight",
                "model.vision_tower.vision_tower.model.conv_exp.se.reduce.weight",
            ),
            (
                "model.multi_modal_projector.linear_2.bias",
                "model.mm_projector.2.bias",
            ),
            (
                "model.language_model.layers.3.self_attn.q_proj.weight",
                "model.layers.3.self_attn.q_proj.weight",
            ),
            ("lm_head.weight", "lm_head.weight"),
        ];
        for (port, apple) in cases {
            assert_eq!(apple_name(port, &network), apple, "{port}");
        }
    }

    #[test]
    fn vision_config_defaults_to_fastvithd() {
        let config = vision_config(None).unwrap();
        assert_eq!(config.num_features(), 3072);
        assert_eq!(config.stride(), 64);
        let error =
            vision_config(Some(&serde_json::json!({"architecture": "resnet50"}))).unwrap_err();
        assert!(error.contains("resnet50"), "{error}");
    }
}
