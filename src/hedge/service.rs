//! The hedging service: decides per request whether it may be hedged.

use std::fmt;
use std::task::{Context, Poll};

use http::header::UPGRADE;
use http::request::Parts;
use http::{Method, Request, Response};
use tower_service::Service;

use super::future::ResponseFuture;
use super::record::FirstTry;
use super::{HedgeLayer, RequestBody};

/// The service of [`HedgeLayer`]: sends a request on, and a second attempt
/// to another backend when the first is slow to answer.
pub struct Hedge<S> {
    inner: S,
    layer: HedgeLayer,
}

impl<S> Hedge<S> {
    pub(super) fn new(inner: S, layer: HedgeLayer) -> Self {
        Self { inner, layer }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// This service's inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Whether a request may be sent twice at once: a safe method (RFC 9110
/// §9.2.1: GET, HEAD, OPTIONS, TRACE), no body, no protocol upgrade.
///
/// Narrower than failover's idempotent requests on purpose: a retry follows
/// a failed try, a hedge runs beside a live one, so two PUTs or DELETEs of
/// one request would race each other at the backends; and a request with a
/// body would need it kept whole for the hedge.
fn hedgeable<B: http_body::Body>(parts: &Parts, body: &B) -> bool {
    matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) && body.is_end_stream()
        && !parts.headers.contains_key(UPGRADE)
}

impl<S, B, RB> Service<Request<B>> for Hedge<S>
where
    S: Service<Request<RequestBody<B>>, Response = Response<RB>> + Clone,
    B: http_body::Body,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let settings = &self.layer.settings;
        if settings.deposit {
            tower::retry::budget::Budget::deposit(&*settings.budget);
        }
        let (mut parts, body) = request.into_parts();
        if !hedgeable(&parts, &body) {
            let request = Request::from_parts(parts, RequestBody::client(body));
            return ResponseFuture::single(self.inner.call(request));
        }
        // The first attempt keeps the client's own head (its header map has
        // the room the server gave it for what the layers below add); the
        // hedge gets this copy. It is made now because by the time the hedge
        // is due the original has moved down the stack, and it is made
        // before the first attempt's slot goes in, which the hedge must not
        // carry.
        let copy = parts.clone();
        let first = FirstTry::default();
        parts.extensions.insert(first.clone());
        // A clone for the hedge, polled ready before it is called (tower's
        // rule); this service, polled ready, takes the first attempt.
        let service = self.inner.clone();
        let request = Request::from_parts(parts, RequestBody::client(body));
        let call = self.inner.call(request);
        ResponseFuture::hedged(call, service, copy, first, self.layer.clone())
    }
}

impl<S: Clone> Clone for Hedge<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Hedge<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, upgrade: bool) -> Parts {
        let mut builder = Request::builder().method(method);
        if upgrade {
            builder = builder.header("upgrade", "websocket");
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn only_safe_methods_without_a_body_or_an_upgrade_are_hedged() {
        let none = http_body_util::Empty::<bytes::Bytes>::new();
        let some = http_body_util::Full::new(bytes::Bytes::from_static(b"x"));
        assert!(hedgeable(&parts(Method::GET, false), &none));
        assert!(hedgeable(&parts(Method::HEAD, false), &none));
        assert!(hedgeable(&parts(Method::OPTIONS, false), &none));
        assert!(!hedgeable(&parts(Method::GET, false), &some), "a body");
        assert!(!hedgeable(&parts(Method::GET, true), &none), "an upgrade");
        assert!(!hedgeable(&parts(Method::POST, false), &none));
        assert!(!hedgeable(&parts(Method::PUT, false), &none));
        assert!(!hedgeable(&parts(Method::DELETE, false), &none));
    }
}
