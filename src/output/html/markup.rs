//! How the report is assembled so that no unescaped text can reach it.
//!
//! The page grows in an [`Html`] buffer that takes only three kinds of input: markup that is
//! a `&'static str` literal in this module's source, numbers, and [`Escaped`] text, which
//! only [`Escaped::text`] can make. Text from the analysis (captions, titles, paths, model
//! names) is a `String` or `&str` of some lifetime, so the only way to put it on the page is
//! to escape it first. `Html` does not implement `fmt::Write`, so `write!` cannot slip a
//! string past it either.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::time::decimal_text;

/// Text made safe for HTML element content and for quoted attribute values: `&`, `<`, `>`,
/// `"` and `'` are character references. Only [`Escaped::text`] makes one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Escaped(String);

impl Escaped {
    /// Escapes `raw` for element content and quoted attribute values.
    pub fn text(raw: &str) -> Escaped {
        let mut escaped = String::with_capacity(raw.len());
        for character in raw.chars() {
            match character {
                '&' => escaped.push_str("&amp;"),
                '<' => escaped.push_str("&lt;"),
                '>' => escaped.push_str("&gt;"),
                '"' => escaped.push_str("&quot;"),
                '\'' => escaped.push_str("&#39;"),
                other => escaped.push(other),
            }
        }
        Escaped(escaped)
    }

    /// The escaped text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether there is no text.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One value for a placeholder of [`Html::fill`]: each kind is safe on the page by its type.
#[derive(Debug, Clone, Copy)]
pub enum Piece<'a> {
    /// Escaped text.
    Text(&'a Escaped),
    /// Markup written in this crate's source (a style sheet, a script, a class name).
    Markup(&'static str),
    /// A whole number.
    Integer(u64),
    /// A number with exactly this many decimals (`{:.1}`), for coordinates.
    Fixed(f64, usize),
    /// A number with at most this many decimals and no trailing zeros, for people.
    Trimmed(f64, usize),
    /// Bytes as base64, for `data:` URIs.
    Base64(&'a [u8]),
}

impl<'a> From<&'a Escaped> for Piece<'a> {
    fn from(text: &'a Escaped) -> Piece<'a> {
        Piece::Text(text)
    }
}

impl From<usize> for Piece<'_> {
    fn from(number: usize) -> Self {
        Piece::Integer(number as u64)
    }
}

impl From<u32> for Piece<'_> {
    fn from(number: u32) -> Self {
        Piece::Integer(u64::from(number))
    }
}

/// A page under construction; see the module documentation for what it accepts.
#[derive(Debug, Default)]
pub struct Html {
    page: String,
}

impl Html {
    /// An empty page with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Html {
        Html {
            page: String::with_capacity(capacity),
        }
    }

    /// Appends markup from the source code.
    pub fn markup(&mut self, markup: &'static str) {
        self.page.push_str(markup);
    }

    /// Appends escaped text.
    pub fn text(&mut self, text: &Escaped) {
        self.page.push_str(text.as_str());
    }

    /// Appends `template` with each `{}` replaced by the next of `values`.
    ///
    /// # Panics
    ///
    /// When the number of `{}` differs from the number of values: a mistake in the
    /// template, which every test run of the report would hit.
    pub fn fill(&mut self, template: &'static str, values: &[Piece<'_>]) {
        let mut parts = template.split("{}");
        assert_eq!(
            template.matches("{}").count(),
            values.len(),
            "placeholders and values of {template:?}"
        );
        if let Some(first) = parts.next() {
            self.page.push_str(first);
        }
        for (value, part) in values.iter().zip(parts) {
            self.piece(*value);
            self.page.push_str(part);
        }
    }

    fn piece(&mut self, value: Piece<'_>) {
        match value {
            Piece::Text(text) => self.page.push_str(text.as_str()),
            Piece::Markup(markup) => self.page.push_str(markup),
            Piece::Integer(number) => self.page.push_str(&number.to_string()),
            Piece::Fixed(number, decimals) => {
                self.page.push_str(&format!("{number:.decimals$}"));
            }
            Piece::Trimmed(number, decimals) => {
                self.page.push_str(&decimal_text(number, decimals));
            }
            Piece::Base64(bytes) => BASE64.encode_string(bytes, &mut self.page),
        }
    }

    /// The finished page.
    pub fn into_string(self) -> String {
        self.page
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_every_character_that_can_open_markup() {
        let escaped = Escaped::text("<a href='x'>\"Tom\" & Jerry</a>");
        assert_eq!(
            escaped.as_str(),
            "&lt;a href=&#39;x&#39;&gt;&quot;Tom&quot; &amp; Jerry&lt;/a&gt;"
        );
        assert!(Escaped::text("").is_empty());
    }

    #[test]
    fn fill_puts_values_in_order() {
        let title = Escaped::text("a<b");
        let mut html = Html::default();
        html.fill(
            "<p title=\"{}\" data-n=\"{}\">{} {} {}</p>{}",
            &[
                (&title).into(),
                7usize.into(),
                Piece::Fixed(1.25, 1),
                Piece::Trimmed(2.50, 2),
                Piece::Base64(b"hi"),
                Piece::Markup("<br>"),
            ],
        );
        assert_eq!(
            html.into_string(),
            "<p title=\"a&lt;b\" data-n=\"7\">1.2 2.5 aGk=</p><br>"
        );
    }

    #[test]
    #[should_panic(expected = "placeholders and values")]
    fn a_template_with_too_few_values_is_a_bug() {
        Html::default().fill("{} {}", &[Piece::Integer(1)]);
    }
}
