//! Which failures may be retried on another backend.

use std::sync::Arc;

use http::{Method, Response, request};

use crate::{Error, ErrorKind};

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Hand this response to the client.
    Done,
    /// Try another backend, if budget, attempts and body allow.
    Retry,
    /// No backend was left to try: the previous failure is the answer.
    Exhausted,
}

/// The retry rules of a [`FailoverLayer`](super::FailoverLayer).
#[derive(Clone, Debug)]
pub(crate) struct Policy {
    pub(crate) statuses: Arc<[u16]>,
    pub(crate) non_idempotent: bool,
}

impl Policy {
    /// Whether a request may be sent twice without harm: a method RFC 9110
    /// calls idempotent, or an `Idempotency-Key` header (the client promises
    /// the server deduplicates).
    pub(crate) fn is_idempotent(&self, parts: &request::Parts) -> bool {
        self.non_idempotent
            || matches!(
                parts.method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::PUT
                    | Method::DELETE
                    | Method::TRACE
            )
            || parts.headers.contains_key("idempotency-key")
    }

    /// Judges an attempt's response.
    ///
    /// A connect failure means the backend never saw the request: always
    /// retryable. A request the client broke is never retried: another
    /// backend would get the same broken request. A timeout, a broken exchange or a retryable status means
    /// the backend may have acted on it: retryable only when idempotent.
    pub(crate) fn judge<B>(&self, response: &Response<B>, idempotent: bool) -> Verdict {
        match response.extensions().get::<Error>().map(Error::kind) {
            Some(ErrorKind::NoBackend) => Verdict::Exhausted,
            Some(ErrorKind::Connect) => Verdict::Retry,
            Some(ErrorKind::Timeout | ErrorKind::Upstream) if idempotent => Verdict::Retry,
            Some(_) => Verdict::Done,
            None if idempotent && self.statuses.contains(&response.status().as_u16()) => {
                Verdict::Retry
            }
            None => Verdict::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            statuses: Arc::from([502, 503, 504]),
            non_idempotent: false,
        }
    }

    fn parts(method: Method, key: bool) -> request::Parts {
        let mut builder = http::Request::builder().method(method);
        if key {
            builder = builder.header("idempotency-key", "abc");
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn failed(kind: ErrorKind) -> Response<bytes::Bytes> {
        Error::new(kind).to_response()
    }

    #[test]
    fn idempotency_by_method_or_key() {
        let p = policy();
        assert!(p.is_idempotent(&parts(Method::GET, false)));
        assert!(p.is_idempotent(&parts(Method::PUT, false)));
        assert!(!p.is_idempotent(&parts(Method::POST, false)));
        assert!(!p.is_idempotent(&parts(Method::PATCH, false)));
        assert!(p.is_idempotent(&parts(Method::POST, true)));
    }

    #[test]
    fn connect_failures_retry_for_any_method_the_rest_only_when_idempotent() {
        let p = policy();
        assert_eq!(p.judge(&failed(ErrorKind::Connect), false), Verdict::Retry);
        assert_eq!(p.judge(&failed(ErrorKind::Upstream), false), Verdict::Done);
        assert_eq!(p.judge(&failed(ErrorKind::Upstream), true), Verdict::Retry);
        assert_eq!(p.judge(&failed(ErrorKind::Timeout), true), Verdict::Retry);
        assert_eq!(p.judge(&failed(ErrorKind::Client), true), Verdict::Done);
        assert_eq!(
            p.judge(&failed(ErrorKind::NoBackend), true),
            Verdict::Exhausted
        );
        let mut unavailable = Response::new(bytes::Bytes::new());
        *unavailable.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(p.judge(&unavailable, true), Verdict::Retry);
        assert_eq!(p.judge(&unavailable, false), Verdict::Done);
        *unavailable.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        assert_eq!(p.judge(&unavailable, true), Verdict::Done);
    }
}
