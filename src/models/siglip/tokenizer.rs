//! SigLIP2's text tokenizer as transformers 5 runs it for a fixed-resolution SigLIP2
//! checkpoint: Gemma's byte-fallback BPE from `tokenizer.json`, the special tokens of
//! `tokenizer_config.json`, and the processor call the model card gives,
//! `processor(text=..., padding="max_length", max_length=64, truncation=True)`.
//!
//! `AutoProcessor` loads such a checkpoint's tokenizer as `GemmaTokenizer`
//! (`tokenizer_config.json`'s `tokenizer_class`; `model_type "siglip"` is not one of the
//! types whose Hub class transformers overrides). That class rebuilds the text pipeline
//! around the file's vocabulary and merges: normaliser `Replace(" ", "▁")` (no lower-casing,
//! no NFKC), pre-tokenizer `Split(" ", merged_with_previous)`, and BOS/EOS from
//! `add_bos_token` / `add_eos_token` (class defaults: BOS yes, EOS no; SigLIP2's files say
//! EOS only). So this tokenizer takes the BPE model and added tokens from `tokenizer.json`
//! and sets that pipeline itself, whatever the file's own normaliser says. Truncation keeps
//! the first `max_length` minus the special tokens; padding uses `pad_token` on
//! `padding_side` (the class default is left; SigLIP2's files say right).

use std::path::Path;

use serde_json::Value;
use tokenizers::normalizers::Replace;
use tokenizers::pre_tokenizers::split::Split;
use tokenizers::{SplitDelimiterBehavior, Tokenizer};

use crate::models::{read_json, ModelError};

/// Tokens per text: the processor call's `max_length`, and SigLIP2's text positions.
pub const MAX_LENGTH: usize = 64;

/// The Gemma tokenizer of a SigLIP2 checkpoint.
#[derive(Debug, Clone)]
pub struct GemmaTokenizer {
    tokenizer: Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: u32,
    pad_left: bool,
    max_length: usize,
}

impl GemmaTokenizer {
    /// Reads `tokenizer.json` and `tokenizer_config.json`; texts become `max_length` ids.
    pub fn from_files(
        tokenizer_json: &Path,
        tokenizer_config: &Path,
        max_length: usize,
    ) -> Result<Self, ModelError> {
        let bad_json = |problem: String| ModelError::BadFile {
            path: tokenizer_json.to_path_buf(),
            problem,
        };
        let mut tokenizer = Tokenizer::from_file(tokenizer_json)
            .map_err(|error| bad_json(format!("not a readable tokenizer ({error})")))?;
        let normalizer = Replace::new(" ", "▁")
            .map_err(|error| bad_json(format!("cannot build the normaliser ({error})")))?;
        let split = Split::new(" ", SplitDelimiterBehavior::MergedWithPrevious, false)
            .map_err(|error| bad_json(format!("cannot build the pre-tokenizer ({error})")))?;
        tokenizer
            .with_normalizer(Some(normalizer))
            .map_err(|error| bad_json(format!("cannot set the normaliser ({error})")))?;
        tokenizer
            .with_pre_tokenizer(Some(split))
            .with_post_processor(None::<tokenizers::PostProcessorWrapper>)
            .with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|error| bad_json(format!("cannot turn truncation off ({error})")))?;

        let config = read_json(tokenizer_config)?.ok_or_else(|| ModelError::Io {
            path: tokenizer_config.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        })?;
        let bad_config = |problem: String| ModelError::Config {
            path: tokenizer_config.to_path_buf(),
            problem,
        };
        let flag = |name: &str, default: bool| match config.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(value)) => Ok(*value),
            Some(other) => Err(bad_config(format!(
                "`{name}` must be a boolean, found {other}"
            ))),
        };
        let token_id = |name: &str, default: &str| -> Result<u32, ModelError> {
            let token = match config.get(name) {
                None | Some(Value::Null) => default,
                Some(Value::String(token)) => token.as_str(),
                Some(Value::Object(added)) => added
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad_config(format!("`{name}` has no `content` string")))?,
                Some(other) => {
                    return Err(bad_config(format!(
                        "`{name}` must be a token, found {other}"
                    )))
                }
            };
            tokenizer.token_to_id(token).ok_or_else(|| {
                bad_config(format!(
                    "`{name}` is {token:?}, which {} does not know",
                    tokenizer_json.display()
                ))
            })
        };
        let bos = flag("add_bos_token", true)?
            .then(|| token_id("bos_token", "<bos>"))
            .transpose()?;
        let eos = flag("add_eos_token", false)?
            .then(|| token_id("eos_token", "<eos>"))
            .transpose()?;
        let pad = token_id("pad_token", "<pad>")?;
        let pad_left = match config.get("padding_side").and_then(Value::as_str) {
            None | Some("left") => true,
            Some("right") => false,
            Some(other) => {
                return Err(bad_config(format!(
                    "`padding_side` must be \"left\" or \"right\", found {other:?}"
                )))
            }
        };
        if max_length <= usize::from(bos.is_some()) + usize::from(eos.is_some()) {
            return Err(bad_config(format!(
                "{max_length} tokens per text leave no room for text"
            )));
        }
        Ok(Self {
            tokenizer,
            bos,
            eos,
            pad,
            pad_left,
            max_length,
        })
    }

    /// Ids per text.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The padding id.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// The ids of one text: BOS/EOS as configured, truncated and padded to `max_length`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self.tokenizer.encode_fast(text, false).map_err(|error| {
            ModelError::Candle(candle_core::Error::Msg(format!(
                "cannot tokenize {text:?}: {error}"
            )))
        })?;
        let room =
            self.max_length - usize::from(self.bos.is_some()) - usize::from(self.eos.is_some());
        let text_ids = &encoding.get_ids()[..encoding.get_ids().len().min(room)];
        let mut ids = Vec::with_capacity(self.max_length);
        ids.extend(self.bos);
        ids.extend_from_slice(text_ids);
        ids.extend(self.eos);
        let padding = self.max_length - ids.len();
        if self.pad_left {
            ids.splice(0..0, std::iter::repeat_n(self.pad, padding));
        } else {
            ids.resize(self.max_length, self.pad);
        }
        Ok(ids)
    }
}
