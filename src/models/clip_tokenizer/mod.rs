//! CLIP's tokenizer as open_clip runs it for MobileCLIP2: open_clip's text cleaning, its word
//! pattern, byte-level BPE with the vocabulary and merges of the checkpoint's
//! `tokenizer.json`, start/end tokens, truncation and zero padding to the context length.
//!
//! open_clip's `SimpleTokenizer` cleans text ([`clean_text`]: ftfy, HTML unescaping,
//! white space, lower case), splits it into words with its own pattern and encodes each word
//! with BPE. The Hub's `tokenizer.json` (transformers' CLIP tokenizer) carries a normaliser
//! and a pre-tokenizer of its own that disagree with open_clip on curly quotes, HTML
//! entities, ligatures, full-width forms, control characters, `'ſ` and open_clip's names of
//! its special tokens; keyscribe therefore takes only the BPE model from that file and does
//! the cleaning and splitting itself. `tests/clip_tokenizer.rs` checks the ids against
//! open_clip's on several hundred strings.

mod clean;
mod html_entities;

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use tokenizers::models::bpe::BPE;
use tokenizers::models::ModelWrapper;
use tokenizers::{Model, Tokenizer};

pub use clean::clean_text;

use super::ModelError;

/// The start-of-text token as the Hub's `tokenizer.json` names it.
pub const START_OF_TEXT: &str = "<|startoftext|>";
/// The end-of-text token as the Hub's `tokenizer.json` names it.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// The suffix CLIP's BPE vocabulary marks the last symbol of a word with.
const END_OF_WORD: &str = "</w>";

/// open_clip's own names of the start and end tokens: a text that contains them gets the
/// special ids there, as open_clip's word pattern and BPE cache make it.
const OPEN_CLIP_START_OF_TEXT: &str = "<start_of_text>";
const OPEN_CLIP_END_OF_TEXT: &str = "<end_of_text>";

/// open_clip's word pattern (`SimpleTokenizer.pat`, case-insensitive, so `'ſ` is a
/// contraction too): its special tokens, English contractions, runs of letters, single
/// digits, and runs of everything else but white space (`'!` is one word).
static WORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
    )
    .expect("a valid pattern")
});

/// The words open_clip's pattern finds in a cleaned text.
fn words(cleaned: &str) -> impl Iterator<Item = &str> {
    WORD.find_iter(cleaned).map(|word| word.as_str())
}

/// GPT-2's byte-level alphabet (`bytes_to_unicode`), in which BPE symbols are written:
/// printable Latin-1 bytes stand for themselves, the others for U+0100 onwards in byte order.
fn byte_level_chars() -> [char; 256] {
    let mut chars = ['\0'; 256];
    let mut next_stand_in = 0x100;
    for byte in 0..=u8::MAX {
        chars[usize::from(byte)] = if matches!(byte, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff) {
            char::from(byte)
        } else {
            next_stand_in += 1;
            char::from_u32(next_stand_in - 1).expect("U+0100-U+0143 are characters")
        };
    }
    chars
}

/// CLIP's tokenizer: open_clip's cleaning, words and framing, the BPE of `tokenizer.json`.
#[derive(Clone)]
pub struct ClipTokenizer {
    path: PathBuf,
    bpe: BPE,
    byte_chars: [char; 256],
    start_of_text: u32,
    end_of_text: u32,
    context_length: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("path", &self.path)
            .field("start_of_text", &self.start_of_text)
            .field("end_of_text", &self.end_of_text)
            .field("context_length", &self.context_length)
            .finish_non_exhaustive()
    }
}

impl ClipTokenizer {
    /// Reads a CLIP `tokenizer.json`; every text becomes `context_length` ids.
    pub fn from_file(path: &Path, context_length: usize) -> Result<Self, ModelError> {
        let bad = |problem: String| ModelError::BadFile {
            path: path.to_path_buf(),
            problem,
        };
        if !path.is_file() {
            return Err(ModelError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let tokenizer = Tokenizer::from_file(path)
            .map_err(|error| bad(format!("not a readable tokenizer.json ({error})")))?;
        let ModelWrapper::BPE(bpe) = tokenizer.get_model() else {
            return Err(bad("the model is not byte-pair encoding (BPE)".into()));
        };
        if bpe.end_of_word_suffix.as_deref() != Some(END_OF_WORD) {
            return Err(bad(format!(
                "the BPE model does not end words with `{END_OF_WORD}`, as CLIP's does"
            )));
        }
        if bpe.dropout.is_some_and(|dropout| dropout > 0.0) {
            return Err(bad(
                "the BPE model has dropout, which makes ids random".into()
            ));
        }
        let byte_chars = byte_level_chars();
        // Every byte, alone and ending a word, must have an id, so that no text meets the
        // unknown token (open_clip's vocabulary has them all).
        for symbol in byte_chars {
            for token in [symbol.to_string(), format!("{symbol}{END_OF_WORD}")] {
                if bpe.token_to_id(&token).is_none() {
                    return Err(bad(format!("the vocabulary has no byte symbol `{token}`")));
                }
            }
        }
        let special = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| bad(format!("the vocabulary has no `{token}` token")))
        };
        if context_length < 2 {
            return Err(bad(format!(
                "a context of {context_length} tokens cannot hold the start and end tokens"
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            bpe: bpe.clone(),
            byte_chars,
            start_of_text: special(START_OF_TEXT)?,
            end_of_text: special(END_OF_TEXT)?,
            context_length,
        })
    }

    /// Tokens per text.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// The end-of-text id, where the text tower pools.
    pub fn end_of_text(&self) -> u32 {
        self.end_of_text
    }

    /// One text as open_clip's tokenizer gives it: start token, the ids of the cleaned text's
    /// words (cut so that the end token still fits), end token, zeros up to the context
    /// length.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let cleaned = clean_text(text);
        let last_body = self.context_length - 1;
        let mut ids = Vec::with_capacity(self.context_length);
        ids.push(self.start_of_text);
        for word in words(&cleaned) {
            if ids.len() >= last_body {
                break;
            }
            self.push_word_ids(word, &mut ids)?;
        }
        ids.truncate(last_body);
        ids.push(self.end_of_text);
        ids.resize(self.context_length, 0);
        Ok(ids)
    }

    /// Appends the ids of one word: its BPE tokens, or a special id for open_clip's names.
    fn push_word_ids(&self, word: &str, ids: &mut Vec<u32>) -> Result<(), ModelError> {
        match word {
            OPEN_CLIP_START_OF_TEXT => ids.push(self.start_of_text),
            OPEN_CLIP_END_OF_TEXT => ids.push(self.end_of_text),
            _ => {
                let symbols: String = word
                    .bytes()
                    .map(|byte| self.byte_chars[usize::from(byte)])
                    .collect();
                let tokens = self
                    .bpe
                    .tokenize(&symbols)
                    .map_err(|error| ModelError::BadFile {
                        path: self.path.clone(),
                        problem: format!("cannot encode the word {word:?}: {error}"),
                    })?;
                ids.extend(tokens.iter().map(|token| token.id));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_open_clips_pattern() {
        let split = |text| words(text).collect::<Vec<_>>();
        assert_eq!(split("hey'! it's!"), ["hey", "'!", "it", "'s", "!"]);
        assert_eq!(
            split("x'123 '90s"),
            ["x", "'", "1", "2", "3", "'", "9", "0", "s"]
        );
        assert_eq!(split("it'ſ we'll"), ["it", "'ſ", "we", "'ll"]);
        assert_eq!(split("...!!! a--b"), ["...!!!", "a", "--", "b"]);
        assert_eq!(
            split("<start_of_text>x<|endoftext|>"),
            ["<start_of_text>", "x", "<|", "endoftext", "|>"]
        );
        assert_eq!(
            split("a\u{200b}b caf\u{e9}"),
            ["a", "\u{200b}", "b", "caf\u{e9}"]
        );
    }

    #[test]
    fn byte_level_alphabet_is_gpt2s() {
        let chars = byte_level_chars();
        assert_eq!(chars[usize::from(b'!')], '!');
        assert_eq!(chars[0], '\u{100}');
        assert_eq!(chars[usize::from(b' ')], '\u{120}');
        assert_eq!(chars[0xad], '\u{143}');
        let mut sorted = chars.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
    }
}
