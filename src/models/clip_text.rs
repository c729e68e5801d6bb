//! The CLIP text transformer of open_clip's `TextTransformer`, as MobileCLIP2 configures it:
//! token and position embeddings, pre-norm residual attention blocks (GELU MLP), final
//! LayerNorm, pooling at the end-of-text token (the highest id), linear projection.
//!
//! Tensor names are open_clip's, under the tower's prefix (`text.`):
//! `token_embedding.weight`, `positional_embedding`,
//! `transformer.resblocks.N.{ln_1,attn.in_proj_*,attn.out_proj,ln_2,mlp.c_fc,mlp.c_proj}`,
//! `ln_final`, `text_projection`.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::kernels::{Activation, Linear};

/// LayerNorm epsilon (PyTorch's default).
const LAYER_NORM_EPS: f32 = 1e-5;

/// The text tower's shape (open_clip's `text_cfg` plus the shared `embed_dim`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    /// Tokens per text.
    pub context_length: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Residual stream width.
    pub width: usize,
    /// Attention heads.
    pub heads: usize,
    /// Residual blocks.
    pub layers: usize,
    /// MLP hidden width relative to `width`.
    pub mlp_ratio: f64,
    /// Output (projection) width.
    pub embed_dim: usize,
    /// Whether attention is causal (open_clip's default) or bidirectional
    /// (`no_causal_mask`, MobileCLIP2).
    pub causal: bool,
}

/// A LayerNorm's weight and bias.
#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn load(vb: VarBuilder, width: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get(width, "weight")?,
            bias: vb.get(width, "bias")?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, LAYER_NORM_EPS)
    }
}

/// A linear layer from open_clip's `[out, in]` weight and bias.
fn linear(
    vb: &VarBuilder,
    weight: &str,
    bias: &str,
    out_dim: usize,
    in_dim: usize,
    activation: Activation,
) -> Result<Linear> {
    let w = vb.get((out_dim, in_dim), weight)?;
    let b = vb.get(out_dim, bias)?;
    Linear::from_torch(&w, Some(&b), activation)
}

/// One pre-norm residual block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Debug, Clone)]
struct ResidualBlock {
    ln_1: LayerNorm,
    in_proj: Linear,
    out_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    c_proj: Linear,
    heads: usize,
}

impl ResidualBlock {
    fn load(vb: VarBuilder, config: &TextConfig) -> Result<Self> {
        let width = config.width;
        let hidden = (width as f64 * config.mlp_ratio) as usize;
        let attn = vb.pp("attn");
        let mlp = vb.pp("mlp");
        Ok(Self {
            ln_1: LayerNorm::load(vb.pp("ln_1"), width)?,
            in_proj: linear(
                &attn,
                "in_proj_weight",
                "in_proj_bias",
                3 * width,
                width,
                Activation::Identity,
            )?,
            out_proj: linear(
                &attn.pp("out_proj"),
                "weight",
                "bias",
                width,
                width,
                Activation::Identity,
            )?,
            ln_2: LayerNorm::load(vb.pp("ln_2"), width)?,
            c_fc: linear(
                &mlp.pp("c_fc"),
                "weight",
                "bias",
                hidden,
                width,
                Activation::Gelu,
            )?,
            c_proj: linear(
                &mlp.pp("c_proj"),
                "weight",
                "bias",
                width,
                hidden,
                Activation::Identity,
            )?,
            heads: config.heads,
        })
    }

    /// The block over `x: [batch, tokens, width]`, with an additive attention `mask`.
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (batch, tokens, width) = x.dims3()?;
        let head_dim = width / self.heads;
        let qkv = self
            .in_proj
            .forward(&self.ln_1.forward(x)?)?
            .reshape((batch, tokens, 3, self.heads, head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let query = (qkv.get(0)?.contiguous()? * (head_dim as f64).powf(-0.5))?;
        let key = qkv.get(1)?.contiguous()?;
        let value = qkv.get(2)?.contiguous()?;
        let mut scores = query.matmul(&key.t()?)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let attended = candle_nn::ops::softmax_last_dim(&scores)?
            .matmul(&value)?
            .transpose(1, 2)?
            .reshape((batch, tokens, width))?;
        let x = self.out_proj.forward_residual(&attended, x)?;
        let hidden = self.c_fc.forward(&self.ln_2.forward(&x)?)?;
        self.c_proj.forward_residual(&hidden, &x)
    }
}

/// The CLIP text tower.
#[derive(Debug, Clone)]
pub struct TextTransformer {
    token_embedding: Tensor,
    positional_embedding: Tensor,
    blocks: Vec<ResidualBlock>,
    ln_final: LayerNorm,
    text_projection: Tensor,
    causal_mask: Option<Tensor>,
    config: TextConfig,
}

impl TextTransformer {
    /// Loads the tower from open_clip's tensor names under `vb` (e.g. `vb.pp("text")`).
    pub fn load(vb: VarBuilder, config: &TextConfig) -> Result<Self> {
        if config.heads == 0 || !config.width.is_multiple_of(config.heads) {
            candle_core::bail!(
                "the text width {} is not divisible into {} heads",
                config.width,
                config.heads
            );
        }
        let blocks_vb = vb.pp("transformer").pp("resblocks");
        let blocks = (0..config.layers)
            .map(|i| ResidualBlock::load(blocks_vb.pp(i), config))
            .collect::<Result<Vec<_>>>()?;
        let causal_mask = if config.causal {
            let n = config.context_length;
            let mask: Vec<f32> = (0..n * n)
                .map(|i| {
                    if i % n > i / n {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect();
            Some(Tensor::from_vec(mask, (n, n), vb.device())?.to_dtype(vb.dtype())?)
        } else {
            None
        };
        Ok(Self {
            token_embedding: vb.get((config.vocab_size, config.width), "token_embedding.weight")?,
            positional_embedding: vb.get(
                (config.context_length, config.width),
                "positional_embedding",
            )?,
            blocks,
            ln_final: LayerNorm::load(vb.pp("ln_final"), config.width)?,
            text_projection: vb.get((config.width, config.embed_dim), "text_projection")?,
            causal_mask,
            config: config.clone(),
        })
    }

    /// The tower's configuration.
    pub fn config(&self) -> &TextConfig {
        &self.config
    }

    /// Text features (not normalised) for token ids `[batch, context_length]` (u32), pooled
    /// at each row's highest id (the end-of-text token): `[batch, embed_dim]`.
    pub fn forward(&self, token_ids: &Tensor) -> Result<Tensor> {
        let (batch, tokens) = token_ids.dims2()?;
        if tokens != self.config.context_length {
            candle_core::bail!(
                "expected {} tokens per text, found {tokens}",
                self.config.context_length
            );
        }
        let width = self.config.width;
        let embedded = self
            .token_embedding
            .index_select(&token_ids.flatten_all()?, 0)?
            .reshape((batch, tokens, width))?;
        let mut x = embedded.broadcast_add(&self.positional_embedding)?;
        for block in &self.blocks {
            x = block.forward(&x, self.causal_mask.as_ref())?;
        }
        let x = self.ln_final.forward(&x)?;
        let end_of_text = token_ids
            .argmax_keepdim(D::Minus1)?
            .to_dtype(DType::U32)?
            .unsqueeze(2)?
            .broadcast_as((batch, 1, width))?
            .contiguous()?;
        let pooled = x.gather(&end_of_text, 1)?.squeeze(1)?;
        pooled.matmul(&self.text_projection)
    }
}
