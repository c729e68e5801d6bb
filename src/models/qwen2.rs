//! The Qwen2 decoder that FastVLM uses as its language model, which also runs SmolLM2, the
//! Llama decoder of SmolVLM.
//!
//! Grouped-query attention with rotary position embeddings, RMSNorm and a SwiGLU MLP, as
//! transformers' `Qwen2ForCausalLM` and `LlamaForCausalLM` compute them: the two differ only
//! in Qwen2's biases on the query, key and value projections (Llama's `attention_bias`, false
//! for SmolLM2) and in Llama's explicit `head_dim`, both read from the configuration. The model takes input embeddings rather
//! than token ids, so a vision-language model can splice image features into the sequence;
//! a [`KvCache`] makes generation one prefill followed by one step per new token.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, VarBuilder};
use serde_json::Value;

use super::ModelError;
use crate::kernels::{self, activation_dtype, Activation, Linear, OutputProjection};

/// The sizes of a Qwen2 decoder, read from a transformers or LLaVA `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2Config {
    /// Rows of the embedding table and of the output projection.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (fewer than query heads: grouped-query attention).
    pub num_key_value_heads: usize,
    /// Epsilon of the RMS normalisations.
    pub rms_norm_eps: f64,
    /// Base of the rotary position embedding.
    pub rope_theta: f64,
    /// Longest sequence the model was trained for.
    pub max_position_embeddings: usize,
    /// Whether the output projection reuses the embedding table.
    pub tie_word_embeddings: bool,
    /// Width of one attention head (`head_dim`; by default `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// Whether the query, key and value projections have biases: always for Qwen2, Llama's
    /// `attention_bias` (false unless the file says otherwise) for `model_type` `llama`.
    pub attention_bias: bool,
}

impl Qwen2Config {
    /// Reads the sizes from a JSON object (a `text_config`, or the top level of a LLaVA
    /// config). The RoPE base is `rope_parameters.rope_theta` (transformers 5) or
    /// `rope_theta` (older files); `tie_word_embeddings` falls back to `tie_fallback`. A
    /// `model_type` of `llama` (SmolLM2) reads `attention_bias` (default false) and
    /// `head_dim`; any other is Qwen2's, with biases.
    pub fn from_json(config: &Value, tie_fallback: bool, path: &Path) -> Result<Self, ModelError> {
        let size = |key: &str| -> Result<usize, ModelError> {
            config
                .get(key)
                .and_then(Value::as_u64)
                .map(|value| value as usize)
                .ok_or_else(|| ModelError::Config {
                    path: path.to_path_buf(),
                    problem: format!("`{key}` is missing or not a positive integer"),
                })
        };
        let rope_theta = config
            .get("rope_parameters")
            .and_then(|parameters| parameters.get("rope_theta"))
            .or_else(|| config.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(10_000.0);
        let llama = config.get("model_type").and_then(Value::as_str) == Some("llama");
        let attention_bias = config
            .get("attention_bias")
            .and_then(Value::as_bool)
            .unwrap_or(!llama);
        let heads = size("num_attention_heads")?;
        let head_dim = match config.get("head_dim") {
            None | Some(Value::Null) => size("hidden_size")? / heads.max(1),
            Some(_) => size("head_dim")?,
        };
        let parsed = Self {
            vocab_size: size("vocab_size")?,
            hidden_size: size("hidden_size")?,
            intermediate_size: size("intermediate_size")?,
            num_hidden_layers: size("num_hidden_layers")?,
            num_attention_heads: size("num_attention_heads")?,
            num_key_value_heads: config
                .get("num_key_value_heads")
                .and_then(Value::as_u64)
                .map_or(size("num_attention_heads")?, |heads| heads as usize),
            rms_norm_eps: config
                .get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6),
            rope_theta,
            max_position_embeddings: config
                .get("max_position_embeddings")
                .and_then(Value::as_u64)
                .map_or(32_768, |length| length as usize),
            tie_word_embeddings: config
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(tie_fallback),
            head_dim,
            attention_bias,
        };
        parsed.validate().map_err(|problem| ModelError::Config {
            path: path.to_path_buf(),
            problem,
        })?;
        Ok(parsed)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    fn validate(&self) -> Result<(), String> {
        if self.num_attention_heads == 0 || self.head_dim == 0 {
            return Err(format!(
                "`num_attention_heads` {} and the head width {} must be positive",
                self.num_attention_heads, self.head_dim
            ));
        }
        if self.num_key_value_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
        {
            return Err(format!(
                "`num_attention_heads` {} is not a multiple of `num_key_value_heads` {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!("the head width {} is odd", self.head_dim()));
        }
        Ok(())
    }
}

/// Cosine and sine tables of the rotary embedding, for every position up to the maximum.
#[derive(Debug, Clone)]
struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    fn new(config: &Qwen2Config, dtype: DType, device: &Device) -> candle_core::Result<Self> {
        let half = config.head_dim() / 2;
        let inverse_frequencies: Vec<f32> = (0..half)
            .map(|i| {
                1.0 / config
                    .rope_theta
                    .powf(2.0 * i as f64 / config.head_dim() as f64) as f32
            })
            .collect();
        let positions = config.max_position_embeddings;
        let inverse_frequencies = Tensor::from_vec(inverse_frequencies, (1, half), device)?;
        let positions = Tensor::arange(0u32, positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((positions, 1))?;
        let angles = positions.matmul(&inverse_frequencies)?;
        Ok(Self {
            cos: angles.cos()?.to_dtype(dtype)?,
            sin: angles.sin()?.to_dtype(dtype)?,
        })
    }

    /// Rotates `[batch, heads, seq, head_dim]` queries or keys at positions `start..`.
    fn apply(&self, x: &Tensor, start: usize) -> candle_core::Result<Tensor> {
        let seq = x.dim(2)?;
        let cos = self.cos.narrow(0, start, seq)?;
        let sin = self.sin.narrow(0, start, seq)?;
        candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)
    }
}

/// Root-mean-square normalisation with a learned scale.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn load(vb: VarBuilder, size: usize, eps: f64) -> candle_core::Result<Self> {
        let activations = activation_dtype(vb.dtype(), vb.device());
        Ok(Self {
            weight: vb.get(size, "weight")?.to_dtype(activations)?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps)
    }
}

/// Self-attention with grouped key/value heads; the three input projections are one
/// matrix multiplication.
#[derive(Debug, Clone)]
struct Attention {
    qkv: Linear,
    output: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(vb: VarBuilder, config: &Qwen2Config) -> candle_core::Result<Self> {
        let (hidden, head_dim) = (config.hidden_size, config.head_dim());
        let q_width = config.num_attention_heads * head_dim;
        let kv_width = config.num_key_value_heads * head_dim;
        let mut weights = Vec::with_capacity(3);
        let mut biases = Vec::with_capacity(3);
        for (name, rows) in [
            ("q_proj", q_width),
            ("k_proj", kv_width),
            ("v_proj", kv_width),
        ] {
            weights.push(vb.pp(name).get((rows, hidden), "weight")?);
            if config.attention_bias {
                biases.push(vb.pp(name).get(rows, "bias")?);
            }
        }
        let bias = if config.attention_bias {
            Some(Tensor::cat(&biases, 0)?)
        } else {
            None
        };
        let qkv = Linear::from_torch_as_loaded(
            &Tensor::cat(&weights, 0)?,
            bias.as_ref(),
            Activation::Identity,
        )?;
        let output = Linear::from_torch_as_loaded(
            &vb.pp("o_proj").get((hidden, q_width), "weight")?,
            None,
            Activation::Identity,
        )?;
        Ok(Self {
            qkv,
            output,
            heads: config.num_attention_heads,
            kv_heads: config.num_key_value_heads,
            head_dim,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        cache: &mut Option<(Tensor, Tensor)>,
        start: usize,
    ) -> candle_core::Result<Tensor> {
        let (batch, seq, _) = x.dims3()?;
        let qkv = self.qkv.forward(x)?;
        let q_width = self.heads * self.head_dim;
        let kv_width = self.kv_heads * self.head_dim;
        let split = |offset: usize, width: usize, heads: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(D::Minus1, offset, width)?
                .reshape((batch, seq, heads, self.head_dim))?
                .transpose(1, 2)
        };
        let q = rotary.apply(&split(0, q_width, self.heads)?, start)?;
        let k = rotary.apply(&split(q_width, kv_width, self.kv_heads)?, start)?;
        let v = split(q_width + kv_width, kv_width, self.kv_heads)?.contiguous()?;
        let (k, v) = match cache.take() {
            Some((past_k, past_v)) => (
                Tensor::cat(&[&past_k, &k], 2)?,
                Tensor::cat(&[&past_v, &v], 2)?,
            ),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let attended = kernels::causal_attention(&q, &k, &v, scale)?;
        self.output.forward(&attended)
    }
}

/// The SwiGLU feed-forward block; gate and up projections are one matrix multiplication.
#[derive(Debug, Clone)]
struct Mlp {
    gate_up: Linear,
    down: Linear,
    intermediate: usize,
}

impl Mlp {
    fn load(vb: VarBuilder, config: &Qwen2Config) -> candle_core::Result<Self> {
        let (hidden, intermediate) = (config.hidden_size, config.intermediate_size);
        let gate = vb.pp("gate_proj").get((intermediate, hidden), "weight")?;
        let up = vb.pp("up_proj").get((intermediate, hidden), "weight")?;
        Ok(Self {
            gate_up: Linear::from_torch_as_loaded(
                &Tensor::cat(&[gate, up], 0)?,
                None,
                Activation::Identity,
            )?,
            down: Linear::from_torch_as_loaded(
                &vb.pp("down_proj").get((hidden, intermediate), "weight")?,
                None,
                Activation::Identity,
            )?,
            intermediate,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let gate_up = self.gate_up.forward(x)?;
        self.down
            .forward(&kernels::swiglu(&gate_up, self.intermediate)?)
    }
}

/// One pre-norm decoder layer.
#[derive(Debug, Clone)]
struct DecoderLayer {
    input_norm: RmsNorm,
    attention: Attention,
    post_attention_norm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn load(vb: VarBuilder, config: &Qwen2Config) -> candle_core::Result<Self> {
        let (hidden, eps) = (config.hidden_size, config.rms_norm_eps);
        Ok(Self {
            input_norm: RmsNorm::load(vb.pp("input_layernorm"), hidden, eps)?,
            attention: Attention::load(vb.pp("self_attn"), config)?,
            post_attention_norm: RmsNorm::load(vb.pp("post_attention_layernorm"), hidden, eps)?,
            mlp: Mlp::load(vb.pp("mlp"), config)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        cache: &mut Option<(Tensor, Tensor)>,
        start: usize,
    ) -> candle_core::Result<Tensor> {
        let attended =
            self.attention
                .forward(&self.input_norm.forward(x)?, rotary, cache, start)?;
        let x = (x + attended)?;
        let mlp = self.mlp.forward(&self.post_attention_norm.forward(&x)?)?;
        x + mlp
    }
}

/// The keys and values of every position seen so far, per layer.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been seen yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A Qwen2 (or Llama) causal language model.
#[derive(Debug, Clone)]
pub struct Qwen2 {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// The output projection `[vocab, hidden]`, row-major (it may be the embedding table).
    lm_head: OutputProjection,
    rotary: Rotary,
    activations: DType,
    config: Qwen2Config,
}

impl Qwen2 {
    /// Loads the decoder from `model` (holding `embed_tokens`, `layers`, `norm`) and the
    /// output projection from `lm_head` (ignored when the embeddings are tied).
    pub fn load(
        model: VarBuilder,
        lm_head: VarBuilder,
        config: &Qwen2Config,
    ) -> candle_core::Result<Self> {
        let (vocab, hidden) = (config.vocab_size, config.hidden_size);
        let activations = activation_dtype(model.dtype(), model.device());
        let embeddings = model.pp("embed_tokens").get((vocab, hidden), "weight")?;
        let layers = (0..config.num_hidden_layers)
            .map(|index| DecoderLayer::load(model.pp("layers").pp(index), config))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let norm = RmsNorm::load(model.pp("norm"), hidden, config.rms_norm_eps)?;
        let lm_head = if config.tie_word_embeddings {
            embeddings.clone()
        } else {
            lm_head.get((vocab, hidden), "weight")?
        };
        Ok(Self {
            embed_tokens: Embedding::new(embeddings, hidden),
            layers,
            norm,
            lm_head: OutputProjection::new(lm_head)?,
            rotary: Rotary::new(config, activations, model.device())?,
            activations,
            config: config.clone(),
        })
    }

    /// The sizes.
    pub fn config(&self) -> &Qwen2Config {
        &self.config
    }

    /// Embeddings of token ids: `[seq]` (u32) -> `[seq, hidden]`, in the activation dtype.
    pub fn embed(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        self.embed_tokens.forward(ids)?.to_dtype(self.activations)
    }

    /// The dtype of the hidden states (and of the embeddings [`Qwen2::forward_embeds`]
    /// takes).
    pub fn activation_dtype(&self) -> DType {
        self.activations
    }

    /// An empty cache for a new sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: vec![None; self.layers.len()],
            len: 0,
        }
    }

    /// Runs `[batch, seq, hidden]` input embeddings after the positions already in `cache`,
    /// appends them to it, and returns the logits of the last position: `[batch, vocab]`.
    pub fn forward_embeds(
        &self,
        embeds: &Tensor,
        cache: &mut KvCache,
    ) -> candle_core::Result<Tensor> {
        kernels::on_thread_pool(|| {
            let last = self.last_hidden(embeds, cache)?;
            self.lm_head.forward(&last)?.squeeze(1)
        })
    }

    /// [`Self::forward_embeds`] for greedy decoding: the id of each sequence's largest
    /// last-position logit (the first of equal ones), one per batch row. The same token as
    /// the logits' argmax, found without computing every logit (see [`OutputProjection`]).
    pub fn greedy_tokens(
        &self,
        embeds: &Tensor,
        cache: &mut KvCache,
    ) -> candle_core::Result<Vec<u32>> {
        kernels::on_thread_pool(|| {
            let last = self.last_hidden(embeds, cache)?;
            self.lm_head.argmax(&last)
        })
    }

    /// Runs the decoder layers as [`Self::forward_embeds`] describes and returns the
    /// normalised hidden state of the last position, `[batch, 1, hidden]`.
    fn last_hidden(&self, embeds: &Tensor, cache: &mut KvCache) -> candle_core::Result<Tensor> {
        let seq = embeds.dim(1)?;
        let start = cache.len;
        if start + seq > self.config.max_position_embeddings {
            candle_core::bail!(
                "the sequence of {} positions is longer than the model's {}",
                start + seq,
                self.config.max_position_embeddings
            );
        }
        if cache.layers.len() != self.layers.len() {
            cache.layers = vec![None; self.layers.len()];
        }
        let mut x = embeds.clone();
        for (layer, layer_cache) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward(&x, &self.rotary, layer_cache, start)?;
        }
        cache.len = start + seq;
        self.norm.forward(&x.narrow(1, seq - 1, 1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;
    use serde_json::json;

    fn tiny_config() -> Qwen2Config {
        Qwen2Config::from_json(
            &json!({"vocab_size": 40, "hidden_size": 16, "intermediate_size": 24,
                    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                    "rope_parameters": {"rope_theta": 500.0}, "max_position_embeddings": 64}),
            false,
            Path::new("config.json"),
        )
        .unwrap()
    }

    /// A model with random weights: the first load creates every tensor in the map, they
    /// are then filled with noise, and the second load reads the noise.
    fn random_model(config: &Qwen2Config) -> Qwen2 {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        Qwen2::load(vb.pp("model"), vb.pp("lm_head"), config).unwrap();
        for var in varmap.all_vars() {
            var.set(&Tensor::randn(0f32, 0.3, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
        Qwen2::load(vb.pp("model"), vb.pp("lm_head"), config).unwrap()
    }

    #[test]
    fn reads_both_places_of_the_rope_base() {
        assert_eq!(tiny_config().rope_theta, 500.0);
        let old = Qwen2Config::from_json(
            &json!({"vocab_size": 40, "hidden_size": 16, "intermediate_size": 24,
                    "num_hidden_layers": 2, "num_attention_heads": 4, "rope_theta": 1e6,
                    "tie_word_embeddings": true}),
            false,
            Path::new("config.json"),
        )
        .unwrap();
        assert_eq!(old.rope_theta, 1e6);
        assert_eq!(old.num_key_value_heads, 4);
        assert!(old.tie_word_embeddings);
    }

    #[test]
    fn llama_configs_have_no_attention_bias_and_their_own_head_width() {
        let smollm2 = Qwen2Config::from_json(
            &json!({"model_type": "llama", "vocab_size": 49280, "hidden_size": 576,
                    "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                    "num_key_value_heads": 3, "head_dim": 64, "rope_theta": 100000}),
            false,
            Path::new("config.json"),
        )
        .unwrap();
        assert!(!smollm2.attention_bias);
        assert_eq!((smollm2.head_dim(), smollm2.rope_theta), (64, 100000.0));
        let qwen2 = tiny_config();
        assert!(qwen2.attention_bias);
        assert_eq!(qwen2.head_dim(), 4);
    }

    #[test]
    fn bad_head_counts_name_the_field() {
        let error = Qwen2Config::from_json(
            &json!({"vocab_size": 40, "hidden_size": 16, "intermediate_size": 24,
                    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 3}),
            false,
            Path::new("config.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("num_key_value_heads"), "{error}");
    }

    #[test]
    fn incremental_decoding_matches_one_full_pass() {
        let config = tiny_config();
        let model = random_model(&config);
        let ids = Tensor::new(&[3u32, 17, 5, 9, 30, 2], &Device::Cpu).unwrap();
        let embeds = model.embed(&ids).unwrap().unsqueeze(0).unwrap();
        let mut full_cache = model.new_cache();
        let full = model.forward_embeds(&embeds, &mut full_cache).unwrap();
        let mut cache = model.new_cache();
        model
            .forward_embeds(&embeds.narrow(1, 0, 4).unwrap(), &mut cache)
            .unwrap();
        model
            .forward_embeds(&embeds.narrow(1, 4, 1).unwrap(), &mut cache)
            .unwrap();
        let stepped = model
            .forward_embeds(&embeds.narrow(1, 5, 1).unwrap(), &mut cache)
            .unwrap();
        assert_eq!(cache.len(), 6);
        let diff = (full - stepped)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "cached decoding differs by {diff}");
    }

    #[test]
    fn greedy_tokens_are_the_argmax_of_the_logits_at_every_step() {
        let config = tiny_config();
        let model = random_model(&config);
        let (mut logits_cache, mut greedy_cache) = (model.new_cache(), model.new_cache());
        let mut ids = Tensor::new(&[3u32, 17, 5], &Device::Cpu).unwrap();
        for _ in 0..8 {
            let embeds = model.embed(&ids).unwrap().unsqueeze(0).unwrap();
            let logits = model.forward_embeds(&embeds, &mut logits_cache).unwrap();
            let greedy = model.greedy_tokens(&embeds, &mut greedy_cache).unwrap();
            let expected = logits.argmax(D::Minus1).unwrap().to_vec1::<u32>().unwrap();
            assert_eq!(greedy, expected);
            ids = Tensor::new(greedy.as_slice(), &Device::Cpu).unwrap();
        }
        assert_eq!(greedy_cache.len(), 10);
    }

    #[test]
    fn too_long_a_sequence_is_an_error() {
        let config = tiny_config();
        let model = random_model(&config);
        let embeds = Tensor::zeros((1, 65, 16), DType::F32, &Device::Cpu).unwrap();
        let error = model
            .forward_embeds(&embeds, &mut model.new_cache())
            .unwrap_err()
            .to_string();
        assert!(error.contains("65"), "{error}");
    }
}
