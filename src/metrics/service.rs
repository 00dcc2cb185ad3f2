//! The metrics service.

use std::fmt;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::ResponseFuture;
use super::recorder::Recorder;
use crate::clock::CallTime;
use crate::replica::Replica;

/// The service of [`MetricsLayer`](super::MetricsLayer).
#[derive(Clone)]
pub struct Metrics<S> {
    inner: S,
    // Counted per stack: each request's future and body hold a clone.
    recorder: Replica<Recorder>,
}

impl<S> Metrics<S> {
    pub(crate) fn new(inner: S, recorder: Replica<Recorder>) -> Self {
        Self { inner, recorder }
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

impl<S: fmt::Debug> fmt::Debug for Metrics<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B, RB> Service<Request<B>> for Metrics<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<super::ResponseBody<RB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Read before the inner call, which shares the reading.
        let started = CallTime::enter();
        ResponseFuture::new(
            self.inner.call(request),
            self.recorder.clone(),
            started.nanos(),
        )
    }
}
