//! CLIP's tokenizer as open_clip runs it for MobileCLIP2: text cleaning, lower-casing,
//! byte-level BPE from the checkpoint's `tokenizer.json`, start/end tokens, truncation and
//! zero padding to the context length.
//!
//! open_clip's `SimpleTokenizer` cleans text before splitting it: `ftfy.fix_text`, HTML
//! unescaping (twice), whitespace collapsing, lower-casing. The Hub's `tokenizer.json` only
//! normalises (NFC, whitespace, lower case), so the two disagree on curly quotes, HTML
//! entities, ligatures, full-width forms and control characters; [`clean_text`] does
//! open_clip's cleaning first, and the BPE of `tokenizer.json` then gives open_clip's ids.
//!
//! Of ftfy, everything that applies to well-formed Unicode text is reproduced (HTML
//! entities, C1 controls, Latin ligatures, character width, curly quotes, terminal escapes,
//! control characters, NFC, repeated until nothing changes). Not reproduced: ftfy's repair
//! of mojibake (text decoded with the wrong encoding, such as `Ã©` for `é`), and the HTML 5
//! entity names beyond HTML 4's (see `html_entities`).

use std::path::{Path, PathBuf};

use tokenizers::{NormalizedString, Tokenizer};

use super::html_entities;
use super::ModelError;

/// The start-of-text token as the Hub's `tokenizer.json` names it.
pub const START_OF_TEXT: &str = "<|startoftext|>";
/// The end-of-text token as the Hub's `tokenizer.json` names it.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// CLIP's tokenizer: `tokenizer.json` plus open_clip's cleaning and framing.
#[derive(Clone)]
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    start_of_text: u32,
    end_of_text: u32,
    context_length: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
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
            start_of_text: special(START_OF_TEXT)?,
            end_of_text: special(END_OF_TEXT)?,
            tokenizer,
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

    /// One text as open_clip's tokenizer gives it: start token, the cleaned text's BPE ids
    /// (cut so that the end token still fits), end token, zeros up to the context length.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let cleaned = clean_text(text);
        let encoding = self
            .tokenizer
            .encode(cleaned.as_str(), false)
            .map_err(|error| ModelError::BadFile {
                path: PathBuf::from("tokenizer.json"),
                problem: format!("cannot tokenize {text:?}: {error}"),
            })?;
        let body = encoding.get_ids();
        let keep = body.len().min(self.context_length - 2);
        let mut ids = Vec::with_capacity(self.context_length);
        ids.push(self.start_of_text);
        ids.extend_from_slice(&body[..keep]);
        ids.push(self.end_of_text);
        ids.resize(self.context_length, 0);
        Ok(ids)
    }
}

/// open_clip's text cleaning for CLIP (`_clean_lower`): ftfy's fixes, HTML unescaping twice,
/// whitespace runs collapsed to one space and trimmed, lower case.
pub fn clean_text(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped = html_unescape(&html_unescape(&fixed));
    unescaped
        .split(is_python_space)
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Python's `str.isspace`: Unicode white space plus the information separators U+001C-1F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// ftfy's `fix_text` with its default configuration, without mojibake repair: the text is
/// fixed line by line, and HTML entities are decoded only until a line contains `<` (ftfy
/// then takes the text for HTML and leaves entities alone, for that line and the rest).
fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    for line in text.split_inclusive('\n') {
        if line.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_line(line, unescape));
    }
    out
}

/// ftfy's fixes of one line, repeated until the line no longer changes.
fn fix_line(line: &str, unescape: bool) -> String {
    let mut text = line.to_string();
    loop {
        let mut fixed = if unescape {
            ftfy_unescape_html(&text)
        } else {
            text.clone()
        };
        fixed = fixed.chars().map(fix_c1_control).collect();
        fixed = fix_ligatures_and_width(&fixed);
        fixed = fixed.chars().map(uncurl_quote).collect();
        fixed = fix_line_breaks(&fixed);
        fixed = remove_terminal_escapes(&fixed);
        fixed.retain(|c| !is_removed_control(&c));
        let mut normalized = NormalizedString::from(fixed.as_str());
        normalized.nfc();
        let fixed = normalized.get().to_string();
        if fixed == text {
            return fixed;
        }
        text = fixed;
    }
}

/// Windows-1252's characters for the bytes 0x80-0x9F, as Python's `html.unescape` and
/// ftfy's "sloppy" codec map them (the five undefined bytes stay as they are).
const WINDOWS_1252_HIGH: [char; 32] = [
    '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{2c6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}', '\u{8f}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}', '\u{17e}', '\u{178}',
];

/// ftfy's `fix_c1_controls`: C1 control characters read as Windows-1252.
fn fix_c1_control(c: char) -> char {
    match c {
        '\u{80}'..='\u{9f}' => WINDOWS_1252_HIGH[c as usize - 0x80],
        _ => c,
    }
}

/// ftfy's `fix_latin_ligatures` and `fix_character_width`.
fn fix_ligatures_and_width(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{132}' => out.push_str("IJ"),
            '\u{133}' => out.push_str("ij"),
            '\u{149}' => out.push_str("\u{2bc}n"),
            '\u{1f1}' => out.push_str("DZ"),
            '\u{1f2}' => out.push_str("Dz"),
            '\u{1f3}' => out.push_str("dz"),
            '\u{1c4}' => out.push_str("D\u{17d}"),
            '\u{1c5}' => out.push_str("D\u{17e}"),
            '\u{1c6}' => out.push_str("d\u{17e}"),
            '\u{1c7}' => out.push_str("LJ"),
            '\u{1c8}' => out.push_str("Lj"),
            '\u{1c9}' => out.push_str("lj"),
            '\u{1ca}' => out.push_str("NJ"),
            '\u{1cb}' => out.push_str("Nj"),
            '\u{1cc}' => out.push_str("nj"),
            '\u{fb00}' => out.push_str("ff"),
            '\u{fb01}' => out.push_str("fi"),
            '\u{fb02}' => out.push_str("fl"),
            '\u{fb03}' => out.push_str("ffi"),
            '\u{fb04}' => out.push_str("ffl"),
            '\u{fb05}' => out.push_str("\u{17f}t"),
            '\u{fb06}' => out.push_str("st"),
            '\u{3000}' => out.push(' '),
            '\u{ff01}'..='\u{ffef}' => {
                // Full-width and half-width forms: their compatibility decomposition.
                let mut normalized = NormalizedString::from(c.to_string());
                normalized.nfkc();
                out.push_str(normalized.get());
            }
            _ => out.push(c),
        }
    }
    out
}

/// ftfy's `uncurl_quotes`.
fn uncurl_quote(c: char) -> char {
    match c {
        '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
        '\u{201c}'..='\u{201f}' => '"',
        _ => c,
    }
}

/// ftfy's `fix_line_breaks`: CRLF, CR, LS, PS and NEL become LF.
fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// ftfy's `remove_terminal_escapes`: ANSI sequences `ESC [ digits-and-semicolons letter`.
fn remove_terminal_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("\u{1b}[") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let params = after
            .find(|c: char| !(c.is_ascii_digit() || c == ';'))
            .unwrap_or(after.len());
        match after[params..].chars().next() {
            Some(letter) if letter.is_ascii_alphabetic() => {
                rest = &after[params + 1..];
            }
            _ => {
                out.push_str("\u{1b}[");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The control characters ftfy's `remove_control_chars` deletes.
fn is_removed_control(c: &char) -> bool {
    matches!(*c,
        '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}'
        | '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffc}')
}

/// The value of a named entity (`name` without `&`, with or without the final `;`) as
/// Python's `html.entities.html5` gives it.
fn named_entity(name: &str) -> Option<&'static str> {
    let (bare, terminated) = match name.strip_suffix(';') {
        Some(bare) => (bare, true),
        None => (name, false),
    };
    html_entities::NAMED
        .iter()
        .find(|(entity, _, legacy)| *entity == bare && (terminated || *legacy))
        .map(|(_, value, _)| *value)
}

/// ftfy's `unescape_html`: entities of the form `&name;` / `&#123;` / `&#x1F;` (1 to 24
/// alphanumerics), including upper-cased names of Latin letters, decoded when known.
fn ftfy_unescape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let candidate = &rest[start..];
        let body_start = if candidate[1..].starts_with('#') {
            2
        } else {
            1
        };
        let body_len = candidate[body_start..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(candidate.len() - body_start);
        let end = body_start + body_len;
        if (1..=24).contains(&body_len) && candidate[end..].starts_with(';') {
            let entity = &candidate[..=end];
            let name = &entity[1..];
            let decoded = if body_start == 2 {
                // A numeric reference: html.unescape, unless it leaves the `;` behind.
                let unescaped = html_unescape(entity);
                (!unescaped.contains(';')).then_some(unescaped)
            } else {
                named_entity(name)
                    .or_else(|| {
                        let bare = &name[..name.len() - 1];
                        html_entities::UPPERCASE
                            .iter()
                            .find(|(upper, _)| *upper == bare)
                            .map(|(_, value)| *value)
                    })
                    .map(str::to_string)
            };
            match decoded {
                Some(decoded) => out.push_str(&decoded),
                None => out.push_str(entity),
            }
            rest = &candidate[end + 1..];
        } else {
            out.push('&');
            rest = &candidate[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The code points Python's `html.unescape` drops from numeric references.
fn is_invalid_code_point(code: u32) -> bool {
    matches!(code, 0x1..=0x8 | 0xb | 0xe..=0x1f | 0x7f..=0x9f | 0xfdd0..=0xfdef)
        || (code & 0xfffe) == 0xfffe
}

/// A numeric character reference's replacement, as Python's `html.unescape` decodes it.
fn numeric_reference(digits: &str, radix: u32) -> String {
    let code = u32::from_str_radix(digits, radix).unwrap_or(u32::MAX);
    match code {
        0x0 => '\u{fffd}'.to_string(),
        0xd => '\r'.to_string(),
        0x80..=0x9f => WINDOWS_1252_HIGH[code as usize - 0x80].to_string(),
        0xd800..=0xdfff => '\u{fffd}'.to_string(),
        _ if code > 0x10ffff => '\u{fffd}'.to_string(),
        _ if is_invalid_code_point(code) => String::new(),
        _ => char::from_u32(code).map(String::from).unwrap_or_default(),
    }
}

/// Python's `html.unescape`: numeric references (with or without `;`), named entities, and
/// legacy names written without `;` even when letters follow (`&copy2024`).
fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let candidate = &rest[start + 1..];
        let consumed = if let Some(hex) = candidate
            .strip_prefix("#x")
            .or_else(|| candidate.strip_prefix("#X"))
        {
            let digits = hex
                .find(|c: char| !c.is_ascii_hexdigit())
                .unwrap_or(hex.len());
            (digits > 0).then(|| {
                out.push_str(&numeric_reference(&hex[..digits], 16));
                let semicolon = usize::from(hex[digits..].starts_with(';'));
                2 + digits + semicolon
            })
        } else if let Some(decimal) = candidate.strip_prefix('#') {
            let digits = decimal
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(decimal.len());
            (digits > 0).then(|| {
                out.push_str(&numeric_reference(&decimal[..digits], 10));
                let semicolon = usize::from(decimal[digits..].starts_with(';'));
                1 + digits + semicolon
            })
        } else {
            named_reference(candidate, &mut out)
        };
        match consumed {
            Some(consumed) => rest = &candidate[consumed..],
            None => {
                out.push('&');
                rest = candidate;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A named reference at the start of `candidate` (the text after `&`): pushes its
/// replacement and returns how much it consumed, as `html.unescape` does, or `None` when
/// nothing there looks like a name.
fn named_reference(candidate: &str, out: &mut String) -> Option<usize> {
    let is_name_char = |c: char| !matches!(c, '\t' | '\n' | '\u{c}' | ' ' | '<' | '&' | '#' | ';');
    let name_len: usize = candidate
        .chars()
        .take_while(|&c| is_name_char(c))
        .take(32)
        .map(char::len_utf8)
        .sum();
    if name_len == 0 {
        return None;
    }
    let with_semicolon = candidate[name_len..].starts_with(';');
    let matched = &candidate[..name_len + usize::from(with_semicolon)];
    if let Some(value) = named_entity(matched) {
        out.push_str(value);
        return Some(matched.len());
    }
    // The longest legacy name (no `;`) that starts the match, the rest kept as text.
    let boundaries: Vec<usize> = matched.char_indices().map(|(i, _)| i).skip(2).collect();
    for &end in boundaries.iter().rev() {
        if let Some(value) =
            named_entity(&matched[..end]).filter(|_| !matched[..end].ends_with(';'))
        {
            out.push_str(value);
            out.push_str(&matched[end..]);
            return Some(matched.len());
        }
    }
    out.push('&');
    out.push_str(matched);
    Some(matched.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_unescape_follows_python() {
        assert_eq!(html_unescape("a &amp; b"), "a & b");
        assert_eq!(html_unescape("&lt;b&gt;"), "<b>");
        assert_eq!(html_unescape("&copy2024"), "\u{a9}2024");
        assert_eq!(html_unescape("&#39;&#x27;&#X27"), "'''");
        assert_eq!(
            html_unescape("&#128;&#0;&#1;&#xD800;"),
            "\u{20ac}\u{fffd}\u{fffd}"
        );
        assert_eq!(html_unescape("&unknown; & &# &#x;"), "&unknown; & &# &#x;");
        assert_eq!(html_unescape("&amp;amp;"), "&amp;");
        assert_eq!(html_unescape("&notit;"), "\u{ac}it;");
    }

    #[test]
    fn ftfy_unescape_needs_semicolons_and_knows_upper_case() {
        assert_eq!(ftfy_unescape_html("&amp &amp;"), "&amp &");
        assert_eq!(ftfy_unescape_html("P&EACUTE;REZ"), "P\u{c9}REZ");
        assert_eq!(ftfy_unescape_html("&#x263A;"), "\u{263a}");
    }

    #[test]
    fn cleaning_matches_open_clip() {
        assert_eq!(clean_text("  Hello\t\tWORLD \n"), "hello world");
        assert_eq!(
            clean_text("\u{201c}curly\u{201d} \u{2018}quotes\u{2019}"),
            "\"curly\" 'quotes'"
        );
        assert_eq!(clean_text("\u{fb01}ne \u{ff21}\u{ff22}"), "fine ab");
        assert_eq!(clean_text("&amp;amp;amp;"), "&");
        assert_eq!(clean_text("<b>&amp;amp;amp;</b>"), "<b>&amp;</b>");
        assert_eq!(clean_text("\u{1b}[31mred\u{1b}[0m"), "red");
        assert_eq!(clean_text("a\u{0}b\u{feff}c"), "abc");
        assert_eq!(clean_text("cafe\u{301}"), "caf\u{e9}");
        assert_eq!(clean_text("x\u{85}y"), "x\u{2026}y");
    }
}
