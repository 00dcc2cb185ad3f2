//! The failover service.

use std::fmt;
use std::sync::Arc;
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
    pub(super) shared: Arc<Shared>,
}

/// What the clones of one [`Failover`] share: the layer's settings and what
/// they learned about their inner service. One `Arc` for both, so a request
/// costs one reference count.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: Arc<Settings>,
    pub(crate) head_back: HeadBack,
    /// What the tries are marked with: the statuses whose responses must
    /// bring the head back.
    pub(crate) return_head: ReturnHead,
}

impl<S> Failover<S> {
    pub(crate) fn new(inner: S, settings: Arc<Settings>) -> Self {
        let shared = Arc::new(Shared {
            return_head: ReturnHead::new(&settings.policy.statuses),
            settings,
            head_back: HeadBack::default(),
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
        // The polled-ready service makes the first try; a clone stays for
        // the retries (tower's rule: call only what was polled ready).
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        // The budget's deposit and the deadline read the chain's one clock
        // reading, as do the layers below.
        let _started = CallTime::enter();
        ResponseFuture::new(ready, Arc::clone(&self.shared), request)
    }
}
