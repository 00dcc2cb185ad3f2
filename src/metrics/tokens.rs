//! The bearer tokens that open the admin service's write routes.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::error::ConfigError;

/// Shortest token accepted: 16 bytes, so that a token guessed online at a
/// thousand tries a second stays out of reach (`openssl rand -hex 16`
/// gives 32).
const MIN_TOKEN_LEN: usize = 16;

/// The tokens an operator may write with, each with a name for the log
/// and for the [`HealthEvent::actor`](crate::backend::HealthEvent::actor)
/// of the changes made with it.
///
/// The text form is one token a line, optionally prefixed by `name:`;
/// blank lines and lines starting with `#` are skipped. A token without a
/// name is called `token-N` after its line. Tokens are at least 16 bytes of
/// visible ASCII without spaces; names are letters, digits, `-`, `_`, `.`
/// and `@`.
///
/// Tokens are compared in constant time (every byte of every token is
/// looked at, whatever matches), and never appear in `Debug` output or
/// logs: only names do.
///
/// ```
/// use tower_lb::metrics::AdminTokens;
///
/// let tokens = AdminTokens::parse("# operators\nalice:3f9c2a7be1d04c58a9e6\n0123456789abcdef\n")?;
/// assert_eq!(tokens.len(), 2);
/// assert_eq!(tokens.check("3f9c2a7be1d04c58a9e6"), Some("alice"));
/// assert_eq!(tokens.check("0123456789abcdef"), Some("token-3"));
/// assert_eq!(tokens.check("guess"), None);
/// assert!(!format!("{tokens:?}").contains("0123456789abcdef"));
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct AdminTokens {
    tokens: Arc<[Token]>,
}

struct Token {
    name: Arc<str>,
    secret: Box<[u8]>,
}

impl AdminTokens {
    /// Tokens from text in the form above.
    ///
    /// # Errors
    ///
    /// A configuration error naming the line (never quoting the token): a
    /// token too short or with spaces or control characters, a bad name, a
    /// name or token given twice, or no token at all.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_from(text, "admin tokens")
    }

    /// [`parse`](Self::parse), naming `source` in errors.
    fn parse_from(text: &str, source: &str) -> Result<Self, ConfigError> {
        let mut tokens: Vec<Token> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| ConfigError::new(format!("{source}, line {number}: {why}"));
            let (name, secret) = match line.split_once(':') {
                Some((name, secret)) => (name.trim().to_owned(), secret.trim()),
                None => (format!("token-{number}"), line),
            };
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
            {
                return Err(bad(
                    "a name is letters, digits, `-`, `_`, `.` or `@` (write name:token)",
                ));
            }
            if secret.len() < MIN_TOKEN_LEN {
                return Err(bad(&format!(
                    "a token is at least {MIN_TOKEN_LEN} characters (try `openssl rand -hex 16`)"
                )));
            }
            if !secret.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("a token is visible ASCII without spaces"));
            }
            if tokens.iter().any(|t| *t.name == *name) {
                return Err(bad(&format!("the name `{name}` is given twice")));
            }
            if tokens.iter().any(|t| equal(&t.secret, secret.as_bytes())) {
                return Err(bad("this token is given twice"));
            }
            tokens.push(Token {
                name: Arc::from(name),
                secret: secret.as_bytes().into(),
            });
        }
        if tokens.is_empty() {
            return Err(ConfigError::new(format!("{source}: no token in it")));
        }
        Ok(Self {
            tokens: tokens.into(),
        })
    }

    /// Tokens from a file in the form above.
    ///
    /// # Errors
    ///
    /// The file cannot be read, or [`parse`](Self::parse) refuses it; the
    /// message names the file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(format!("admin tokens {}: {e}", path.display())).with_source(e)
        })?;
        Self::parse_from(&text, &format!("admin tokens {}", path.display()))
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Always `false`: a token set is never empty (`parse` refuses it).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The name of the token `presented` is, if it is one.
    ///
    /// Every token is compared, each over all of its bytes, so the time
    /// taken does not tell how much of a guess was right nor which token
    /// it came near (only the stored tokens' lengths, which are no secret
    /// worth the name, shape it).
    pub fn check(&self, presented: &str) -> Option<&str> {
        let mut found = None;
        for token in self.tokens.iter() {
            let matched = equal(&token.secret, presented.as_bytes());
            // No early exit: the loop runs over every token whatever matched.
            if matched && found.is_none() {
                found = Some(&*token.name);
            }
        }
        found
    }

    /// The name as an event actor (a shared string, cloned per change).
    pub(crate) fn actor(&self, name: &str) -> Option<Arc<str>> {
        self.tokens
            .iter()
            .find(|t| *t.name == *name)
            .map(|t| Arc::clone(&t.name))
    }
}

/// Constant-time equality of `secret` and `presented`: the loop runs over
/// all of `secret`, folding differences (and a length mismatch) into one
/// accumulator, and only the accumulator is tested at the end.
fn equal(secret: &[u8], presented: &[u8]) -> bool {
    let mut difference = u8::from(secret.len() != presented.len());
    for (i, &byte) in secret.iter().enumerate() {
        let other = presented.get(i).copied().unwrap_or(!byte);
        difference |= byte ^ other;
    }
    std::hint::black_box(difference) == 0
}

impl fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminTokens")
            .field(
                "names",
                &self.tokens.iter().map(|t| &*t.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_needs_every_byte_and_the_length() {
        assert!(equal(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!equal(b"0123456789abcdef", b"0123456789abcdeF"));
        assert!(!equal(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!equal(b"0123456789abcdef", b"0123456789abcdef0"));
        assert!(!equal(b"0123456789abcdef", b""));
        // A presented byte equal to the secret's complement still differs.
        assert!(!equal(b"\x00", b""));
    }

    #[test]
    fn names_and_unnamed_tokens() {
        let tokens = AdminTokens::parse(
            "\n# comment\n  ops : aaaaaaaaaaaaaaaa:bb  \nbbbbbbbbbbbbbbbbbbbb\n",
        )
        .unwrap();
        assert_eq!(tokens.check("aaaaaaaaaaaaaaaa:bb"), Some("ops"));
        assert_eq!(tokens.check("bbbbbbbbbbbbbbbbbbbb"), Some("token-4"));
        assert_eq!(tokens.check("aaaaaaaaaaaaaaaa"), None);
        assert_eq!(tokens.check(""), None);
        assert_eq!(tokens.actor("ops").as_deref(), Some("ops"));
    }

    #[test]
    fn bad_files_name_the_line_and_never_the_token() {
        let cases = [
            ("short", "line 1: a token is at least 16"),
            ("\nx y:0123456789abcdef", "line 2: a name"),
            (
                "a:0123456789abcdef\na:fedcba9876543210",
                "line 2: the name `a`",
            ),
            (
                "a:0123456789abcdef\nb:0123456789abcdef",
                "line 2: this token",
            ),
            ("a:0123456789 abcdef", "visible ASCII"),
            ("# only a comment\n", "no token"),
        ];
        for (text, expected) in cases {
            let error = AdminTokens::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(!error.contains("0123456789"), "{error}");
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let error = AdminTokens::read("/nonexistent/tokens").unwrap_err();
        let cause = std::error::Error::source(&error).map(ToString::to_string);
        assert!(cause.is_some(), "the I/O error is kept: {error:?}");
        assert!(error.to_string().contains("/nonexistent/tokens"), "{error}");
    }
}
