//! SmolVLM (`HuggingFaceTB/SmolVLM-256M-Instruct`, `-500M-Instruct`): transformers' Idefics3
//! layout, a SigLIP vision tower, a pixel-shuffle connector and a SmolLM2 (Llama) decoder.
//!
//! An image becomes tiles of `max_image_size` (512) plus the whole image at that size, or one
//! square image without splitting ([`processor`]). The vision tower encodes each tile into
//! its patches' last hidden states (32 x 32 of 768 for the published models); the connector
//! folds each `scale_factor` x `scale_factor` block of patches into one vector (pixel shuffle,
//! 4 x 4 -> 64 tokens a tile) and projects it to the language model's width
//! (`modality_projection`, no bias); the projected tokens replace the prompt's `<image>`
//! tokens in order. Generation is one prefill, then one cached step per token, stopping at
//! `<end_of_utterance>` or the end-of-sequence token.
//!
//! Tensor names: `model.vision_model.*` (the SigLIP tower, no head), `model.connector.
//! modality_projection.proj.weight`, `model.text_model.*` (the decoder) and `lm_head.weight`
//! (absent when the embeddings are tied).

pub mod processor;

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use image::RgbImage;
use serde_json::Value;
use tokenizers::Tokenizer;

use super::checkpoint::CheckpointFiles;
use super::generation::{generate, Generation, GenerationSettings, TokenText};
use super::qwen2::{Qwen2, Qwen2Config};
use super::siglip::vision::{VisionConfig, VisionTransformer};
use super::store::ModelRole;
use super::weights::Checkpoint;
use super::{read_json, ModelError};
use crate::kernels::{self, Activation, Linear};
use processor::{
    chat_prompt, ImageProcessorConfig, ProcessedImage, TileGrid, END_OF_UTTERANCE, IMAGE_TOKEN,
};

/// Everything the checkpoint's files say about the architecture and its input.
#[derive(Debug, Clone)]
pub struct SmolVlmConfig {
    /// The vision tower (no pooling head).
    pub vision: VisionConfig,
    /// The language model (SmolLM2, a Llama).
    pub text: Qwen2Config,
    /// Side of the blocks of patches the connector folds into one token.
    pub scale_factor: usize,
    /// The `<image>` token's id.
    pub image_token_id: u32,
    /// The image processor.
    pub processor: ImageProcessorConfig,
}

impl SmolVlmConfig {
    /// Reads `config.json`, `preprocessor_config.json` and `processor_config.json`.
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
        if model_type != Some(super::checkpoint::IDEFICS3) {
            return Err(bad(format!(
                "`model_type` is {model_type:?}; a SmolVLM checkpoint has `idefics3`"
            )));
        }
        let text_json = config
            .get("text_config")
            .ok_or_else(|| bad("`text_config` is missing".into()))?;
        let tie = config
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut text = Qwen2Config::from_json(text_json, tie, &path)?;
        // Idefics3 ties the output projection by the top-level flag.
        text.tie_word_embeddings = tie;
        let mut vision: VisionConfig = serde_json::from_value(
            config
                .get("vision_config")
                .cloned()
                .ok_or_else(|| bad("`vision_config` is missing".into()))?,
        )
        .map_err(|error| bad(format!("`vision_config`: {error}")))?;
        vision.use_head = false;
        let scale_factor = config
            .get("scale_factor")
            .and_then(Value::as_u64)
            .unwrap_or(2) as usize;
        let side = vision.patches_per_side();
        if scale_factor == 0 || !side.is_multiple_of(scale_factor) {
            return Err(bad(format!(
                "`scale_factor` {scale_factor} does not divide the {side} patches per side"
            )));
        }
        let image_token_id = config
            .get("image_token_id")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("`image_token_id` is missing".into()))?
            as u32;
        let tokens_per_tile = (side / scale_factor).pow(2);
        let processor = ImageProcessorConfig::from_dir(dir, tokens_per_tile)?;
        if processor.image_seq_len != tokens_per_tile
            || processor.tile as usize != vision.image_size
        {
            return Err(ModelError::Config {
                path: ImageProcessorConfig::file(dir),
                problem: format!(
                    "tiles of {} pixels with {} image tokens each do not match the vision tower's \
                     {} pixels and {tokens_per_tile} tokens",
                    processor.tile, processor.image_seq_len, vision.image_size
                ),
            });
        }
        Ok(Self {
            vision,
            text,
            scale_factor,
            image_token_id,
            processor,
        })
    }

    /// Image tokens per tile after the pixel shuffle.
    pub fn tokens_per_tile(&self) -> usize {
        (self.vision.patches_per_side() / self.scale_factor).pow(2)
    }

    /// A name for documents: the published size the dimensions match, else the dimensions.
    pub fn name(&self) -> String {
        match (self.text.hidden_size, self.text.num_hidden_layers) {
            (576, 30) => "SmolVLM-256M".into(),
            (960, 32) => "SmolVLM-500M".into(),
            (2048, 24) => "SmolVLM-2.2B".into(),
            (hidden, layers) => format!("SmolVLM (SmolLM2 {layers} layers x {hidden})"),
        }
    }
}

/// SmolVLM's tokenizer (`tokenizer.json`) with the tokens generation stops at.
#[derive(Clone)]
pub struct SmolVlmTokenizer {
    tokenizer: Tokenizer,
    stop_ids: Vec<u32>,
}

impl std::fmt::Debug for SmolVlmTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmolVlmTokenizer")
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .field("stop_ids", &self.stop_ids)
            .finish()
    }
}

impl SmolVlmTokenizer {
    /// Reads `tokenizer.json`; generation stops at `<end_of_utterance>` and at the
    /// end-of-sequence tokens of `generation_config.json` and `tokenizer_config.json` beside it.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let tokenizer = Tokenizer::from_file(path).map_err(|error| ModelError::BadFile {
            path: path.to_path_buf(),
            problem: format!("not a readable tokenizer ({error})"),
        })?;
        let end = tokenizer
            .token_to_id(END_OF_UTTERANCE)
            .ok_or_else(|| ModelError::BadFile {
                path: path.to_path_buf(),
                problem: format!("the tokenizer has no `{END_OF_UTTERANCE}` token"),
            })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut stop_ids = vec![end];
        if let Some(generation) = read_json(&dir.join("generation_config.json"))? {
            match generation.get("eos_token_id") {
                Some(Value::Array(ids)) => {
                    stop_ids.extend(ids.iter().filter_map(Value::as_u64).map(|id| id as u32))
                }
                Some(id) => stop_ids.extend(id.as_u64().map(|id| id as u32)),
                None => {}
            }
        }
        if let Some(config) = read_json(&dir.join("tokenizer_config.json"))? {
            let eos = config.get("eos_token").and_then(|token| {
                token
                    .as_str()
                    .or_else(|| token.get("content").and_then(Value::as_str))
            });
            stop_ids.extend(eos.and_then(|eos| tokenizer.token_to_id(eos)));
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Ok(Self {
            tokenizer,
            stop_ids,
        })
    }

    /// Token ids of `text` as transformers' tokenizer call gives them (special tokens written
    /// in the text recognised, the file's post-processor applied).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|error| tokenizer_error(text, &*error))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The id of a token, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Tokens in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}

impl TokenText for SmolVlmTokenizer {
    fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|error| tokenizer_error("generated tokens", &*error))
    }

    fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }
}

fn tokenizer_error(input: &str, error: &(dyn std::error::Error + Send + Sync)) -> ModelError {
    ModelError::Candle(candle_core::Error::Msg(format!(
        "cannot tokenize {input:?}: {error}"
    )))
}

/// A loaded SmolVLM.
pub struct SmolVlm {
    config: SmolVlmConfig,
    vision: VisionTransformer,
    projection: Linear,
    language: Qwen2,
    tokenizer: SmolVlmTokenizer,
    splitting: bool,
    device: Device,
}

impl std::fmt::Debug for SmolVlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmolVlm")
            .field("config", &self.config)
            .field("splitting", &self.splitting)
            .finish()
    }
}

impl SmolVlm {
    /// Loads a checkpoint directory onto `device`.
    ///
    /// The model runs in `dtype`; with bf16 on the CPU the weights of the matrix products are
    /// kept in bf16 and activations in f32, as for FastVLM. Image splitting follows the
    /// checkpoint's `do_image_splitting` until [`Self::set_image_splitting`] says otherwise.
    /// Loading is strict: a missing or misshapen tensor, or one the architecture does not
    /// use, is an error naming it.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self, ModelError> {
        let files = CheckpointFiles::find(dir, ModelRole::Captioner)?;
        let CheckpointFiles::SmolVlm {
            weights, tokenizer, ..
        } = &files
        else {
            return Err(ModelError::WrongModel {
                dir: dir.to_path_buf(),
                found: files.layout().to_string(),
                wanted: "a SmolVLM (`idefics3`) checkpoint".into(),
            });
        };
        let config = SmolVlmConfig::from_dir(dir)?;
        let checkpoint = Checkpoint::open(weights)?;
        let vb = checkpoint.var_builder(dtype, device, None);
        let vision = VisionTransformer::load(vb.pp("model.vision_model"), &config.vision)?;
        let inputs = config.vision.hidden_size * config.scale_factor.pow(2);
        let projection = Linear::from_torch_as_loaded(
            &vb.pp("model.connector.modality_projection.proj")
                .get((config.text.hidden_size, inputs), "weight")?,
            None,
            Activation::Identity,
        )?;
        let language = Qwen2::load(vb.pp("model.text_model"), vb.pp("lm_head"), &config.text)?;
        checkpoint.ensure_all_used(|_| false)?;
        let tokenizer = SmolVlmTokenizer::load(tokenizer)?;
        let too_many = tokenizer.vocab_size() > config.text.vocab_size;
        let image_token = tokenizer.token_id(IMAGE_TOKEN);
        if too_many || image_token != Some(config.image_token_id) {
            return Err(ModelError::Config {
                path: dir.join("config.json"),
                problem: format!(
                    "the tokenizer ({} tokens, `{IMAGE_TOKEN}` = {image_token:?}) does not match \
                     the model ({} tokens, `image_token_id` {})",
                    tokenizer.vocab_size(),
                    config.text.vocab_size,
                    config.image_token_id
                ),
            });
        }
        Ok(Self {
            splitting: config.processor.splitting,
            config,
            vision,
            projection,
            language,
            tokenizer,
            device: device.clone(),
        })
    }

    /// The model's name, e.g. `SmolVLM-256M`.
    pub fn name(&self) -> String {
        self.config.name()
    }

    /// The configuration read from the checkpoint.
    pub fn config(&self) -> &SmolVlmConfig {
        &self.config
    }

    /// The language model (for stepping it directly, as the benchmark does).
    pub fn language(&self) -> &Qwen2 {
        &self.language
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &SmolVlmTokenizer {
        &self.tokenizer
    }

    /// Whether images are split into tiles plus the whole image (the checkpoint's
    /// `do_image_splitting` unless set).
    pub fn image_splitting(&self) -> bool {
        self.splitting
    }

    /// Turns image splitting on or off. Off, an image is one square tile (64 image tokens for
    /// the published models); on, a 16:9 frame at SmolVLM's settings is 12 tiles plus the
    /// whole image (832 tokens), about 13 times the work.
    pub fn set_image_splitting(&mut self, splitting: bool) {
        self.splitting = splitting;
    }

    /// The vision tower's input for an RGB image of any size, split or not as set.
    /// Pictures outside the limits of [`crate::picture`] are refused.
    pub fn preprocess(&self, image: &RgbImage) -> Result<ProcessedImage, ModelError> {
        self.config
            .processor
            .process(image, self.splitting, &self.device)
    }

    /// The image features of preprocessed tiles `[n, 3, tile, tile]`: the vision tower, the
    /// pixel shuffle and the projection, `[n * tokens_per_tile, hidden]`.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor, ModelError> {
        kernels::on_thread_pool(|| {
            let hidden = self.vision.forward(pixels)?;
            let shuffled = self.pixel_shuffle(&hidden)?;
            let features = self
                .projection
                .forward(&shuffled.to_dtype(self.language.activation_dtype())?)?;
            let (tiles, tokens, width) = features.dims3()?;
            features.reshape((tiles * tokens, width))
        })
        .map_err(ModelError::from)
    }

    /// Idefics3's pixel shuffle: `[n, side * side, d]` -> `[n, (side / s)^2, s * s * d]`, each
    /// output token the `s` x `s` block of patches below and right of it, row by row.
    fn pixel_shuffle(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        let (tiles, positions, width) = hidden.dims3()?;
        let side = self.config.vision.patches_per_side();
        let s = self.config.scale_factor;
        if positions != side * side {
            candle_core::bail!(
                "expected {} patches per tile, found {positions}",
                side * side
            );
        }
        hidden
            .reshape((tiles, side / s, s, side / s, s, width))?
            .permute((0, 1, 3, 2, 4, 5))?
            .contiguous()?
            .reshape((tiles, (side / s) * (side / s), s * s * width))
    }

    /// The prompt's ids as the reference processor builds them: each `<image>` placeholder
    /// expanded for an image of `grid` (`None`: the prompt has no image), then tokenized.
    pub fn input_ids(&self, prompt: &str, grid: Option<TileGrid>) -> Result<Vec<u32>, ModelError> {
        let placeholders = prompt.matches(IMAGE_TOKEN).count();
        if placeholders != usize::from(grid.is_some()) {
            return Err(ModelError::Candle(candle_core::Error::Msg(format!(
                "the prompt has {placeholders} `{IMAGE_TOKEN}` placeholders for {} images",
                usize::from(grid.is_some())
            ))));
        }
        let text = match grid {
            Some(grid) => prompt.replace(IMAGE_TOKEN, &self.config.processor.image_prompt(grid)),
            None => prompt.to_string(),
        };
        self.tokenizer.encode(&text)
    }

    /// The input embeddings of prompt ids with the image features replacing the `<image>`
    /// tokens in order: `[1, positions, hidden]`.
    pub fn prompt_embeddings(
        &self,
        ids: &[u32],
        image_features: Option<&Tensor>,
    ) -> Result<Tensor, ModelError> {
        let image_token = self.config.image_token_id;
        let slots = ids.iter().filter(|&&id| id == image_token).count();
        let available = image_features.map_or(Ok(0), |features| features.dim(0))?;
        if slots != available {
            return Err(ModelError::Candle(candle_core::Error::Msg(format!(
                "the prompt has {slots} image tokens for {available} image features"
            ))));
        }
        let mut parts = Vec::new();
        let (mut start, mut used) = (0, 0);
        while start < ids.len() {
            let is_image = ids[start] == image_token;
            let end = ids[start..]
                .iter()
                .position(|&id| (id == image_token) != is_image)
                .map_or(ids.len(), |offset| start + offset);
            if is_image {
                let features = image_features.expect("image tokens were counted");
                parts.push(features.narrow(0, used, end - start)?);
                used += end - start;
            } else {
                let span = Tensor::new(&ids[start..end], &self.device)?;
                parts.push(self.language.embed(&span)?);
            }
            start = end;
        }
        Ok(Tensor::cat(&parts, 0)?.unsqueeze(0)?)
    }

    /// The language model's logits after the prompt ids, with the features of `image` (split
    /// or not as set) at the `<image>` tokens: `[vocab]` (f32).
    pub fn prompt_logits(
        &self,
        image: Option<&RgbImage>,
        ids: &[u32],
    ) -> Result<Tensor, ModelError> {
        let features = match image {
            Some(image) => Some(self.image_features(&self.preprocess(image)?.pixels)?),
            None => None,
        };
        let embeds = self.prompt_embeddings(ids, features.as_ref())?;
        let mut cache = self.language.new_cache();
        Ok(self
            .language
            .forward_embeds(&embeds, &mut cache)?
            .squeeze(0)?
            .to_dtype(DType::F32)?)
    }

    /// Describes an image: the chat prompt with the image then `instruction` in the user's
    /// turn. `on_token` receives the text as it grows.
    pub fn describe(
        &self,
        image: &RgbImage,
        instruction: &str,
        settings: &GenerationSettings,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        let start = Instant::now();
        let processed = self.preprocess(image)?;
        let features = self.image_features(&processed.pixels)?;
        let vision = start.elapsed();
        // A placeholder typed in the instruction is text here, not a second image.
        let instruction = instruction.replace(IMAGE_TOKEN, "<img>");
        let ids = self.input_ids(&chat_prompt(None, &instruction, true), Some(processed.grid))?;
        let embeds = self.prompt_embeddings(&ids, Some(&features))?;
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
        let user = user.replace(IMAGE_TOKEN, "<img>");
        let system = system.map(|system| system.replace(IMAGE_TOKEN, "<img>"));
        let ids = self.input_ids(&chat_prompt(system.as_deref(), &user, false), None)?;
        let embeds = self.prompt_embeddings(&ids, None)?;
        generate(
            &self.language,
            &self.tokenizer,
            &embeds,
            start,
            settings,
            on_token,
        )
    }

    /// Where the model was loaded.
    pub fn device(&self) -> &Device {
        &self.device
    }
}
