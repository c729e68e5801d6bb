//! Text generation shared by the captioners: decoding settings, what a generation reports,
//! and the prefill-then-sample loop over a cached decoder language model.

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};

use super::qwen2::{KvCache, Qwen2};
use super::ModelError;

/// The text side of a tokenizer as generation needs it.
pub trait TokenText {
    /// The text of `ids`, special tokens left out.
    fn decode(&self, ids: &[u32]) -> Result<String, ModelError>;
    /// Tokens that end a generation (kept as the last generated id).
    fn stop_ids(&self) -> &[u32];
}

/// How to pick each new token.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationSettings {
    /// At most this many new tokens.
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 or less is greedy decoding.
    pub temperature: f64,
    /// Nucleus sampling threshold (1 keeps every token).
    pub top_p: f64,
    /// Seed of the sampler.
    pub seed: u64,
}

impl GenerationSettings {
    /// Greedy decoding of up to `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        }
    }

    /// The sampler, or `None` for greedy decoding.
    fn sampler(&self) -> Option<LogitsProcessor> {
        if self.temperature <= 0.0 {
            return None;
        }
        let sampling = if self.top_p < 1.0 {
            Sampling::TopP {
                p: self.top_p,
                temperature: self.temperature,
            }
        } else {
            Sampling::All {
                temperature: self.temperature,
            }
        };
        Some(LogitsProcessor::from_sampling(self.seed, sampling))
    }
}

/// What one generation produced and how fast.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The decoded text, special tokens left out, trimmed.
    pub text: String,
    /// The new token ids (a final stop token included).
    pub token_ids: Vec<u32>,
    /// Positions in the prompt (image features included).
    pub prompt_tokens: usize,
    /// Time spent encoding the image (zero without one).
    pub vision: Duration,
    /// From the call to the first new token: preprocessing, vision, prefill, sampling.
    pub time_to_first_token: Duration,
    /// New tokens per second after the first.
    pub tokens_per_second: f64,
}

/// Prefills `embeds` (`[1, positions, hidden]`) into `language` and samples until one of the
/// tokenizer's stop tokens or the token limit; `start` is when the caller began (for the time
/// to first token), `on_token` receives the text as it grows.
pub fn generate(
    language: &Qwen2,
    tokenizer: &dyn TokenText,
    embeds: &Tensor,
    start: Instant,
    settings: &GenerationSettings,
    on_token: &mut dyn FnMut(&str),
) -> Result<Generation, ModelError> {
    let prompt_tokens = embeds.dim(1)?;
    let mut sampler = settings.sampler();
    // Greedy decoding asks the language model for the token itself, which it finds
    // without computing every logit.
    let mut next_token = |embeds: &Tensor, cache: &mut KvCache| -> Result<u32, ModelError> {
        match sampler.as_mut() {
            None => Ok(language.greedy_tokens(embeds, cache)?[0]),
            Some(sampler) => {
                let logits = language.forward_embeds(embeds, cache)?;
                Ok(sampler.sample(&logits.squeeze(0)?.to_dtype(DType::F32)?)?)
            }
        }
    };
    let mut cache: KvCache = language.new_cache();
    let mut token = next_token(embeds, &mut cache)?;
    let mut token_ids = Vec::new();
    let mut text = String::new();
    let mut first_token_at = None;
    while token_ids.len() < settings.max_new_tokens {
        first_token_at.get_or_insert_with(Instant::now);
        token_ids.push(token);
        if tokenizer.stop_ids().contains(&token) {
            break;
        }
        let decoded = tokenizer.decode(&token_ids)?;
        // Hold back text that ends inside a multi-byte character still being generated.
        if decoded.len() > text.len() && !decoded.ends_with('\u{FFFD}') {
            on_token(&decoded[text.len()..]);
            text = decoded;
        }
        if token_ids.len() == settings.max_new_tokens {
            break;
        }
        let next = Tensor::new(&[token], embeds.device())?;
        let embedded = language.embed(&next)?.unsqueeze(0)?;
        token = next_token(&embedded, &mut cache)?;
    }
    // Text held back while a character was incomplete is sent once the generation ends.
    let decoded = tokenizer.decode(&token_ids)?;
    if decoded.len() > text.len() && decoded.starts_with(&text) {
        on_token(&decoded[text.len()..]);
    }
    let first_token_at = first_token_at.unwrap_or_else(Instant::now);
    let after_first = token_ids.len().saturating_sub(1);
    let decode_time = first_token_at.elapsed().as_secs_f64();
    Ok(Generation {
        text: decoded.trim().to_string(),
        token_ids,
        prompt_tokens,
        vision: Duration::ZERO,
        time_to_first_token: first_token_at - start,
        tokens_per_second: if after_first > 0 && decode_time > 0.0 {
            after_first as f64 / decode_time
        } else {
            0.0
        },
    })
}

/// `f32` or `bf16` as a candle dtype.
pub fn parse_dtype(name: &str) -> Result<DType, String> {
    match name {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        other => Err(format!(
            "unknown dtype {other:?} (expected `auto`, `f32` or `bf16`)"
        )),
    }
}

/// The dtype a captioner on `device` computes in for a `caption.dtype` of `auto`, `f32` or
/// `bf16`: `auto` is [`auto_dtype`].
pub fn resolve_dtype(name: &str, device: &Device) -> Result<DType, String> {
    match name {
        "auto" => Ok(auto_dtype(device)),
        other => parse_dtype(other),
    }
}

/// What `dtype = "auto"` means on `device`: bf16 on a CUDA GPU, and on a CPU whose kernels
/// run bf16 products in hardware (AVX-512 BF16 at the active instruction-set level, see
/// [`crate::kernels::bf16_dot_products_available`]); f32 elsewhere, where bf16 would only
/// lose precision.
pub fn auto_dtype(device: &Device) -> DType {
    let fast_bf16 = if device.is_cpu() {
        crate::kernels::bf16_dot_products_available()
    } else {
        device.is_cuda()
    };
    if fast_bf16 {
        DType::BF16
    } else {
        DType::F32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtypes_are_named() {
        assert_eq!(parse_dtype("bf16").unwrap(), DType::BF16);
        assert_eq!(parse_dtype("f32").unwrap(), DType::F32);
        assert!(parse_dtype("f16").unwrap_err().contains("f16"));
        assert!(parse_dtype("auto").is_err());
    }

    #[test]
    fn auto_is_bf16_where_the_kernels_multiply_bf16_in_hardware() {
        let cpu = Device::Cpu;
        assert_eq!(resolve_dtype("f32", &cpu).unwrap(), DType::F32);
        assert_eq!(resolve_dtype("bf16", &cpu).unwrap(), DType::BF16);
        assert!(resolve_dtype("f16", &cpu).unwrap_err().contains("auto"));
        let auto = resolve_dtype("auto", &cpu).unwrap();
        let expected = if crate::kernels::bf16_dot_products_available() {
            DType::BF16
        } else {
            DType::F32
        };
        assert_eq!(auto, expected);
        // A forced level below AVX-512 has no bf16 dot products: auto is f32 there.
        if crate::kernels::Isa::active() < crate::kernels::Isa::Avx512 {
            assert_eq!(auto, DType::F32);
        }
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::Isa::active() == crate::kernels::Isa::Avx512
            && std::is_x86_feature_detected!("avx512bf16")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
        {
            assert_eq!(auto, DType::BF16);
        }
    }
}
