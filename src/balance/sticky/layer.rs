//! The layer that sets the sticky cookie on responses.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};

use arc_swap::ArcSwap;
use http::header::SET_COOKIE;
use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use rustc_hash::FxHashMap;
use tower_layer::Layer;
use tower_service::Service;

use super::cookie::{StickyCookie, Token};
use crate::backend::{BackendId, BackendSet, Snapshot, SnapshotListener, StickyOutcome};
use crate::extensions::Target;

/// Sets the sticky cookie on a response whose request did not carry the
/// cookie of the backend that answered: a first visit, or a client whose
/// backend was gone, drained, unhealthy or full and who was balanced anew
/// (the cookie is re-issued for the new backend). It reads the
/// [`Target`] the balancer puts on responses, so it sits anywhere above
/// [`LoadBalance`](crate::LoadBalance) (above failover: the backend that
/// answered last is the one to stick to). The balancer's strategy must be
/// wrapped in [`Sticky`](super::Sticky) with the same cookie.
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_lb::balance::{RoundRobin, Sticky, StickyCookie, StickyCookieLayer};
/// use tower_lb::{BackendSet, Forward, LoadBalanceLayer};
///
/// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002".parse()?]);
/// let cookie = StickyCookie::new("srv")?.with_key(b"shared by every proxy instance")?;
/// let service = ServiceBuilder::new()
///     .layer(StickyCookieLayer::new(&set, cookie.clone()))
///     .layer(LoadBalanceLayer::new(&set, Sticky::new(cookie, RoundRobin::new())))
///     .service(Forward::new());
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct StickyCookieLayer {
    shared: Arc<Shared>,
}

struct Shared {
    cookie: StickyCookie,
    /// The members' tokens, rebuilt when the set changes.
    tokens: ArcSwap<FxHashMap<BackendId, Token>>,
    issued: AtomicU64,
    reissued: AtomicU64,
}

/// What the sticky layer counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StickyStats {
    /// Cookies set on a first visit (the request had none).
    pub issued_total: u64,
    /// Cookies set for a request whose cookie did not name the backend that
    /// answered (its backend gone or unavailable, or the cookie forged,
    /// altered or from another key).
    pub reissued_total: u64,
}

impl StickyCookieLayer {
    /// Sets `cookie` for the backends of `set`.
    pub fn new(set: &BackendSet, cookie: StickyCookie) -> Self {
        let shared = Arc::new(Shared {
            cookie,
            tokens: ArcSwap::from_pointee(FxHashMap::default()),
            issued: AtomicU64::new(0),
            reissued: AtomicU64::new(0),
        });
        let listener: Weak<dyn SnapshotListener> = Arc::downgrade(&shared) as _;
        set.listen(listener);
        Self { shared }
    }

    /// The counters now.
    pub fn stats(&self) -> StickyStats {
        StickyStats {
            issued_total: self.shared.issued.load(Relaxed),
            reissued_total: self.shared.reissued.load(Relaxed),
        }
    }
}

impl SnapshotListener for Shared {
    fn published(&self, snapshot: &Arc<Snapshot>) {
        let tokens = snapshot
            .backends()
            .iter()
            .map(|b| (b.id(), self.cookie.token(b.address())))
            .collect();
        self.tokens.store(Arc::new(tokens));
    }
}

impl fmt::Debug for StickyCookieLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StickyCookieLayer")
            .field("cookie", &self.shared.cookie)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<S> Layer<S> for StickyCookieLayer {
    type Service = StickyCookies<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StickyCookies {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of [`StickyCookieLayer`].
#[derive(Clone)]
pub struct StickyCookies<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for StickyCookies<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StickyCookies")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B, RB> Service<Request<B>> for StickyCookies<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let sent = self.shared.cookie.read(request.headers());
        ResponseFuture {
            future: self.inner.call(request),
            sent,
            shared: Arc::clone(&self.shared),
        }
    }
}

pin_project! {
    /// The inner response, with the sticky cookie set when it must be.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        sent: Option<Token>,
        shared: Arc<Shared>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.future.poll(cx))?;
        let Some(target) = response.extensions().get::<Target>() else {
            return Poll::Ready(Ok(response));
        };
        let id = target.backend().id();
        let token = this.shared.tokens.load().get(&id).copied();
        let state = target.backend().state();
        if token.is_some() && *this.sent == token {
            state.count_sticky(StickyOutcome::Kept);
        }
        if let Some(token) = token
            && *this.sent != Some(token)
        {
            let (counter, outcome) = match this.sent {
                None => (&this.shared.issued, StickyOutcome::Issued),
                Some(_) => (&this.shared.reissued, StickyOutcome::Reissued),
            };
            counter.fetch_add(1, Relaxed);
            state.count_sticky(outcome);
            let value = this.shared.cookie.set_cookie(&token);
            if let Ok(value) = HeaderValue::try_from(value) {
                response.headers_mut().append(SET_COOKIE, value);
            }
        }
        Poll::Ready(Ok(response))
    }
}
