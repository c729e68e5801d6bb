//! Qwen2's byte-level BPE tokenizer and chat template, as FastVLM checkpoints ship them.
//!
//! The tokenizer comes from `tokenizer.json` when the checkpoint has one (the transformers
//! layout), or is assembled from `vocab.json` + `merges.txt` + the added tokens listed in
//! `tokenizer_config.json` / `added_tokens.json` (Apple's original layout) with Qwen2's
//! normaliser, pre-tokeniser and decoder.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::checkpoint::TokenizerFiles;
use super::{read_json, ModelError};

/// Qwen2's pre-tokenisation pattern: contractions, letter runs with one leading non-letter,
/// single digits, punctuation runs, newlines and other whitespace.
const PRE_TOKENIZE_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Starts a chat turn.
pub const IM_START: &str = "<|im_start|>";
/// Ends a chat turn; generation stops here.
pub const IM_END: &str = "<|im_end|>";
/// Ends a document; generation stops here too.
pub const END_OF_TEXT: &str = "<|endoftext|>";
/// The system prompt Qwen2's chat template uses when none is given.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant.";

/// A Qwen2 tokenizer with the ids of its turn markers.
#[derive(Clone)]
pub struct Qwen2Tokenizer {
    tokenizer: Tokenizer,
    stop_ids: Vec<u32>,
}

impl std::fmt::Debug for Qwen2Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qwen2Tokenizer")
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .field("stop_ids", &self.stop_ids)
            .finish()
    }
}

impl Qwen2Tokenizer {
    /// Reads a checkpoint's tokenizer from the files its layout provides (see
    /// [`CheckpointFiles`](super::checkpoint::CheckpointFiles)): `tokenizer.json`, or
    /// `vocab.json` + `merges.txt` with the added tokens listed beside them.
    pub fn load(files: &TokenizerFiles) -> Result<Self, ModelError> {
        let (tokenizer, path) = match files {
            TokenizerFiles::Json(json) => (
                Tokenizer::from_file(json).map_err(|error| ModelError::BadFile {
                    path: json.clone(),
                    problem: format!("not a readable tokenizer ({error})"),
                })?,
                json,
            ),
            TokenizerFiles::VocabAndMerges { vocab, merges } => {
                (from_vocab_and_merges(vocab, merges)?, vocab)
            }
        };
        let stop_ids: Vec<u32> = [IM_END, END_OF_TEXT]
            .iter()
            .filter_map(|token| tokenizer.token_to_id(token))
            .collect();
        if tokenizer.token_to_id(IM_END).is_none() {
            return Err(ModelError::BadFile {
                path: path.clone(),
                problem: format!("the tokenizer has no `{IM_END}` token"),
            });
        }
        Ok(Self {
            tokenizer,
            stop_ids,
        })
    }

    /// Token ids of `text`, special tokens written in the text recognised, nothing added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|error| tokenizer_error(text, &*error))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of token ids, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|error| tokenizer_error("generated tokens", &*error))
    }

    /// The id of a token, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Ids at which generation stops (`<|im_end|>`, `<|endoftext|>`).
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Tokens in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}

impl super::generation::TokenText for Qwen2Tokenizer {
    fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        Qwen2Tokenizer::decode(self, ids)
    }

    fn stop_ids(&self) -> &[u32] {
        Qwen2Tokenizer::stop_ids(self)
    }
}

/// Qwen2's chat template with one system and one user turn, open for the assistant's reply
/// (`add_generation_prompt`).
pub fn chat_prompt(system: Option<&str>, user: &str) -> String {
    let system = system.unwrap_or(DEFAULT_SYSTEM_PROMPT);
    format!(
        "{IM_START}system\n{system}{IM_END}\n{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n"
    )
}

fn tokenizer_error(input: &str, error: &(dyn std::error::Error + Send + Sync)) -> ModelError {
    ModelError::Candle(candle_core::Error::Msg(format!(
        "cannot tokenize {input:?}: {error}"
    )))
}

/// The tokenizer of Apple's layout: BPE from `vocab.json` + `merges.txt`, Qwen2's text
/// processing, and the added tokens at the ids the configuration gives them.
fn from_vocab_and_merges(vocab: &Path, merges: &Path) -> Result<Tokenizer, ModelError> {
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .build()
        .map_err(|error| ModelError::BadFile {
            path: vocab.to_path_buf(),
            problem: format!("cannot build the BPE model with merges.txt ({error})"),
        })?;
    let split = Split::new(
        SplitPattern::Regex(PRE_TOKENIZE_PATTERN.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|error| ModelError::BadFile {
        path: vocab.to_path_buf(),
        problem: format!("the pre-tokenizer pattern does not compile ({error})"),
    })?;
    let byte_level = tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, false, false);
    let assembly_error = |error: tokenizers::Error| ModelError::BadFile {
        path: vocab.to_path_buf(),
        problem: format!("cannot assemble the tokenizer ({error})"),
    };
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_normalizer(Some(NFC))
        .map_err(assembly_error)?
        .with_pre_tokenizer(Some(Sequence::new(vec![split.into(), byte_level.into()])))
        .with_decoder(Some(ByteLevel::new(false, false, false)));
    let mut added = added_tokens(vocab.parent().unwrap_or(Path::new(".")))?;
    added.sort_by_key(|token| token.id);
    for token in added {
        let content = AddedToken::from(token.content.clone(), token.special).normalized(false);
        if token.special {
            tokenizer
                .add_special_tokens([content])
                .map_err(assembly_error)?;
        } else {
            tokenizer.add_tokens([content]).map_err(assembly_error)?;
        }
        let assigned = tokenizer.token_to_id(&token.content);
        if assigned != Some(token.id) {
            return Err(ModelError::BadFile {
                path: token.source,
                problem: format!(
                    "added token {:?} should have id {} but the vocabulary gives it {assigned:?}",
                    token.content, token.id
                ),
            });
        }
    }
    Ok(tokenizer)
}

/// A token added on top of the BPE vocabulary.
struct Added {
    content: String,
    id: u32,
    special: bool,
    source: PathBuf,
}

/// The added tokens: `tokenizer_config.json`'s `added_tokens_decoder`, else
/// `added_tokens.json` (all special, as Qwen2's turn markers are).
fn added_tokens(dir: &Path) -> Result<Vec<Added>, ModelError> {
    let config_path = dir.join("tokenizer_config.json");
    if let Some(config) = read_json(&config_path)? {
        if let Some(decoder) = config
            .get("added_tokens_decoder")
            .and_then(Value::as_object)
        {
            return decoder
                .iter()
                .map(|(id, token)| {
                    let bad = |problem: &str| ModelError::BadFile {
                        path: config_path.clone(),
                        problem: format!("added token {id}: {problem}"),
                    };
                    Ok(Added {
                        content: token
                            .get("content")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad("no `content`"))?
                            .to_string(),
                        id: id.parse().map_err(|_| bad("the id is not a number"))?,
                        special: token
                            .get("special")
                            .and_then(Value::as_bool)
                            .unwrap_or(true),
                        source: config_path.clone(),
                    })
                })
                .collect();
        }
    }
    let added_path = dir.join("added_tokens.json");
    let Some(added) = read_json(&added_path)? else {
        return Ok(Vec::new());
    };
    let Some(map) = added.as_object() else {
        return Err(ModelError::BadFile {
            path: added_path,
            problem: "expected an object of token -> id".into(),
        });
    };
    map.iter()
        .map(|(content, id)| {
            Ok(Added {
                content: content.clone(),
                id: id.as_u64().ok_or_else(|| ModelError::BadFile {
                    path: added_path.clone(),
                    problem: format!("the id of {content:?} is not a number"),
                })? as u32,
                special: true,
                source: added_path.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_prompt_is_qwen2_template_with_the_default_system() {
        assert_eq!(
            chat_prompt(None, "<image>\nHi"),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn a_vocabulary_without_its_merges_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let vocab = dir.path().join("vocab.json");
        std::fs::write(&vocab, r#"{"a": 0}"#).unwrap();
        let files = TokenizerFiles::VocabAndMerges {
            vocab: vocab.clone(),
            merges: dir.path().join("merges.txt"),
        };
        let error = Qwen2Tokenizer::load(&files).unwrap_err().to_string();
        assert!(
            error.contains("vocab.json") && error.contains("merges.txt"),
            "{error}"
        );
    }
}
