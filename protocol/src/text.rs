//! Peer-supplied text on its way into a log line, and the hostname character set.
//!
//! Everything a peer sends is hostile text to an operator's terminal as much as to a browser:
//! a newline forges a whole log line, an ESC drives the terminal, a bidi override (U+202E)
//! makes one name display as another. Both binaries log peer text only through [`escape`], the
//! one place that decides how it is shown.

use std::fmt;

/// A value whose `Display` is its own `Display` with every control, format (bidi, zero-width)
/// and other non-printable character, and the backslash, written as a Rust escape (`\n`,
/// `\u{1b}`, `\u{202e}`, `\\`). Printable text, quotes included, is written as it is.
pub struct Escaped<T>(pub T);

/// Wraps `value` for a log field: `tracing::info!(host = %escape(&hello.hostname), ...)`.
pub fn escape<T: fmt::Display>(value: T) -> Escaped<T> {
    Escaped(value)
}

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        struct Escaper<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl Write for Escaper<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for c in s.chars() {
                    match c {
                        // Printable: char::escape_debug would add a backslash.
                        '"' | '\'' => self.0.write_char(c)?,
                        _ => write!(self.0, "{}", c.escape_debug())?,
                    }
                }
                Ok(())
            }
        }
        write!(Escaper(f), "{}", self.0)
    }
}

impl<T: fmt::Display> fmt::Debug for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// True for a hostname the master accepts (docs/PROTOCOL.md section 2): 1 to
/// [`crate::limits::MAX_HOSTNAME_BYTES`] bytes of ASCII letters, digits, `-`, `.` and `_`.
/// DNS names and the names `hostname(1)` sets fit; control characters (forged log lines),
/// bidi overrides and look-alike letters (one host displayed as another) do not.
pub fn is_valid_hostname(name: &str) -> bool {
    (1..=crate::limits::MAX_HOSTNAME_BYTES).contains(&name.len())
        && first_bad_hostname_char(name).is_none()
}

/// The first character of `name` outside the hostname character set, with its byte offset.
pub fn first_bad_hostname_char(name: &str) -> Option<(usize, char)> {
    name.char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_printable_text_and_escapes_the_rest() {
        let cases = [
            ("web-1.example", "web-1.example"),
            ("say \"hi\" it's", "say \"hi\" it's"),
            ("a\nINFO forged", "a\\nINFO forged"),
            ("cr\rnul\0", "cr\\rnul\\0"),
            ("\u{1b}[31mred", "\\u{1b}[31mred"),
            ("evil\u{202e}gnp.exe", "evil\\u{202e}gnp.exe"),
            ("zero\u{200b}width", "zero\\u{200b}width"),
            ("back\\slash", "back\\\\slash"),
            ("Zürich 東京", "Zürich 東京"),
        ];
        for (input, shown) in cases {
            assert_eq!(escape(input).to_string(), shown, "{input:?}");
        }
        // Any Display, e.g. an error whose text quotes the peer.
        let e = std::io::Error::other("unknown variant `x\ny`");
        assert_eq!(escape(&e).to_string(), "unknown variant `x\\ny`");
    }

    #[test]
    fn hostnames_outside_the_character_set_are_invalid() {
        for ok in ["h", "web-01", "db_2.prod.example.com", &"a".repeat(253)] {
            assert!(is_valid_hostname(ok), "{ok:?}");
        }
        for bad in [
            "",
            &"a".repeat(254),
            "a\nb",
            "a\rb",
            "a\u{1b}b",
            "a\0b",
            "evil\u{202e}moc",
            "with space",
            "<img>",
            "münchen",
            "a/b",
        ] {
            assert!(!is_valid_hostname(bad), "{bad:?}");
        }
    }
}
