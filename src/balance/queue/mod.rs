//! A bounded FIFO queue for requests that find every backend at its limit.
//!
//! With [`Balancer::set_max_in_flight`] (or
//! [`LoadBalanceLayer::max_in_flight`](crate::LoadBalanceLayer::max_in_flight))
//! a backend at its limit takes no new request. When every eligible backend
//! is full, the balancer alone answers 503 at once. [`QueueLayer`], above
//! the balancer, lets such a request wait instead: in first-come order, at
//! most `max_pending` of them, each at most `timeout`, and woken as soon as
//! any backend frees a slot (a watcher on every backend's load hears the
//! count fall; no polling). A request that finds the queue full, or whose
//! wait runs out, gets `503 Service Unavailable` with `Retry-After`, so a
//! well-behaved client backs off instead of hammering.
//!
//! This is HAProxy's `maxconn` + `maxqueue` + `timeout queue`. Queueing in
//! the proxy rather than at the backends keeps a burst from piling onto
//! whichever backend was picked first, and keeps the choice of backend
//! until one is free. Keep the timeout short (a second or two): a long
//! queue adds latency to every request behind it, and clients retry anyway.
//!
//! While nothing waits, the queue costs a request one scan of the
//! snapshot for a backend with room, stopping at the first (it does not
//! pick, so round-robin's order is untouched); when the limit is off, one
//! atomic load. A queued request holds its place without a lock: the wakers
//! are tokio's `Notify`, whose `notify_one` wakes the longest waiter, and a
//! request arriving while others wait queues behind them. The queue's check
//! is a read, the balancer's claim of a slot a compare-and-swap: the limit
//! holds exactly, and a request that saw room may, in a race with another
//! thread for the last slot, find none at the claim and get the balancer's
//! 503 rather than wait.
//!
//! ```
//! use std::time::Duration;
//!
//! use tower::ServiceBuilder;
//! use tower_lb::balance::{QueueLayer, RoundRobin};
//! use tower_lb::{BackendSet, Forward, LoadBalanceLayer};
//!
//! let set = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002".parse()?]);
//! // 64 requests in flight per backend (per unit of weight), then up to 256
//! // wait for at most a second.
//! let balance = LoadBalanceLayer::new(set, RoundRobin::new()).max_in_flight(64);
//! let queue = QueueLayer::new(&balance, 256, Duration::from_secs(1));
//! let stats = queue.clone();
//! let service = ServiceBuilder::new().layer(queue).layer(balance).service(Forward::new());
//! assert_eq!(stats.stats().pending, 0);
//! # drop(service);
//! # Ok::<(), tower_lb::ConfigError>(())
//! ```

mod service;
mod waiters;

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tower_layer::Layer;

use super::{Balancer, LoadBalanceLayer, Strategy};
use crate::backend::SnapshotListener;
pub use service::{Queue, ResponseFuture};
pub use waiters::QueueStats;
use waiters::{Shared, Wakeup};

/// Lets requests wait, in order and for a bounded time, when every backend
/// is at its limit; see the [module docs](self).
#[must_use]
pub struct QueueLayer<St: Strategy> {
    balancer: Arc<Balancer<St>>,
    shared: Arc<Shared>,
    /// Keeps the watchers registered while a layer or service lives.
    _wakeup: Arc<Wakeup>,
    timeout: Duration,
    retry_after: u32,
}

impl<St: Strategy> QueueLayer<St> {
    /// A queue of at most `max_pending` requests, each waiting at most
    /// `timeout`, in front of `balance`'s balancer.
    pub fn new(balance: &LoadBalanceLayer<St>, max_pending: usize, timeout: Duration) -> Self {
        Self::for_balancer(balance.balancer(), max_pending, timeout)
    }

    /// The same in front of a balancer.
    pub fn for_balancer(
        balancer: &Arc<Balancer<St>>,
        max_pending: usize,
        timeout: Duration,
    ) -> Self {
        let shared = Arc::new(Shared::new(max_pending));
        let wakeup = Arc::new(Wakeup::new(Arc::clone(&shared)));
        let listener: Weak<dyn SnapshotListener> = Arc::downgrade(&wakeup) as _;
        balancer.backend_set().listen(listener);
        Self {
            balancer: Arc::clone(balancer),
            shared,
            _wakeup: wakeup,
            timeout,
            // The wait a client just had, rounded up: the queue's own
            // measure of how soon a slot may free.
            retry_after: retry_after_for(timeout),
        }
    }

    /// The seconds a refused request is told to wait (`Retry-After`); by
    /// default the queue timeout rounded up, at least 1.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = seconds.max(1);
        self
    }

    /// The queue's counters now.
    pub fn stats(&self) -> QueueStats {
        self.shared.stats()
    }
}

fn retry_after_for(timeout: Duration) -> u32 {
    let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    u32::try_from(seconds).unwrap_or(u32::MAX).max(1)
}

impl<St: Strategy> Clone for QueueLayer<St> {
    fn clone(&self) -> Self {
        Self {
            balancer: Arc::clone(&self.balancer),
            shared: Arc::clone(&self.shared),
            _wakeup: Arc::clone(&self._wakeup),
            timeout: self.timeout,
            retry_after: self.retry_after,
        }
    }
}

impl<St: Strategy> fmt::Debug for QueueLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueLayer")
            .field("max_pending", &self.shared.max_pending)
            .field("timeout", &self.timeout)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl<S, St: Strategy> Layer<S> for QueueLayer<St> {
    type Service = Queue<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Queue::new(inner, self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_the_timeout_up() {
        assert_eq!(retry_after_for(Duration::from_millis(200)), 1);
        assert_eq!(retry_after_for(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_for(Duration::from_secs(3)), 3);
    }
}
