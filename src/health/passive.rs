//! Passive health checking: the layer that watches real responses.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::OutlierDetection;
use super::outlier::Outcome;
use crate::backend::{Backend, BackendSet};
use crate::balance::Target;

/// Watches each response from a backend and applies [`OutlierDetection`]:
/// ejects backends that fail in a row, ramps down those that fail often.
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
///     .service(Forward::<axum::body::Body>::new());
/// # Ok::<(), tower_lb::Error>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct PassiveHealthLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    set: BackendSet,
    detection: OutlierDetection,
}

impl PassiveHealthLayer {
    /// Applies `detection` to the backends of `set` (the set is where
    /// ejection events go and what the ejection cap counts).
    pub fn new(set: BackendSet, detection: OutlierDetection) -> Self {
        Self {
            shared: Arc::new(Shared { set, detection }),
        }
    }
}

impl<S> Layer<S> for PassiveHealthLayer {
    type Service = PassiveHealth<S>;

    fn layer(&self, inner: S) -> PassiveHealth<S> {
        PassiveHealth {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of [`PassiveHealthLayer`].
#[derive(Clone)]
pub struct PassiveHealth<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for PassiveHealth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassiveHealth")
            .field("inner", &self.inner)
            .field("detection", &self.shared.detection)
            .finish()
    }
}

impl<S, B, RB> Service<Request<B>> for PassiveHealth<S>
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
        let backend = request
            .extensions()
            .get::<Target>()
            .map(|target| target.backend().clone());
        ResponseFuture {
            future: self.inner.call(request),
            watch: backend.map(|backend| (backend, Arc::clone(&self.shared))),
        }
    }
}

pin_project! {
    /// Records the outcome when the response (headers) arrives.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        watch: Option<(Backend, Arc<Shared>)>,
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        if let Some((backend, shared)) = this.watch.take() {
            let outcome = match &result {
                Ok(response) => shared.detection.outcome(response),
                Err(_) => Outcome::Failure,
            };
            shared.detection.record(&shared.set, &backend, outcome);
        }
        Poll::Ready(result)
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
