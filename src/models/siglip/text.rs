//! The SigLIP text transformer (transformers' `SiglipTextTransformer`): token and position
//! embeddings, the bidirectional [`Encoder`] (no attention mask: padding takes part, as in
//! the reference, whose processor returns no mask), `final_layer_norm`, the last position's
//! state through the `head` projection.
//!
//! Tensor names under the tower's prefix (`text_model`):
//! `embeddings.{token_embedding,position_embedding}.weight`, `encoder.layers.N.*`,
//! `final_layer_norm.{weight,bias}`, `head.{weight,bias}`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::encoder::{linear, Encoder, EncoderShape, HiddenAct, LayerNorm};
use crate::kernels::{activation_dtype, Activation, Linear};

/// The text tower's configuration: `config.json`'s `text_config`, with transformers'
/// `SiglipTextConfig` defaults for missing fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Residual stream width.
    pub hidden_size: usize,
    /// MLP hidden width.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Text positions (64).
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub hidden_act: HiddenAct,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Output width of `head` (`None`: `hidden_size`).
    pub projection_size: Option<usize>,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 32000,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 64,
            hidden_act: HiddenAct::GeluPytorchTanh,
            layer_norm_eps: 1e-6,
            projection_size: None,
        }
    }
}

impl TextConfig {
    /// SigLIP2-base's text tower (Gemma vocabulary).
    pub fn siglip2_base() -> Self {
        Self {
            vocab_size: 256_000,
            ..Self::default()
        }
    }

    /// Width of the tower's output.
    pub fn output_size(&self) -> usize {
        self.projection_size.unwrap_or(self.hidden_size)
    }
}

/// The SigLIP text transformer.
#[derive(Debug, Clone)]
pub struct TextTransformer {
    token_embedding: Tensor,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
    head: Linear,
    config: TextConfig,
}

impl TextTransformer {
    /// Loads the tower from its tensors under `vb` (`vb.pp("text_model")`), in `vb`'s
    /// dtype (bf16 on the CPU: packed bf16 products, f32 activations; the token embeddings
    /// stay bf16 and only the rows looked up are widened).
    pub fn load(vb: VarBuilder, config: &TextConfig) -> Result<Self> {
        let width = config.hidden_size;
        let dtype = activation_dtype(vb.dtype(), vb.device());
        let embeddings = vb.pp("embeddings");
        let shape = EncoderShape {
            hidden_size: width,
            intermediate_size: config.intermediate_size,
            layers: config.num_hidden_layers,
            heads: config.num_attention_heads,
            layer_norm_eps: config.layer_norm_eps,
            hidden_act: config.hidden_act,
        };
        Ok(Self {
            token_embedding: embeddings
                .pp("token_embedding")
                .get((config.vocab_size, width), "weight")?,
            position_embedding: embeddings
                .pp("position_embedding")
                .get((config.max_position_embeddings, width), "weight")?
                .to_dtype(dtype)?,
            encoder: Encoder::load(vb.pp("encoder"), &shape)?,
            final_layer_norm: LayerNorm::load(
                vb.pp("final_layer_norm"),
                width,
                config.layer_norm_eps,
            )?,
            head: linear(
                &vb.pp("head"),
                config.output_size(),
                width,
                Activation::Identity,
            )?,
            config: config.clone(),
        })
    }

    /// The tower's configuration.
    pub fn config(&self) -> &TextConfig {
        &self.config
    }

    /// Text features (not normalised) of token ids `[batch, tokens]` (u32, at most
    /// `max_position_embeddings` tokens): the last position's final state through `head`,
    /// `[batch, output_size]` (transformers' `pooler_output`).
    pub fn forward(&self, token_ids: &Tensor) -> Result<Tensor> {
        let (batch, tokens) = token_ids.dims2()?;
        if tokens == 0 || tokens > self.config.max_position_embeddings {
            candle_core::bail!(
                "expected 1 to {} tokens per text, found {tokens}",
                self.config.max_position_embeddings
            );
        }
        let width = self.config.hidden_size;
        let embedded = self
            .token_embedding
            .index_select(&token_ids.flatten_all()?, 0)?
            .reshape((batch, tokens, width))?
            .to_dtype(self.position_embedding.dtype())?
            .broadcast_add(&self.position_embedding.narrow(0, 0, tokens)?)?;
        let hidden = self.encoder.forward(&embedded)?;
        let last = hidden.narrow(1, tokens - 1, 1)?.reshape((batch, width))?;
        self.head.forward(&self.final_layer_norm.forward(&last)?)
    }
}
