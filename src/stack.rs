//! The common stack, in the one order that works.
//!
//! The layers pass each other [extensions](crate::extensions), so their
//! order matters: metrics above failover (one observation per client
//! request), failover above the balancer (a retry goes to another backend),
//! passive health below it (each try is judged on the backend it reached),
//! hedging between failover and the balancer with its recorder below the
//! balancer. [`Stack`] puts them there; each layer stays usable on its own.

use tower_layer::{Identity, Layer};

use crate::backend::BackendSet;
use crate::balance::{LoadBalanceLayer, Strategy};
use crate::failover::FailoverLayer;
use crate::health::{OutlierDetection, PassiveHealthLayer};
use crate::hedge::{HedgeLayer, RecordTargetLayer};

/// A builder for the common stack: [`LoadBalanceLayer`] with, if asked,
/// [`FailoverLayer`] above it, [`HedgeLayer`] between the two (its
/// [`recorder`](HedgeLayer::recorder) below the balancer),
/// [`PassiveHealthLayer`] below it and
/// [`MetricsLayer`](crate::metrics::MetricsLayer) on top.
///
/// ```
/// use tower::ServiceBuilder;
/// use std::time::Duration;
/// use tower_lb::failover::FailoverLayer;
/// use tower_lb::health::OutlierDetection;
/// use tower_lb::hedge::HedgeLayer;
/// use tower_lb::{BackendSet, Forward, Stack, balance::RoundRobin};
///
/// let set = BackendSet::new(["http://127.0.0.1:8001".parse().unwrap()]);
/// let mut registry = prometheus_client::registry::Registry::default();
/// let failover = FailoverLayer::new().max_retries(2);
/// let hedge = HedgeLayer::new(Duration::from_millis(50))?.with_failover(&failover);
/// let service = ServiceBuilder::new()
///     .layer(
///         Stack::new(&set, RoundRobin::new())
///             .failover(failover)
///             .hedge(hedge)
///             .passive_health(OutlierDetection::new())
///             .metrics(&mut registry),
///     )
///     .service(Forward::new());
/// # drop(service);
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Stack<St: Strategy, F = Identity, P = Identity, M = Identity, H = Identity, R = Identity>
{
    set: BackendSet,
    balance: LoadBalanceLayer<St>,
    failover: F,
    passive: P,
    metrics: M,
    hedge: H,
    record: R,
}

impl<St: Strategy> Stack<St> {
    /// Balances over `set` with `strategy`, and nothing else yet.
    pub fn new(set: impl AsRef<BackendSet>, strategy: St) -> Self {
        let set = set.as_ref().clone();
        Self {
            balance: LoadBalanceLayer::new(&set, strategy),
            set,
            failover: Identity::new(),
            passive: Identity::new(),
            metrics: Identity::new(),
            hedge: Identity::new(),
            record: Identity::new(),
        }
    }
}

impl<St: Strategy, F, P, M, H, R> Stack<St, F, P, M, H, R> {
    /// Retries failed tries on other backends, above the balancer.
    pub fn failover(self, failover: FailoverLayer) -> Stack<St, FailoverLayer, P, M, H, R> {
        Stack {
            set: self.set,
            balance: self.balance,
            failover,
            passive: self.passive,
            metrics: self.metrics,
            hedge: self.hedge,
            record: self.record,
        }
    }

    /// Hedges slow requests on other backends: below failover, above the
    /// balancer, with its recorder below the balancer. To share failover's
    /// retry budget, make it [`with_failover`](HedgeLayer::with_failover).
    pub fn hedge(self, hedge: HedgeLayer) -> Stack<St, F, P, M, HedgeLayer, RecordTargetLayer> {
        Stack {
            record: hedge.recorder(),
            hedge,
            set: self.set,
            balance: self.balance,
            failover: self.failover,
            passive: self.passive,
            metrics: self.metrics,
        }
    }

    /// Judges each try on the backend it reached, below the balancer.
    pub fn passive_health(
        self,
        detection: OutlierDetection,
    ) -> Stack<St, F, PassiveHealthLayer, M, H, R> {
        Stack {
            passive: PassiveHealthLayer::new(self.set.clone(), detection),
            set: self.set,
            balance: self.balance,
            failover: self.failover,
            metrics: self.metrics,
            hedge: self.hedge,
            record: self.record,
        }
    }

    /// Records every client request's metrics in `registry`, on top.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics(
        self,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Stack<St, F, P, crate::metrics::MetricsLayer, H, R> {
        Stack {
            metrics: crate::metrics::MetricsLayer::new(&self.set, registry),
            set: self.set,
            balance: self.balance,
            failover: self.failover,
            passive: self.passive,
            hedge: self.hedge,
            record: self.record,
        }
    }
}

impl<S, St, F, P, M, H, R> Layer<S> for Stack<St, F, P, M, H, R>
where
    St: Strategy,
    P: Layer<S>,
    R: Layer<P::Service>,
    LoadBalanceLayer<St>: Layer<R::Service>,
    H: Layer<<LoadBalanceLayer<St> as Layer<R::Service>>::Service>,
    F: Layer<H::Service>,
    M: Layer<F::Service>,
{
    type Service = M::Service;

    fn layer(&self, inner: S) -> Self::Service {
        let inner = self.passive.layer(inner);
        let inner = self.record.layer(inner);
        let inner = self.balance.layer(inner);
        let inner = self.hedge.layer(inner);
        let inner = self.failover.layer(inner);
        self.metrics.layer(inner)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::Empty;
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::balance::RoundRobin;
    use crate::extensions::{Attempts, Target};

    #[tokio::test]
    async fn the_layers_go_in_the_order_that_works() {
        let set = BackendSet::new(
            ["http://127.0.0.1:1", "http://127.0.0.1:2"].map(|url| url.parse().unwrap()),
        );
        // Port 1 answers 502: failover must retry it on port 2, which it can
        // only do above the balancer.
        let inner = service_fn(|request: Request<_>| async move {
            let _: &crate::failover::ReplayBody<Empty<Bytes>> = request.body();
            let mut response = Response::new(Empty::<Bytes>::new());
            if request.uri().port_u16() == Some(1) {
                *response.status_mut() = http::StatusCode::BAD_GATEWAY;
            }
            Ok::<_, Infallible>(response)
        });
        let stack = Stack::new(&set, RoundRobin::new())
            .failover(FailoverLayer::new())
            .passive_health(OutlierDetection::new())
            .layer(inner);
        let response = stack.oneshot(Request::new(Empty::new())).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(Attempts::of(&response).retries(), 1);
        let target = response.extensions().get::<Target>().unwrap();
        assert_eq!(target.backend().address().authority().port_u16(), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn hedging_goes_between_failover_and_the_balancer() {
        use std::time::Duration;
        let set = BackendSet::new(
            ["http://127.0.0.1:1", "http://127.0.0.1:2"].map(|url| url.parse().unwrap()),
        );
        // Port 1 answers after a second; the hedge must reach port 2.
        let inner = service_fn(|request: Request<_>| async move {
            let _: &crate::hedge::RequestBody<crate::failover::ReplayBody<Empty<Bytes>>> =
                request.body();
            if request.uri().port_u16() == Some(1) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        });
        let failover = FailoverLayer::new();
        let hedge = HedgeLayer::new(Duration::from_millis(50))
            .unwrap()
            .with_failover(&failover);
        let stack = Stack::new(&set, RoundRobin::new())
            .failover(failover)
            .hedge(hedge.clone())
            .passive_health(OutlierDetection::new())
            .layer(inner);
        let started = tokio::time::Instant::now();
        let response = stack.oneshot(Request::new(Empty::new())).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(50));
        let target = response.extensions().get::<Target>().unwrap();
        assert_eq!(target.backend().address().authority().port_u16(), Some(2));
        assert_eq!((hedge.stats().sent_total, hedge.stats().won_total), (1, 1));
    }
}
