//! What can go wrong in one exchange, told apart by whose fault it is.
//!
//! The codec's error is private to `forward` and small on purpose: the
//! forwarding service maps it to the crate's [`Error`](crate::Error). The
//! distinctions that matter to that mapping are kept as data, not as text:
//! whether the *client's* body failed (a 400, not the backend's fault, never
//! retried), and whether the backend can have seen any byte of the request
//! (if not, the request is safe to send again on another connection).

use std::error::Error as StdError;
use std::fmt;
use std::io;

use crate::BoxError;

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The client's request body failed: it yielded an error, or more or
    /// fewer bytes than its declared length. The client's fault.
    ClientBody,
    /// Writing to or reading from the backend failed.
    Io,
    /// The backend sent bytes that are not a valid HTTP/1.1 response, or a
    /// framing that could be read more than one way (the message says
    /// which rule).
    Malformed,
    /// The backend's response head was over the limit.
    HeadTooLarge,
    /// The backend closed the connection before a complete response head.
    /// [`Error::response_started`] says whether any byte of it had arrived.
    ClosedBeforeResponse,
    /// The backend closed the connection before the end of the body it had
    /// declared (by length or by chunks).
    BodyCut,
}

/// An error of one HTTP/1.1 exchange with a backend.
pub(crate) struct Error {
    kind: Kind,
    message: Option<&'static str>,
    source: Option<BoxError>,
    request_sent: bool,
    body_started: bool,
    response_started: bool,
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Self {
        Self {
            kind,
            message: None,
            source: None,
            // Most errors happen once the request is out: say so unless the
            // exchange knows better.
            request_sent: true,
            body_started: true,
            response_started: false,
        }
    }

    pub(crate) fn malformed(message: &'static str) -> Self {
        Self::new(Kind::Malformed).with_message(message)
    }

    pub(crate) fn io(error: io::Error) -> Self {
        Self::new(Kind::Io).with_source(error)
    }

    pub(crate) fn client_body(message: &'static str) -> Self {
        Self::new(Kind::ClientBody).with_message(message)
    }

    pub(crate) fn with_message(mut self, message: &'static str) -> Self {
        self.message = Some(message);
        self
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Records how far the request had gone when this error happened.
    pub(crate) fn at(mut self, request_sent: bool, body_started: bool) -> Self {
        self.request_sent = request_sent;
        self.body_started = body_started;
        self
    }

    pub(crate) fn with_response_started(mut self, started: bool) -> Self {
        self.response_started = started;
        self
    }

    /// Whether this is a write the backend cut short by closing the
    /// connection (a reset, a broken pipe) once the request's body had
    /// started to go out: what a backend that answered early and closed
    /// does, so an answer may be waiting to be read.
    pub(crate) fn cut_short(&self) -> bool {
        use io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
        self.kind == Kind::Io
            && self.request_sent
            && self.body_started
            && self
                .source
                .as_deref()
                .and_then(|source| source.downcast_ref::<io::Error>())
                .is_some_and(|error| {
                    matches!(
                        error.kind(),
                        BrokenPipe | ConnectionReset | ConnectionAborted
                    )
                })
    }

    /// What went wrong.
    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether the client (its request body) is to blame, not the backend.
    pub(crate) fn is_client(&self) -> bool {
        self.kind == Kind::ClientBody
    }

    /// Whether the backend can have seen any byte of the request. When not,
    /// the request may be sent again on another connection (if its body was
    /// not started either, see [`body_started`](Self::body_started)).
    pub(crate) fn request_sent(&self) -> bool {
        self.request_sent
    }

    /// Whether any frame was taken from the request body (so the body
    /// cannot be sent again as it is).
    pub(crate) fn body_started(&self) -> bool {
        self.body_started
    }

    /// For [`Kind::ClosedBeforeResponse`]: whether any byte of a response
    /// had arrived. A reused connection that the backend closed while idle
    /// shows as no byte at all.
    pub(crate) fn response_started(&self) -> bool {
        self.response_started
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("h1::Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .field("request_sent", &self.request_sent)
            .field("body_started", &self.body_started)
            .field("response_started", &self.response_started)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            Kind::ClientBody => "the client's request body failed",
            Kind::Io => "connection to the backend failed",
            Kind::Malformed => "the backend sent a malformed response",
            Kind::HeadTooLarge => "the backend's response head is over the limit",
            Kind::ClosedBeforeResponse => "the backend closed the connection before a response",
            Kind::BodyCut => "the backend closed the connection in the middle of the body",
        };
        f.write_str(what)?;
        if let Some(message) = self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_and_the_message_are_kept() {
        let error = Error::io(io::Error::new(io::ErrorKind::BrokenPipe, "pipe")).at(false, false);
        assert_eq!(error.kind(), Kind::Io);
        assert!(!error.request_sent() && !error.body_started());
        assert_eq!(
            error.source().map(|s| s.to_string()).as_deref(),
            Some("pipe")
        );
        let error = Error::malformed("content-length repeated");
        assert_eq!(
            error.to_string(),
            "the backend sent a malformed response: content-length repeated"
        );
        assert!(!error.is_client() && Error::client_body("x").is_client());
    }
}
