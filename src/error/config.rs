//! The error of configuration time.
//!
//! A setting that cannot work (a backend URL without a host, a strategy
//! name nobody knows, a health interval of zero, a token file that cannot
//! be read) is refused when it is parsed or built, before any request is
//! served. That is a different thing from a request failing, so it has its
//! own type: a builder returns [`ConfigError`], a service fails with
//! [`Error`](crate::Error), and neither has to carry (or map to a status)
//! what only the other can mean. hyper-util and tower-http keep the two
//! apart the same way: an invalid URI is never an HTTP response.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use super::{BoxError, Cause, as_source};

/// A setting or an argument was invalid; the message names it.
///
/// The message leads with what was refused (a flag, a field, a file and
/// line) so that a program can print it as it is and an operator knows
/// what to fix. It is cheap to clone (the text and the cause are shared),
/// so a value parsed once can hand the same error to every caller.
///
/// ```
/// use tower_lb::backend::Address;
///
/// let error = "ftp://example.com".parse::<Address>().unwrap_err();
/// assert!(error.to_string().starts_with("backend URL `ftp://example.com`"));
/// ```
#[derive(Clone)]
pub struct ConfigError {
    message: Arc<str>,
    source: Option<Cause>,
}

impl ConfigError {
    /// An error whose `message` names the setting and says what is wrong
    /// with it (`"health interval: must be above zero"`).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: Arc::from(message.into()),
            source: None,
        }
    }

    /// Attaches the cause (an I/O error reading a file, a parser's error).
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(Arc::from(source.into()));
        self
    }

    /// The message: the setting, then what is wrong with it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("tower_lb::ConfigError");
        d.field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for ConfigError {
    /// The message alone: it names the setting and says it all, and a
    /// cause worth showing is already in it (callers that want the chain
    /// walk [`source`](StdError::source)).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for ConfigError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        as_source(self.source.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_the_message_and_keeps_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let error = ConfigError::new("admin tokens /x: gone").with_source(io);
        assert_eq!(error.to_string(), "admin tokens /x: gone");
        assert_eq!(error.message(), "admin tokens /x: gone");
        assert_eq!(
            error.source().map(ToString::to_string).as_deref(),
            Some("gone")
        );
        let clone = error.clone();
        assert!(clone.source().is_some(), "a clone shares the cause");
    }

    #[test]
    fn is_a_box_error() {
        // `?` in a function returning tower's `BoxError` (a discovery
        // stream, a `main`) must take it.
        let boxed: BoxError = ConfigError::new("strategy `x`: unknown").into();
        assert_eq!(boxed.to_string(), "strategy `x`: unknown");
    }
}
