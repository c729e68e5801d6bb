//! SigLIP2 (and SigLIP) image and text embeddings in transformers' `SiglipModel` layout, as
//! the fixed-resolution SigLIP2 checkpoints ship (`google/siglip2-base-patch16-224`, `-256`,
//! `-384`; `model_type "siglip"`): `config.json`, `model.safetensors`, `tokenizer.json`,
//! `tokenizer_config.json`, `special_tokens_map.json`, `preprocessor_config.json`.
//!
//! Embeddings are transformers' `get_image_features(...).pooler_output` (the vision tower's
//! attention-pooling head) and `get_text_features(...).pooler_output` (the text tower's
//! last position through `head`), L2-normalised.
//!
//! Inputs are prepared as `AutoProcessor` prepares them in transformers 5.24, which picks
//! the torchvision ("fast") `SiglipImageProcessor` when torchvision is installed (the PIL
//! one only without it): the image is stretched to `size` (no crop) with torchvision's
//! antialiased bilinear resize of the uint8 image ([`preprocess::resize_torchvision`];
//! SigLIP2's `resample` is 2, bilinear), then `(x / 255 - mean) / std`; texts go through
//! [`tokenizer::GemmaTokenizer`].
//!
//! [`vision`] is the vision transformer, reusable by the models built on it (Idefics3 /
//! SmolVLM); [`encoder`] is the transformer stack both towers share.

pub mod encoder;
pub mod text;
pub mod tokenizer;
pub mod vision;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use rayon::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use super::checkpoint::{CheckpointFiles, SIGLIP_MODEL_TYPE};
use super::preprocess::{self, Normalization};
use super::store::ModelRole;
use super::weights::Checkpoint;
use super::{read_json, ModelError};
use text::{TextConfig, TextTransformer};
use tokenizer::GemmaTokenizer;
use vision::{VisionConfig, VisionTransformer};

/// Images per forward pass of the vision tower in [`Siglip::embed_images`].
const IMAGE_BATCH: usize = 16;
/// Texts per forward pass of the text tower in [`Siglip::embed_texts`].
const TEXT_BATCH: usize = 16;
/// PIL's number for bilinear resampling, `preprocessor_config.json`'s `resample`.
const PIL_BILINEAR: u64 = 2;

/// What `config.json` and `preprocessor_config.json` say about the model.
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipConfig {
    /// A display name derived from the architecture (e.g. `SigLIP2-base-patch16-224`).
    pub name: String,
    /// The vision tower.
    pub vision: VisionConfig,
    /// The text tower.
    pub text: TextConfig,
    /// The image processor's normalisation (after scaling to [0, 1]).
    pub normalization: Normalization,
}

/// The towers' part of `config.json`.
#[derive(Deserialize)]
struct ConfigFile {
    model_type: Option<String>,
    #[serde(default)]
    text_config: TextConfig,
    #[serde(default)]
    vision_config: VisionConfig,
}

/// Reads and checks `config.json` and `preprocessor_config.json`.
pub fn read_config(config: &Path, preprocessor: &Path) -> Result<SiglipConfig, ModelError> {
    let bad = |path: &Path, problem: String| ModelError::Config {
        path: path.to_path_buf(),
        problem,
    };
    let root = read_json(config)?.ok_or_else(|| not_found(config))?;
    let file: ConfigFile = serde_json::from_value(root)
        .map_err(|error| bad(config, format!("not a SigLIP configuration ({error})")))?;
    if file.model_type.as_deref() != Some(SIGLIP_MODEL_TYPE) {
        return Err(bad(
            config,
            format!(
                "`model_type` is {:?}, not {SIGLIP_MODEL_TYPE:?}",
                file.model_type
            ),
        ));
    }
    let (vision, text) = (file.vision_config, file.text_config);
    if !vision.use_head {
        return Err(bad(
            config,
            "`vision_config.vision_use_head` is false: the embeddings need the pooling head".into(),
        ));
    }
    if vision.num_channels != 3 {
        return Err(bad(
            config,
            format!(
                "`vision_config.num_channels` is {}, not 3",
                vision.num_channels
            ),
        ));
    }
    if vision.hidden_size != text.output_size() {
        return Err(bad(
            config,
            format!(
                "the image embeddings ({}) and text embeddings ({}) differ in width",
                vision.hidden_size,
                text.output_size()
            ),
        ));
    }

    let processor = read_json(preprocessor)?.ok_or_else(|| not_found(preprocessor))?;
    let field = |name: &str| processor.get(name).filter(|value| !value.is_null());
    for name in ["do_resize", "do_rescale", "do_normalize"] {
        if let Some(value) = field(name) {
            if value != &Value::Bool(true) {
                return Err(bad(
                    preprocessor,
                    format!("`{name}` = {value} is not supported (SigLIP2 uses true)"),
                ));
            }
        }
    }
    match field("resample").map(|value| value.as_u64()) {
        None | Some(Some(PIL_BILINEAR)) => {}
        Some(other) => {
            return Err(bad(
                preprocessor,
                format!(
                    "`resample` = {} is not supported (SigLIP2 uses 2, bilinear)",
                    other.map_or_else(|| "a non-integer".to_string(), |v| v.to_string())
                ),
            ))
        }
    }
    if let Some(factor) = field("rescale_factor") {
        let factor = factor.as_f64().unwrap_or(f64::NAN);
        if (factor * 255.0 - 1.0).abs() > 1e-9 {
            return Err(bad(
                preprocessor,
                format!("`rescale_factor` = {factor} is not supported (1/255 is)"),
            ));
        }
    }
    let size = field("size");
    let side = |name: &str| size.and_then(|size| size.get(name)).and_then(Value::as_u64);
    match (side("height"), side("width")) {
        (Some(h), Some(w))
            if h as usize == vision.image_size && w as usize == vision.image_size => {}
        (None, None) if size.is_none() => {}
        _ => {
            return Err(bad(
                preprocessor,
                format!(
                    "`size` must be {{\"height\": {0}, \"width\": {0}}} (the vision tower's \
                     image size), found {1}",
                    vision.image_size,
                    size.map_or_else(|| "another form".to_string(), Value::to_string)
                ),
            ))
        }
    }
    let triple = |name: &str| -> Result<[f32; 3], ModelError> {
        match field(name) {
            None => Ok([0.5; 3]),
            Some(Value::Number(single)) => Ok([single.as_f64().unwrap_or(f64::NAN) as f32; 3]),
            Some(Value::Array(items)) => match items.as_slice() {
                [a, b, c] => {
                    let get = |v: &Value| v.as_f64().unwrap_or(f64::NAN) as f32;
                    Ok([get(a), get(b), get(c)])
                }
                _ => Err(bad(preprocessor, format!("`{name}` must be three numbers"))),
            },
            Some(other) => Err(bad(
                preprocessor,
                format!("`{name}` must be three numbers, found {other}"),
            )),
        }
    };
    let normalization = Normalization {
        mean: triple("image_mean")?,
        std: triple("image_std")?,
    };
    if normalization
        .mean
        .iter()
        .chain(&normalization.std)
        .any(|v| !v.is_finite())
        || normalization.std.iter().any(|&s| s <= 0.0)
    {
        return Err(bad(
            preprocessor,
            "`image_mean` / `image_std` must be finite, the std positive".into(),
        ));
    }

    Ok(SiglipConfig {
        name: display_name(&vision, &text),
        vision,
        text,
        normalization,
    })
}

fn not_found(path: &Path) -> ModelError {
    ModelError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
    }
}

/// `SigLIP2-base-patch16-224` for the published sizes; the widths and depth otherwise.
fn display_name(vision: &VisionConfig, text: &TextConfig) -> String {
    let family = if text.vocab_size == 256_000 {
        "SigLIP2"
    } else {
        "SigLIP"
    };
    let size = match (vision.hidden_size, vision.num_hidden_layers) {
        (768, 12) => "base".to_string(),
        (1024, 24) => "large".to_string(),
        (1152, 27) => "so400m".to_string(),
        (1536, 40) => "giant-opt".to_string(),
        (width, layers) => format!("w{width}-d{layers}"),
    };
    format!(
        "{family}-{size}-patch{}-{}",
        vision.patch_size, vision.image_size
    )
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

/// A loaded SigLIP2 model: vision and text towers, tokenizer and image processor.
#[derive(Debug)]
pub struct Siglip {
    config: SiglipConfig,
    vision: VisionTransformer,
    text: TextTransformer,
    tokenizer: GemmaTokenizer,
    logit_scale: f32,
    logit_bias: f32,
    dtype: DType,
    device: Device,
}

impl Siglip {
    /// Loads a checkpoint directory (the six files of the Hub's layout) onto `device`, in
    /// f32 (the reference's numbers).
    ///
    /// Every tensor the configuration needs must be in the file with its shape, and every
    /// tensor in the file must be used: errors name the file, the tensor and the shapes.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        Self::load_with_dtype(dir, DType::F32, device)
    }

    /// [`Self::load`] with the weights in `dtype`. With bf16 on the CPU the weights of every
    /// matrix product are packed bf16 and multiplied as a bf16 model does (AVX-512 BF16 dot
    /// products where the processor has them), activations stay f32: faster, but the
    /// embeddings are no longer the f32 reference's to 1e-4.
    pub fn load_with_dtype(dir: &Path, dtype: DType, device: &Device) -> Result<Self, ModelError> {
        let files = CheckpointFiles::find(dir, ModelRole::Embedder)?;
        let CheckpointFiles::Siglip {
            config: config_file,
            preprocessor,
            weights,
            tokenizer: tokenizer_file,
            tokenizer_config,
            ..
        } = &files
        else {
            return Err(files.not_a(ModelRole::Embedder, dir));
        };
        let config = read_config(config_file, preprocessor)?;
        let tokenizer = GemmaTokenizer::from_files(
            tokenizer_file,
            tokenizer_config,
            config.text.max_position_embeddings,
        )?;
        let checkpoint = Checkpoint::open(std::slice::from_ref(weights))?;
        let vb = checkpoint.var_builder(dtype, device, None);
        let vision = VisionTransformer::load(vb.pp("vision_model"), &config.vision)?;
        let text = TextTransformer::load(vb.pp("text_model"), &config.text)?;
        let scalar = |name: &str| -> Result<f32, ModelError> {
            Ok(vb
                .get(1, name)?
                .to_device(&Device::Cpu)?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?[0])
        };
        let logit_scale = scalar("logit_scale")?;
        let logit_bias = scalar("logit_bias")?;
        checkpoint.ensure_all_used(|_| false)?;
        Ok(Self {
            config,
            vision,
            text,
            tokenizer,
            logit_scale,
            logit_bias,
            dtype,
            device: device.clone(),
        })
    }

    /// The model's name, e.g. `SigLIP2-base-patch16-224`.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.config.vision.hidden_size
    }

    /// The vision tower's input size `(width, height)`.
    pub fn input_size(&self) -> (u32, u32) {
        let side = self.config.vision.image_size as u32;
        (side, side)
    }

    /// The configuration read from the checkpoint directory.
    pub fn config(&self) -> &SiglipConfig {
        &self.config
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &GemmaTokenizer {
        &self.tokenizer
    }

    /// The vision transformer.
    pub fn vision(&self) -> &VisionTransformer {
        &self.vision
    }

    /// The learned temperature's logarithm: image-text logits are
    /// `cos * exp(logit_scale) + logit_bias`, their sigmoid a match probability.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }

    /// The learned logit bias (see [`Self::logit_scale`]).
    pub fn logit_bias(&self) -> f32 {
        self.logit_bias
    }

    /// The image processor's output for images of any size: each stretched to the input
    /// size (torchvision's antialiased bilinear resize) and normalised,
    /// `[images, 3, height, width]`.
    pub fn preprocess(&self, images: &[RgbImage]) -> Result<Tensor, ModelError> {
        let (width, height) = self.input_size();
        let resized: Vec<RgbImage> = images
            .par_iter()
            .map(|image| {
                crate::picture::check_size(image.width(), image.height())?;
                Ok(preprocess::resize_torchvision(
                    image,
                    width,
                    height,
                    preprocess::Interpolation::Bilinear,
                ))
            })
            .collect::<Result<_, ModelError>>()?;
        self.pixels_of_resized(&resized)
    }

    /// Normalised pixels of images already at the input size.
    fn pixels_of_resized(&self, images: &[RgbImage]) -> Result<Tensor, ModelError> {
        let (width, height) = self.input_size();
        if let Some(other) = images
            .iter()
            .find(|image| image.dimensions() != (width, height))
        {
            return Err(ModelError::Candle(candle_core::Error::Msg(format!(
                "expected images of {width}x{height}, found {}x{}",
                other.width(),
                other.height()
            ))));
        }
        Ok(preprocess::to_tensor(
            images,
            &self.config.normalization,
            &self.device,
        )?)
    }

    /// L2-normalised embeddings of RGB images of any size: `[images, dim]`, prepared
    /// exactly as transformers' image processor does (see [`Self::preprocess`]).
    pub fn embed_images(&self, images: &[RgbImage]) -> Result<Tensor, ModelError> {
        let mut parts = Vec::with_capacity(images.len().div_ceil(IMAGE_BATCH));
        for chunk in images.chunks(IMAGE_BATCH) {
            parts.push(self.embed_preprocessed(&self.preprocess(chunk)?)?);
        }
        self.concat(parts)
    }

    /// L2-normalised embeddings of images already stretched to [`Self::input_size`] (the
    /// pipeline's decoded frames): no resize, only normalisation. `[images, dim]`.
    pub fn embed_resized(&self, images: &[RgbImage]) -> Result<Tensor, ModelError> {
        let mut parts = Vec::with_capacity(images.len().div_ceil(IMAGE_BATCH));
        for chunk in images.chunks(IMAGE_BATCH) {
            parts.push(self.embed_preprocessed(&self.pixels_of_resized(chunk)?)?);
        }
        self.concat(parts)
    }

    /// L2-normalised embeddings of a batch already at the input size and normalised:
    /// `[batch, 3, height, width]` -> `[batch, dim]`.
    pub fn embed_preprocessed(&self, pixels: &Tensor) -> Result<Tensor, ModelError> {
        let pixels = pixels.to_dtype(self.activation_dtype())?;
        let pooled = crate::kernels::on_thread_pool(|| self.vision.forward_pooled(&pixels))?;
        Ok(l2_normalize(&pooled.to_dtype(DType::F32)?)?)
    }

    /// The processor's token ids for texts: `[texts, 64]` (u32).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Tensor, ModelError> {
        let length = self.tokenizer.max_length();
        let mut ids = Vec::with_capacity(texts.len() * length);
        for text in texts {
            ids.extend(self.tokenizer.encode(text)?);
        }
        Ok(Tensor::from_vec(ids, (texts.len(), length), &self.device)?)
    }

    /// L2-normalised embeddings of texts: `[texts, dim]`.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Tensor, ModelError> {
        let mut parts = Vec::with_capacity(texts.len().div_ceil(TEXT_BATCH));
        for chunk in texts.chunks(TEXT_BATCH) {
            let ids = self.tokenize(chunk)?;
            let features = crate::kernels::on_thread_pool(|| self.text.forward(&ids))?;
            parts.push(l2_normalize(&features.to_dtype(DType::F32)?)?);
        }
        self.concat(parts)
    }

    /// The dtype activations flow in.
    fn activation_dtype(&self) -> DType {
        crate::kernels::activation_dtype(self.dtype, &self.device)
    }

    fn concat(&self, parts: Vec<Tensor>) -> Result<Tensor, ModelError> {
        if parts.is_empty() {
            return Ok(Tensor::zeros((0, self.dim()), DType::F32, &self.device)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }
}
