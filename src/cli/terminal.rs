//! Text from videos, models and file names made safe to print on a terminal.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character made visible instead of acted on: tabs and line
/// breaks become spaces (a result stays on its line), and other C0 and C1 controls
/// (escape sequences among them), DEL and the bidirectional overrides that reorder what
/// is shown are written as `\x1b` or `\u{202e}`. A caption or file name cannot move the
/// cursor, change colours or retitle the terminal.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escaping) {
        return Cow::Borrowed(text);
    }
    let mut safe = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' | '\n' | '\r' => safe.push(' '),
            c if needs_escaping(c) && (c as u32) < 0x100 => {
                let _ = write!(safe, "\\x{:02x}", c as u32);
            }
            c if needs_escaping(c) => {
                let _ = write!(safe, "\\u{{{:x}}}", c as u32);
            }
            c => safe.push(c),
        }
    }
    Cow::Owned(safe)
}

fn needs_escaping(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_shown_not_acted_on() {
        assert_eq!(
            printable("\x1b[31mred\x1b[0m \x1b]0;title\x07"),
            "\\x1b[31mred\\x1b[0m \\x1b]0;title\\x07"
        );
        assert_eq!(
            printable("C1 \u{9b}2J and DEL \x7f"),
            "C1 \\x9b2J and DEL \\x7f"
        );
        assert_eq!(printable("abc\u{202e}fdp.exe"), "abc\\u{202e}fdp.exe");
    }

    #[test]
    fn line_breaks_become_spaces_and_plain_text_is_untouched() {
        assert_eq!(printable("two\nlines\tand\r"), "two lines and ");
        let plain = "Ein Hund läuft über den Strand — 犬";
        assert!(matches!(printable(plain), Cow::Borrowed(text) if text == plain));
    }
}
