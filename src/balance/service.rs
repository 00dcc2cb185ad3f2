//! The load-balancing service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HOST;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, Request, Response};
use tower_service::Service;

use super::{Balancer, RequestRef, ResponseBody, ResponseFuture, Strategy, Target, Tried};
use crate::backend::Address;
use crate::clock::CallTime;
use crate::replica::Replica;
use crate::{Error, ErrorKind};

/// Points each request at a backend, then calls the inner service.
///
/// Per request: reads the balancer's snapshot and table (no lock), asks the
/// strategy for an eligible backend the request has not tried and counts
/// the request in flight there until the response *body* ends or is
/// dropped (under [`Balancer::set_max_in_flight`] a claim of one of the
/// backend's slots, exact however many threads race for it: see
/// [`Balancer::claim`]), rewrites the URI's scheme and authority to the
/// backend's (keeping the client's `Host`), and inserts a [`Target`]
/// extension into the request and the response. The time to response
/// headers feeds the backend's latency
/// estimate. The inner call runs in a `debug` span `upstream` with the
/// backend and the attempt number (1 + the backends already tried).
///
/// When no backend is available it answers 503 itself, with the
/// [`Error`] in the response extensions, so the service stays infallible
/// when the inner service is: an axum `Router` can take it.
pub struct LoadBalance<S, St: Strategy> {
    inner: S,
    // Counted per stack: failover clones this service for every request.
    balancer: Replica<Balancer<St>>,
}

impl<S, St: Strategy> LoadBalance<S, St> {
    /// Balances requests to `inner` with `balancer`.
    pub fn new(inner: S, balancer: Arc<Balancer<St>>) -> Self {
        Self {
            inner,
            balancer: Replica::new(balancer),
        }
    }

    /// The balancer.
    pub fn balancer(&self) -> &Arc<Balancer<St>> {
        self.balancer.shared()
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

impl<S, St, B, RB> Service<Request<B>> for LoadBalance<S, St>
where
    S: Service<Request<B>, Response = Response<RB>>,
    St: Strategy,
    RB: http_body::Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The chain's reading (kept open until the inner call returns).
        let started = CallTime::enter();
        let now = started.nanos();
        let tried = request
            .extensions()
            .get::<Tried>()
            .map_or(&[][..], Tried::as_slice);
        // The pick and the count are one step (exact under a limit): the
        // guard holds the request's one handle clone.
        let in_flight = self
            .balancer
            .claim_at(RequestRef::from(&request), tried, Some(now));
        let tried = tried.len();
        let Some(in_flight) = in_flight else {
            return ResponseFuture::failed(Error::new(ErrorKind::NoBackend));
        };
        let backend = in_flight.backend();
        if let Err(error) = point_at(&mut request, backend.address()) {
            return ResponseFuture::failed(error.with_backend(backend.address().clone()));
        }
        let span = tracing::debug_span!(
            "upstream",
            backend = backend.address().as_str(),
            attempt = tried + 1
        );
        // In place when the request already has one (a map reused from
        // request to request, as the example proxy's connections do): the
        // same as inserting, without a box made and one dropped.
        let target = Target::new(backend.clone());
        match request.extensions_mut().get_mut::<Target>() {
            Some(slot) => *slot = target,
            None => {
                request.extensions_mut().insert(target);
            }
        }
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        ResponseFuture::new(future, in_flight, now, span)
    }
}

/// Rewrites the URI to the backend's scheme and authority. The client's
/// authority survives as the `Host` header. When the client's URI names an
/// authority (an HTTP/1.1 absolute-form target, or HTTP/2's `:authority`)
/// that authority is the `Host` (RFC 9112 §3.2.2, RFC 9113 §8.3.1), so a
/// backend never sees a `Host` other than the one the proxy acted on.
fn point_at<B>(request: &mut Request<B>, address: &Address) -> Result<(), Error> {
    if let Some(authority) = request.uri().authority()
        && request.headers().get(HOST).map(HeaderValue::as_bytes)
            != Some(authority.as_str().as_bytes())
    {
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| Error::new(ErrorKind::Client).with_source(e))?;
        request.headers_mut().insert(HOST, host);
    }
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    parts.scheme = Some(address.scheme().clone());
    parts.authority = Some(address.authority().clone());
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    *request.uri_mut() =
        Uri::from_parts(parts).map_err(|e| Error::new(ErrorKind::Upstream).with_source(e))?;
    Ok(())
}

impl<S: Clone, St: Strategy> Clone for LoadBalance<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            balancer: self.balancer.clone(),
        }
    }
}

impl<S: fmt::Debug, St: Strategy + fmt::Debug> fmt::Debug for LoadBalance<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadBalance")
            .field("inner", &self.inner)
            .field("balancer", self.balancer.shared())
            .finish()
    }
}
