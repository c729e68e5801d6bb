//! The SigLIP vision transformer (transformers' `SiglipVisionTransformer`), reusable by the
//! models built on it: SigLIP/SigLIP2 embedders (with the attention-pooling head) and
//! Idefics3/SmolVLM (the same tensor names under their own prefix, no head).
//!
//! Patch embedding (a `patch_size` stride convolution, run as one product over the
//! flattened patches), learned position embeddings, the [`Encoder`], `post_layernorm`, and
//! optionally the multi-head attention pooling head (`head.{probe, attention.in_proj_*,
//! attention.out_proj, layernorm, mlp}`), whose output is the image's pooled features.
//!
//! Tensor names under the tower's prefix (`vision_model` in a `SiglipModel`):
//! `embeddings.patch_embedding.{weight,bias}`, `embeddings.position_embedding.weight`,
//! `encoder.layers.N.*`, `post_layernorm.{weight,bias}`, `head.*`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::encoder::{linear, Encoder, EncoderShape, HiddenAct, LayerNorm, Mlp};
use crate::kernels::{activation_dtype, attention, Activation, Linear};

/// The vision tower's configuration: `config.json`'s `vision_config`, with transformers'
/// `SiglipVisionConfig` defaults for missing fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    /// Residual stream width.
    pub hidden_size: usize,
    /// MLP hidden width.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Input channels (3).
    pub num_channels: usize,
    /// Input side in pixels (square inputs).
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// MLP activation.
    pub hidden_act: HiddenAct,
    /// Whether the tower ends in the attention-pooling head (`vision_use_head`; true for
    /// SigLIP, absent from Idefics3's vision tower: set it to false there).
    #[serde(rename = "vision_use_head")]
    pub use_head: bool,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self::base_patch16(224)
    }
}

impl VisionConfig {
    /// SigLIP2-base-patch16 (ViT-B/16) at `image_size` (224, 256, 384 or 512).
    pub fn base_patch16(image_size: usize) -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size,
            patch_size: 16,
            layer_norm_eps: 1e-6,
            hidden_act: HiddenAct::GeluPytorchTanh,
            use_head: true,
        }
    }

    /// Patches per side.
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Positions (patches) per image.
    pub fn positions(&self) -> usize {
        self.patches_per_side().pow(2)
    }

    fn encoder_shape(&self) -> EncoderShape {
        EncoderShape {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            layers: self.num_hidden_layers,
            heads: self.num_attention_heads,
            layer_norm_eps: self.layer_norm_eps,
            hidden_act: self.hidden_act,
        }
    }
}

/// The multi-head attention pooling head (transformers' `SiglipMultiheadAttentionPoolingHead`):
/// a learned probe attends over the positions, then a residual MLP.
#[derive(Debug, Clone)]
struct PoolingHead {
    /// The probe's query projection, computed once at load: `[1, heads, 1, head_dim]`.
    query: Tensor,
    kv_proj: Linear,
    out_proj: Linear,
    layernorm: LayerNorm,
    mlp: Mlp,
    heads: usize,
}

impl PoolingHead {
    fn load(vb: VarBuilder, config: &VisionConfig) -> Result<Self> {
        let width = config.hidden_size;
        let heads = config.num_attention_heads;
        let attn = vb.pp("attention");
        let in_proj_weight = attn.get((3 * width, width), "in_proj_weight")?;
        let in_proj_bias = attn.get(3 * width, "in_proj_bias")?;
        let probe = vb.get((1, 1, width), "probe")?;
        let dtype = activation_dtype(vb.dtype(), vb.device());
        let query = probe
            .to_dtype(dtype)?
            .reshape((1, width))?
            .matmul(&in_proj_weight.narrow(0, 0, width)?.to_dtype(dtype)?.t()?)?
            .broadcast_add(&in_proj_bias.narrow(0, 0, width)?.to_dtype(dtype)?)?
            .reshape((1, 1, heads, width / heads))?
            .transpose(1, 2)?
            .contiguous()?;
        Ok(Self {
            query,
            kv_proj: Linear::from_torch(
                &in_proj_weight.narrow(0, width, 2 * width)?.contiguous()?,
                Some(&in_proj_bias.narrow(0, width, 2 * width)?),
                Activation::Identity,
            )?,
            out_proj: linear(&attn.pp("out_proj"), width, width, Activation::Identity)?,
            layernorm: LayerNorm::load(vb.pp("layernorm"), width, config.layer_norm_eps)?,
            mlp: Mlp::load(vb.pp("mlp"), &config.encoder_shape())?,
            heads,
        })
    }

    /// `[batch, positions, width]` -> `[batch, width]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, positions, width) = x.dims3()?;
        let head_dim = width / self.heads;
        let kv = self
            .kv_proj
            .forward(x)?
            .reshape((batch, positions, 2, self.heads, head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let key = kv.get(0)?.contiguous()?;
        let value = kv.get(1)?.contiguous()?;
        let query = self
            .query
            .broadcast_as((batch, self.heads, 1, head_dim))?
            .contiguous()?;
        let attended = attention(&query, &key, &value, (head_dim as f64).powf(-0.5))?;
        let pooled = self.out_proj.forward(&attended)?;
        let pooled = self
            .mlp
            .forward_residual(&self.layernorm.forward(&pooled)?, &pooled)?;
        pooled.reshape((batch, width))
    }
}

/// The SigLIP vision transformer.
#[derive(Debug, Clone)]
pub struct VisionTransformer {
    patch_embedding: Linear,
    position_embedding: Tensor,
    encoder: Encoder,
    post_layernorm: LayerNorm,
    head: Option<PoolingHead>,
    config: VisionConfig,
}

impl VisionTransformer {
    /// Loads the tower from its tensors under `vb` (e.g. `vb.pp("vision_model")` for a
    /// `SiglipModel`, `vb.pp("model.vision_model")` for Idefics3); the pooling head only
    /// when `config.use_head`.
    ///
    /// The tower runs in `vb`'s dtype; with bf16 on the CPU the weights of its products
    /// are packed bf16 and the activations stay f32 (see
    /// [`crate::kernels::activation_dtype`]): pixels go in, and states come out, in
    /// that activation dtype.
    pub fn load(vb: VarBuilder, config: &VisionConfig) -> Result<Self> {
        let width = config.hidden_size;
        let patch = config.patch_size;
        if patch == 0 || config.image_size == 0 || !config.image_size.is_multiple_of(patch) {
            candle_core::bail!(
                "the image size {} is not a whole number of {patch}-pixel patches",
                config.image_size
            );
        }
        let embeddings = vb.pp("embeddings");
        let conv = embeddings.pp("patch_embedding");
        let conv_weight = conv.get((width, config.num_channels, patch, patch), "weight")?;
        let conv_bias = conv.get(width, "bias")?;
        let patch_embedding = Linear::from_torch(
            &conv_weight.reshape((width, config.num_channels * patch * patch))?,
            Some(&conv_bias),
            Activation::Identity,
        )?;
        let position_embedding = embeddings
            .pp("position_embedding")
            .get((config.positions(), width), "weight")?
            .to_dtype(activation_dtype(vb.dtype(), vb.device()))?;
        let encoder = Encoder::load(vb.pp("encoder"), &config.encoder_shape())?;
        let post_layernorm =
            LayerNorm::load(vb.pp("post_layernorm"), width, config.layer_norm_eps)?;
        let head = if config.use_head {
            Some(PoolingHead::load(vb.pp("head"), config)?)
        } else {
            None
        };
        Ok(Self {
            patch_embedding,
            position_embedding,
            encoder,
            post_layernorm,
            head,
            config: config.clone(),
        })
    }

    /// The tower's configuration.
    pub fn config(&self) -> &VisionConfig {
        &self.config
    }

    /// Whether the tower has the pooling head.
    pub fn has_head(&self) -> bool {
        self.head.is_some()
    }

    /// The last hidden state (after `post_layernorm`) of normalised pixels
    /// `[batch, channels, image_size, image_size]`: `[batch, positions, hidden_size]`,
    /// positions in row-major patch order.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (batch, channels, height, width) = pixels.dims4()?;
        let config = &self.config;
        let side = config.image_size;
        if channels != config.num_channels || height != side || width != side {
            candle_core::bail!(
                "expected pixels of shape [batch, {}, {side}, {side}], found {:?}",
                config.num_channels,
                pixels.dims()
            );
        }
        let patch = config.patch_size;
        let grid = config.patches_per_side();
        let patches = pixels
            .reshape((batch, channels, grid, patch, grid, patch))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((batch, grid * grid, channels * patch * patch))?;
        let embedded = self
            .patch_embedding
            .forward(&patches)?
            .broadcast_add(&self.position_embedding)?;
        let hidden = self.encoder.forward(&embedded)?;
        self.post_layernorm.forward(&hidden)
    }

    /// The pooling head over a last hidden state `[batch, positions, hidden_size]`:
    /// `[batch, hidden_size]` (transformers' `pooler_output`). Fails without a head.
    pub fn pool(&self, last_hidden_state: &Tensor) -> Result<Tensor> {
        match &self.head {
            Some(head) => head.forward(last_hidden_state),
            None => candle_core::bail!("this vision tower has no pooling head"),
        }
    }

    /// The pooled features of normalised pixels: [`Self::forward`] then [`Self::pool`].
    pub fn forward_pooled(&self, pixels: &Tensor) -> Result<Tensor> {
        self.pool(&self.forward(pixels)?)
    }
}
