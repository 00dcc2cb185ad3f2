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
/// # Ok::<(), tower_lb::ConfigError>(())
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

    /// This layer with panic routing on or off (see
    /// [`Balancer::set_panic_routing`]).
    ///
    /// A builder: it never changes a balancer other handles see. On a layer
    /// that alone holds its balancer it sets the flag; on one whose balancer
    /// is shared (a clone of the layer, [`from_balancer`](Self::from_balancer))
    /// it binds a new balancer of the same strategy to the same set, and the
    /// shared one is left as it was. To switch a running balancer, call
    /// [`Balancer::set_panic_routing`].
    pub fn panic_routing(mut self, on: bool) -> Self
    where
        St: Clone,
    {
        if self.balancer.panic_routing() != on {
            self.own_balancer().set_panic_routing(on);
        }
        self
    }

    /// This layer with every backend limited to `limit` requests in flight
    /// per unit of weight (see [`Balancer::set_max_in_flight`]; 0: no
    /// limit). A builder like [`panic_routing`](Self::panic_routing): a
    /// shared balancer is left as it was and a new one bound. Put a
    /// [`QueueLayer`](super::QueueLayer) above to let requests wait for a
    /// slot instead of getting a 503 when every backend is full.
    ///
    /// ```
    /// use tower_lb::balance::LeastConnections;
    /// use tower_lb::{BackendSet, LoadBalanceLayer};
    ///
    /// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002,weight=2".parse()?]);
    /// // 100 in flight to the first backend, 200 to the second.
    /// let layer = LoadBalanceLayer::new(set, LeastConnections::new()).max_in_flight(100);
    /// assert_eq!(layer.balancer().max_in_flight(), 100);
    /// # Ok::<(), tower_lb::ConfigError>(())
    /// ```
    pub fn max_in_flight(mut self, limit: u32) -> Self
    where
        St: Clone,
    {
        if self.balancer.max_in_flight() != limit {
            self.own_balancer().set_max_in_flight(limit);
        }
        self
    }

    /// The balancer, bound anew (same strategy, set and settings) when
    /// others share it: what a builder may change without touching them.
    fn own_balancer(&mut self) -> &Balancer<St>
    where
        St: Clone,
    {
        if Arc::strong_count(&self.balancer) != 1 {
            let fresh = Balancer::new(
                self.balancer.backend_set(),
                self.balancer.strategy().clone(),
            );
            fresh.set_panic_routing(self.balancer.panic_routing());
            fresh.set_max_in_flight(self.balancer.max_in_flight());
            self.balancer = fresh;
        }
        &self.balancer
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::RoundRobin;

    #[test]
    fn building_never_changes_a_shared_balancer() {
        let set = BackendSet::new(["http://127.0.0.1:1".parse().unwrap()]);
        let layer = LoadBalanceLayer::new(set.clone(), RoundRobin::new());
        let shared = layer.clone();
        let panicking = layer.panic_routing(true);
        assert!(panicking.balancer().panic_routing());
        assert!(!shared.balancer().panic_routing(), "the clone is untouched");
        assert!(!Arc::ptr_eq(panicking.balancer(), shared.balancer()));
        let alone = LoadBalanceLayer::new(set, RoundRobin::new());
        let before = Arc::as_ptr(alone.balancer());
        let alone = alone.panic_routing(true);
        assert_eq!(Arc::as_ptr(alone.balancer()), before, "set in place");
        assert!(alone.balancer().panic_routing());
        assert_eq!(alone.balancer().snapshot().len(), 1);
    }
}
