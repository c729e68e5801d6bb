//! open_clip's text cleaning for CLIP (`_clean_lower`): `ftfy.fix_text`, Python's
//! `html.unescape` twice, white space collapsed, lower case.
//!
//! Of ftfy 6's default fixes, every one that applies to well-formed Unicode text is
//! reproduced: HTML entities (all of HTML 5's names, numeric references, upper-cased names),
//! C1 control characters read as Windows-1252, Latin ligatures, full- and half-width forms,
//! curly quotes, line breaks, terminal escapes, control characters, NFC, repeated until the
//! text no longer changes, line by line. Not reproduced: ftfy's repair of mojibake
//! (`fix_encoding`: text decoded with the wrong encoding, such as `cafÃ©` for `café`), which
//! leaves other text alone; `tests/fixtures/make_clip_tokens.py` checks that it changes none
//! of the parity strings, on which keyscribe's ids equal open_clip's.

use std::sync::LazyLock;

use regex::Regex;
use tokenizers::NormalizedString;

use super::html_entities;

/// open_clip's cleaning: ftfy's fixes, HTML unescaping twice, white space runs collapsed to
/// one space and trimmed, lower case.
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
        fixed.retain(|c| !is_removed_control(c));
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

/// ftfy's `remove_terminal_escapes`: ANSI sequences `ESC [ digits-and-semicolons letter`,
/// where a digit is any decimal digit (Python's `\d`).
fn remove_terminal_escapes(text: &str) -> String {
    static ANSI_ESCAPE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\x1b\[(?:\d|;)*[a-zA-Z]").expect("a valid pattern"));
    ANSI_ESCAPE.replace_all(text, "").into_owned()
}

/// The control characters ftfy's `remove_control_chars` deletes.
fn is_removed_control(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}'
        | '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffc}')
}

/// Looks a name up in a table sorted by name.
fn lookup(table: &'static [(&'static str, &'static str)], name: &str) -> Option<&'static str> {
    table
        .binary_search_by(|(entry, _)| (*entry).cmp(name))
        .ok()
        .map(|index| table[index].1)
}

/// ftfy's `unescape_html`: references of the form `&name;` / `&#123;` / `&#x1F;` (1 to 24
/// ASCII letters and digits) decoded when known, including the upper-cased names ftfy adds.
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
                lookup(html_entities::HTML5, name)
                    .or_else(|| lookup(html_entities::UPPER_CASE, name))
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

/// Python's `html.unescape`: numeric references (with or without `;`), HTML 5's named
/// references, and names HTML 5 accepts without `;` even when more letters follow
/// (`&copy2024`).
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
    if let Some(value) = lookup(html_entities::HTML5, matched) {
        out.push_str(value);
        return Some(matched.len());
    }
    // The longest name that starts the match (at least two characters, short of the whole
    // match, so without `;`), the rest kept as text.
    let boundaries: Vec<usize> = matched.char_indices().map(|(i, _)| i).skip(2).collect();
    for &end in boundaries.iter().rev() {
        if let Some(value) = lookup(html_entities::HTML5, &matched[..end]) {
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
    fn entity_tables_are_sorted_for_binary_search() {
        for table in [html_entities::HTML5, html_entities::UPPER_CASE] {
            assert!(table.windows(2).all(|pair| pair[0].0 < pair[1].0));
        }
    }

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
        assert_eq!(html_unescape("&checkmark; &NewLine;"), "\u{2713} \n");
    }

    #[test]
    fn ftfy_unescape_needs_semicolons_and_knows_upper_case() {
        assert_eq!(ftfy_unescape_html("&amp &amp;"), "&amp &");
        assert_eq!(ftfy_unescape_html("P&EACUTE;REZ"), "P\u{c9}REZ");
        assert_eq!(ftfy_unescape_html("&#x263A;"), "\u{263a}");
        assert_eq!(ftfy_unescape_html("&Jscr;ohn &FJLIG;"), "\u{1d4a5}ohn FJ");
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
        assert_eq!(clean_text("\u{1b}[\u{661}mx"), "x");
        assert_eq!(clean_text("a\u{0}b\u{feff}c"), "abc");
        assert_eq!(clean_text("cafe\u{301}"), "caf\u{e9}");
        assert_eq!(clean_text("x\u{85}y"), "x\u{2026}y");
    }
}
