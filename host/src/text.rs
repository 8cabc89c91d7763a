//! Plugin-controlled text on its way into logs and Redis: capped in size and
//! escaped, so a plugin can neither flood a log line or a dead letter nor
//! forge log lines of its own.

use std::fmt;

/// Longest plugin-controlled string kept (log messages, errors); the rest is
/// cut and marked.
pub const MAX_TEXT: usize = 16 * 1024;

/// The marker appended to a cut string.
pub const TRUNCATED: &str = " [truncated]";

/// `text` cut to [`MAX_TEXT`] bytes (on a character boundary) and marked
/// with [`TRUNCATED`] when it was longer.
pub fn cap(text: String) -> String {
    cap_at(text, MAX_TEXT)
}

/// `text` cut to `max` bytes (on a character boundary) and marked with
/// [`TRUNCATED`] when it was longer.
pub fn cap_at(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(TRUNCATED);
    }
    text
}

/// A [`fmt::Write`] that escapes control characters on the way through:
/// `\n`, `\r` and `\t` as those two-character escapes, and every other C0 or
/// C1 control (ESC, so ANSI sequences, among them) and DEL as `\u{..}`. A
/// log line written through it stays one line, however its fields were made.
pub struct Escaping<W>(pub W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(|c: char| c.is_control()) {
            let (clean, tail) = rest.split_at(at);
            self.0.write_str(clean)?;
            let mut chars = tail.chars();
            let Some(c) = chars.next() else { break };
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                other => write!(self.0, "\\u{{{:x}}}", u32::from(other))?,
            }
            rest = chars.as_str();
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    #[test]
    fn caps_on_a_char_boundary() {
        let long = "é".repeat(MAX_TEXT);
        let capped = cap(long);
        assert!(capped.len() <= MAX_TEXT + TRUNCATED.len());
        assert!(capped.ends_with(TRUNCATED));
        assert_eq!(cap("short".into()), "short");
    }

    #[test]
    fn escapes_newlines_and_ansi() {
        let mut out = Escaping(String::new());
        write!(out, "a\nb\r\x1b[31mred\u{9b}c\td\u{7f}").unwrap();
        assert_eq!(out.0, "a\\nb\\r\\u{1b}[31mred\\u{9b}c\\td\\u{7f}");
    }
}
