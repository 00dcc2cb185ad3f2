//! Where the first attempt went: told to the hedge from below the balancer.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use crate::backend::BackendId;
use crate::extensions::Target;
use crate::warn_once::warn_once;

/// The backend the first attempt of a hedged request was sent to, filled in
/// by [`RecordTarget`] when the balancer has picked it. The hedge reads it
/// when it is due, to send the hedge elsewhere ([`Tried`](crate::Tried)).
///
/// A request extension shared by the hedge's future and the attempt: the
/// attempt's request has moved down the stack by the time the hedge is
/// due, and only a layer below the balancer sees its `Target`.
#[derive(Clone, Debug, Default)]
pub(crate) struct FirstTry(Arc<OnceLock<BackendId>>);

impl FirstTry {
    pub(crate) fn get(&self) -> Option<BackendId> {
        self.0.get().copied()
    }

    fn set(&self, backend: BackendId) {
        // Set once: the first attempt is picked once.
        let _ = self.0.set(backend);
    }
}

/// Tells [`HedgeLayer`](super::HedgeLayer) which backend a request's first
/// attempt went to, so that its hedge goes to another one. Goes *below*
/// [`LoadBalanceLayer`](crate::LoadBalanceLayer), where the request carries
/// its [`Target`]; made by [`HedgeLayer::recorder`](super::HedgeLayer::recorder).
///
/// It costs a request one extension lookup, and does nothing to requests
/// that are not hedged.
#[derive(Clone, Debug)]
#[must_use]
pub struct RecordTargetLayer {
    _private: (),
}

impl RecordTargetLayer {
    pub(super) fn new() -> Self {
        Self { _private: () }
    }
}

impl<S> Layer<S> for RecordTargetLayer {
    type Service = RecordTarget<S>;

    fn layer(&self, inner: S) -> RecordTarget<S> {
        RecordTarget { inner }
    }
}

/// The service of [`RecordTargetLayer`].
#[derive(Clone, Debug)]
pub struct RecordTarget<S> {
    inner: S,
}

impl<S> RecordTarget<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// This service's inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for RecordTarget<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> S::Future {
        if let Some(first) = request.extensions().get::<FirstTry>() {
            match request.extensions().get::<Target>() {
                Some(target) => first.set(target.backend().id()),
                None => warn_once!(
                    "hedging: a hedged request reached RecordTargetLayer without a Target, \
                     so it is never hedged; put RecordTargetLayer below LoadBalanceLayer"
                ),
            }
        }
        self.inner.call(request)
    }
}
