//! The failover service.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower_service::Service;

use super::ReplayBody;
use super::future::ResponseFuture;
use super::head_back::HeadBack;
use super::layer::Settings;
use crate::BoxError;
use crate::clock::CallTime;
use crate::extensions::ReturnHead;

/// The service of [`FailoverLayer`](super::FailoverLayer): sends a request
/// again, to another backend, when the answer says that is safe and useful.
pub struct Failover<S> {
    inner: S,
    pub(super) shared: Arc<Shared<S>>,
}

/// What the clones of one [`Failover`] share: the layer's settings, what
/// they learned about their inner service, and the inner service a retry
/// is sent through. One `Arc` for all, so a request costs one reference
/// count.
pub(crate) struct Shared<S> {
    pub(crate) settings: Arc<Settings>,
    pub(crate) head_back: HeadBack,
    /// What the tries are marked with: the statuses whose responses must
    /// bring the head back.
    pub(crate) return_head: ReturnHead,
    /// A clone of the inner service, made at the first request, that each
    /// retry clones its own service from.
    ///
    /// Why not a clone per request, as tower's own `Retry` makes: the
    /// first try is sent through `inner`, the service just polled ready,
    /// and only a retry needs a service of its own; cloning one for every
    /// request in case it is retried cost each request the clone's
    /// reference counts (three in the usual stack: the balancer's, passive
    /// health's, the forwarding service's), an atomic increment and
    /// decrement each, and
    /// the clone's room in every request's future. Behind a `Mutex`, so
    /// that an inner service that is `Send` but not `Sync` (tower's
    /// `BoxCloneService`) can be shared: only a retry takes the lock.
    spare: OnceLock<Mutex<S>>,
}

impl<S: Clone> Shared<S> {
    /// A service for a retry: a clone of the spare (made by the first
    /// request, which any retry follows).
    pub(crate) fn retry_service(&self) -> S {
        let Some(spare) = self.spare.get() else {
            unreachable!("the first request makes the spare before any retry")
        };
        spare.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl<S> fmt::Debug for Shared<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("settings", &self.settings)
            .field("head_back", &self.head_back)
            .field("return_head", &self.return_head)
            .finish_non_exhaustive()
    }
}

impl<S> Failover<S> {
    pub(crate) fn new(inner: S, settings: Arc<Settings>) -> Self {
        let shared = Arc::new(Shared {
            return_head: ReturnHead::new(&settings.policy.statuses),
            settings,
            head_back: HeadBack::default(),
            spare: OnceLock::new(),
        });
        Self { inner, shared }
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

impl<S: Clone> Clone for Failover<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Failover<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failover")
            .field("inner", &self.inner)
            .field("settings", &self.shared.settings)
            .finish()
    }
}

impl<S, B, RB> Service<Request<B>> for Failover<S>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>> + Clone,
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    RB: From<Bytes>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The polled-ready service makes the first try; a retry clones its
        // own from the spare (see `Shared::spare`), made here once.
        let inner = &self.inner;
        self.shared.spare.get_or_init(|| Mutex::new(inner.clone()));
        // The budget's deposit and the deadline read the chain's one clock
        // reading, as do the layers below.
        let _started = CallTime::enter();
        ResponseFuture::new(&mut self.inner, Arc::clone(&self.shared), request)
    }
}
