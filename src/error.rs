//! The crate's error types: [`Error`] for a request that failed,
//! [`ConfigError`] for a setting refused before any request is served.
//!
//! Every failure of a request is an [`Error`]: an opaque value with a
//! [`kind`](Error::kind), `is_*` predicates, the backend it concerns (when there
//! is one) and its cause behind [`source`](std::error::Error::source). Its
//! kinds are only what a request can meet, so every kind has a status a
//! client may see; a configuration error has no status because it never
//! reaches a client (see [`ConfigError`]).
//!
//! HTTP-facing layers answer with a response rather than an error, so that an
//! axum `Router` gets an `Infallible` service: [`Error::status`] gives the
//! documented mapping (503 when no backend is eligible, 502 when a backend
//! failed, 504 on a timeout) and the `Error` itself travels in the response's
//! extensions, where outer layers (failover, metrics) read what happened.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

mod config;

pub use config::ConfigError;

/// A boxed error, the currency of tower and hyper.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// An error's cause, shared by its clones (response extensions must be
/// `Clone`, and a parsed setting hands out copies of its error).
type Cause = Arc<dyn StdError + Send + Sync>;

/// What `source()` returns for a kept cause.
fn as_source(cause: Option<&Cause>) -> Option<&(dyn StdError + 'static)> {
    cause.map(|cause| &**cause as &(dyn StdError + 'static))
}

/// What went wrong. More kinds may be added, so `match` with a wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No backend in the set was eligible (all down, ejected, draining or
    /// already tried by this request).
    NoBackend,
    /// The connection to the backend could not be established; the backend
    /// never saw the request, so any request may be retried elsewhere.
    Connect,
    /// The backend did not answer in time.
    Timeout,
    /// The backend broke the exchange after it had the request (reset,
    /// malformed response, closed mid-way).
    Upstream,
    /// A request body was larger than the bound a layer may buffer.
    BodyTooLarge,
    /// The client broke its own request: a body framed wrongly (a bad chunk
    /// size, a chunk without its CRLF) or cut short. The backend is not to
    /// blame: it is not counted against the backend and never retried, and
    /// the client gets 400.
    Client,
    /// Every eligible backend was at its concurrency limit and the request
    /// could not wait for one (the queue was full, or the wait timed out):
    /// 503 with `Retry-After`.
    Overloaded,
}

/// The error type of tower-lb.
///
/// It is cheap to clone (its cause is shared) so that it can ride in response
/// extensions, which `http` requires to be `Clone`.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    /// The backend's canonical address (`http://host:port`), as text: the
    /// error type sits below the backend types and imports nothing of them.
    backend: Option<Arc<str>>,
    message: Option<Arc<str>>,
    source: Option<Cause>,
    /// Seconds a client should wait before trying again (`Retry-After`).
    retry_after: Option<u32>,
}

impl Error {
    /// An error of `kind` with no further detail.
    pub fn new(kind: ErrorKind) -> Self {
        Self {
            kind,
            backend: None,
            message: None,
            source: None,
            retry_after: None,
        }
    }

    /// Tells the client when to try again: the response carries
    /// `Retry-After` with `seconds`.
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The seconds of `Retry-After` the response carries, if any.
    pub fn retry_after(&self) -> Option<u32> {
        self.retry_after
    }

    /// Attaches the cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(Arc::from(source.into()));
        self
    }

    /// Attaches the backend this error concerns: an
    /// [`Address`](crate::backend::Address) (which converts without
    /// copying its text) or any string.
    pub fn with_backend(mut self, backend: impl Into<Arc<str>>) -> Self {
        self.backend = Some(backend.into());
        self
    }

    /// Attaches a human-readable detail.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(Arc::from(message.into()));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The canonical address of the backend this error concerns
    /// (`http://host:port`), when there is one.
    pub fn backend(&self) -> Option<&str> {
        self.backend.as_deref()
    }

    /// No backend was eligible.
    pub fn is_no_backend(&self) -> bool {
        self.kind == ErrorKind::NoBackend
    }

    /// The backend could not be reached; it never saw the request.
    pub fn is_connect(&self) -> bool {
        self.kind == ErrorKind::Connect
    }

    /// A deadline passed.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// The backend failed after it had the request.
    pub fn is_upstream(&self) -> bool {
        self.kind == ErrorKind::Upstream
    }

    /// A body was too large to buffer for replay.
    pub fn is_body_too_large(&self) -> bool {
        self.kind == ErrorKind::BodyTooLarge
    }

    /// The client broke its own request; the backend is not to blame.
    pub fn is_client(&self) -> bool {
        self.kind == ErrorKind::Client
    }

    /// Every eligible backend was at its limit and the request could not
    /// wait.
    pub fn is_overloaded(&self) -> bool {
        self.kind == ErrorKind::Overloaded
    }

    /// The status a proxy answers with: 503 for no backend, 504 for a
    /// timeout, 413 for a body too large, 400 for a request the client
    /// broke, 502 for every backend failure.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::NoBackend | ErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Client => StatusCode::BAD_REQUEST,
            ErrorKind::Connect | ErrorKind::Upstream => StatusCode::BAD_GATEWAY,
        }
    }

    /// The short plain-text body that goes with [`status`](Self::status).
    ///
    /// It says what failed but not where: backend addresses are internal and
    /// stay out of what clients see.
    pub fn public_text(&self) -> &'static str {
        match self.kind {
            ErrorKind::NoBackend => "no backend available\n",
            ErrorKind::Connect => "backend unreachable\n",
            ErrorKind::Timeout => "backend timed out\n",
            ErrorKind::Upstream => "backend failed\n",
            ErrorKind::BodyTooLarge => "request body too large\n",
            ErrorKind::Client => "bad request\n",
            ErrorKind::Overloaded => "backends busy, retry later\n",
        }
    }

    /// The response a proxy answers with: [`status`](Self::status), a short
    /// text body, and this error in the extensions for outer layers to read.
    pub fn to_response<B: From<Bytes>>(&self) -> Response<B> {
        let mut response =
            Response::new(B::from(Bytes::from_static(self.public_text().as_bytes())));
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(self.clone());
        response
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("tower_lb::Error");
        d.field("kind", &self.kind);
        if let Some(backend) = &self.backend {
            d.field("backend", &format_args!("{backend}"));
        }
        if let Some(message) = &self.message {
            d.field("message", message);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ErrorKind::NoBackend => "no eligible backend",
            ErrorKind::Connect => "could not connect to backend",
            ErrorKind::Timeout => "backend timed out",
            ErrorKind::Upstream => "backend failed",
            ErrorKind::BodyTooLarge => "body too large to buffer",
            ErrorKind::Client => "the client broke its request",
            ErrorKind::Overloaded => "every backend at its limit",
        };
        f.write_str(what)?;
        if let Some(backend) = &self.backend {
            write!(f, " ({backend})")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        as_source(self.source.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_documented_mapping() {
        assert_eq!(
            Error::new(ErrorKind::NoBackend).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            Error::new(ErrorKind::Connect).status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            Error::new(ErrorKind::Upstream).status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            Error::new(ErrorKind::Timeout).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            Error::new(ErrorKind::Client).status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn every_request_kind_blames_someone() {
        // A 500 would say the proxy itself is broken; configuration errors
        // are `ConfigError`s refused before serving, so no kind maps there.
        for kind in [
            ErrorKind::NoBackend,
            ErrorKind::Connect,
            ErrorKind::Timeout,
            ErrorKind::Upstream,
            ErrorKind::BodyTooLarge,
            ErrorKind::Client,
            ErrorKind::Overloaded,
        ] {
            let status = Error::new(kind).status();
            assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{kind:?}");
            assert!(status.is_client_error() || status.is_server_error());
        }
    }

    #[test]
    fn response_carries_the_error_and_a_text_body() {
        let error = Error::new(ErrorKind::NoBackend);
        let response: Response<Bytes> = error.to_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.body().as_ref(), b"no backend available\n");
        assert!(
            response
                .extensions()
                .get::<Error>()
                .unwrap()
                .is_no_backend()
        );
    }

    #[test]
    fn source_is_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = Error::new(ErrorKind::Connect).with_source(io);
        assert_eq!(error.source().unwrap().to_string(), "refused");
    }
}
