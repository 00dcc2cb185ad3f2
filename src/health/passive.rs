//! Passive health checking: the layer that watches real responses.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::OutlierDetection;
use super::classify::Outcome;
use super::passive_body::ResponseBody;
use super::recorder::{Recorder, Watch};
use crate::backend::BackendSet;
use crate::extensions::Target;
use crate::replica::Replica;
use crate::warn_once::warn_once;

/// Watches each response from a backend and applies [`OutlierDetection`]:
/// ejects backends that fail in a row, ramps down those that fail often,
/// pauses those that say they are overloaded (`429`, or `503` with
/// `Retry-After`).
/// An exchange fails on a connect error, a timeout, a configured status,
/// or a body the backend broke off (see [`ResponseBody`]); it succeeds when
/// the response body ended.
///
/// It sits under [`LoadBalance`](crate::LoadBalance) (it reads the
/// [`Target`] the balancer put on the request) and over the forwarding
/// service (whose 502 / 504 answers carry the error). Requests without a
/// `Target` pass untouched.
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_lb::health::{OutlierDetection, PassiveHealthLayer};
/// use tower_lb::{BackendSet, Forward, LoadBalanceLayer, balance::RoundRobin};
///
/// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002".parse()?]);
/// let service = ServiceBuilder::new()
///     .layer(LoadBalanceLayer::new(set.clone(), RoundRobin::new()))
///     .layer(PassiveHealthLayer::new(set, OutlierDetection::new().consecutive_failures(3)))
///     .service(Forward::new());
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct PassiveHealthLayer {
    recorder: Arc<Recorder>,
}

impl PassiveHealthLayer {
    /// Applies `detection` to the backends of `set` (the set itself or a
    /// reference to it: the set is where ejection events go and what the
    /// ejection cap counts).
    pub fn new(set: impl AsRef<BackendSet>, detection: OutlierDetection) -> Self {
        Self {
            recorder: Arc::new(Recorder::new(set.as_ref().clone(), detection)),
        }
    }
}

impl<S> Layer<S> for PassiveHealthLayer {
    type Service = PassiveHealth<S>;

    fn layer(&self, inner: S) -> PassiveHealth<S> {
        PassiveHealth {
            inner,
            recorder: Replica::new(Arc::clone(&self.recorder)),
        }
    }
}

/// The service of [`PassiveHealthLayer`].
#[derive(Clone)]
pub struct PassiveHealth<S> {
    inner: S,
    // Counted per stack: each request's outcome holds a clone.
    recorder: Replica<Recorder>,
}

impl<S: fmt::Debug> fmt::Debug for PassiveHealth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassiveHealth")
            .field("inner", &self.inner)
            .field("detection", self.recorder.detection())
            .finish()
    }
}

impl<S, B, RB> Service<Request<B>> for PassiveHealth<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    RB: Body,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let backend = request
            .extensions()
            .get::<Target>()
            .map(|target| target.backend().clone());
        if backend.is_none() {
            warn_once!(
                "passive health: a request carries no Target, so no outcome is recorded; \
                 put PassiveHealthLayer below LoadBalanceLayer"
            );
        }
        ResponseFuture {
            future: self.inner.call(request),
            watch: backend.map(|backend| Watch::new(backend, self.recorder.clone())),
        }
    }
}

pin_project! {
    /// Records a failed exchange when the response (headers) arrives, and
    /// hands a good one's outcome to its body.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        watch: Option<Watch>,
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    RB: Body,
{
    type Output = Result<Response<ResponseBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        let Some(watch) = this.watch.take() else {
            return Poll::Ready(
                result.map(|response| response.map(|b| ResponseBody::new(b, None))),
            );
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                watch.record(Outcome::Failure);
                return Poll::Ready(Err(error));
            }
        };
        watch.heed(&response);
        let watch = match watch.outcome(&response) {
            // The client's fault: nothing to record of the backend.
            None => None,
            Some(Outcome::Failure) => {
                watch.record(Outcome::Failure);
                None
            }
            // Nothing left to read: the exchange is over.
            Some(Outcome::Success) if response.body().is_end_stream() => {
                watch.record(Outcome::Success);
                None
            }
            // The body decides.
            Some(Outcome::Success) => Some(watch),
        };
        Poll::Ready(Ok(response.map(|body| ResponseBody::new(body, watch))))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
