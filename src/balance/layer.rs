//! The load-balancing layer.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::{Balancer, LoadBalance, Strategy};
use crate::backend::BackendSet;

/// Wraps a forwarding service with [`LoadBalance`]: each request is pointed
/// at a backend chosen by the strategy.
///
/// Cloning the layer (as axum does per route) shares one balancer.
///
/// ```
/// use axum::Router;
/// use tower_lb::{BackendSet, Forward, LoadBalanceLayer, balance::RoundRobin};
///
/// let backends = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002".parse()?]);
/// let app: Router = Router::new()
///     .fallback_service(Forward::new())
///     .layer(LoadBalanceLayer::new(backends, RoundRobin::new()));
/// # Ok::<(), tower_lb::Error>(())
/// ```
#[must_use]
pub struct LoadBalanceLayer<St: Strategy> {
    balancer: Arc<Balancer<St>>,
}

impl<St: Strategy> LoadBalanceLayer<St> {
    /// Balances over `backends` (the set itself or a reference to it) with
    /// `strategy`.
    pub fn new(backends: impl AsRef<BackendSet>, strategy: St) -> Self {
        Self {
            balancer: Balancer::new(backends.as_ref(), strategy),
        }
    }

    /// Uses an existing balancer (to share it, or to pick outside the stack).
    pub fn from_balancer(balancer: Arc<Balancer<St>>) -> Self {
        Self { balancer }
    }

    /// Turns panic routing on or off (see [`Balancer::set_panic_routing`]).
    pub fn panic_routing(self, on: bool) -> Self {
        self.balancer.set_panic_routing(on);
        self
    }

    /// The balancer.
    pub fn balancer(&self) -> &Arc<Balancer<St>> {
        &self.balancer
    }
}

impl<St: Strategy> Clone for LoadBalanceLayer<St> {
    fn clone(&self) -> Self {
        Self {
            balancer: Arc::clone(&self.balancer),
        }
    }
}

impl<St: Strategy + fmt::Debug> fmt::Debug for LoadBalanceLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadBalanceLayer")
            .field("balancer", &self.balancer)
            .finish()
    }
}

impl<S, St: Strategy> Layer<S> for LoadBalanceLayer<St> {
    type Service = LoadBalance<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadBalance::new(inner, Arc::clone(&self.balancer))
    }
}
