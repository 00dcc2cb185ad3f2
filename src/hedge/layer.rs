//! The hedging layer, its settings and its counters.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tower::retry::budget::Budget;
use tower_layer::Layer;

use super::{Hedge, RecordTargetLayer};
use crate::ConfigError;
use crate::failover::{FailoverLayer, Policy, RetryBudget, SharedBudget};

/// Sends a second attempt of a slow request to another backend; see the
/// [module docs](super) for what is hedged, where the layer goes and what
/// it costs.
///
/// Clones share the settings, the budget and the counters.
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_lb::failover::FailoverLayer;
/// use tower_lb::hedge::HedgeLayer;
/// use tower_lb::{BackendSet, Forward, LoadBalanceLayer, balance::RoundRobin};
///
/// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002".parse()?]);
/// let failover = FailoverLayer::new();
/// // Hedges spend from the failover's retry budget.
/// let hedge = HedgeLayer::new(Duration::from_millis(50))?.with_failover(&failover);
/// let service = ServiceBuilder::new()
///     .layer(failover)
///     .layer(hedge.clone())
///     .layer(LoadBalanceLayer::new(set, RoundRobin::new()))
///     .layer(hedge.recorder())
///     .service(Forward::new());
/// # fn is_service<S: tower::Service<http::Request<axum::body::Body>>>(_: &S) {}
/// # is_service(&service);
/// assert_eq!(hedge.stats().sent_total, 0);
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct HedgeLayer {
    pub(super) settings: Arc<Settings>,
    pub(super) counters: Arc<Counters>,
}

/// What a [`Hedge`] service needs, shared by its clones.
#[derive(Clone, Debug)]
pub(super) struct Settings {
    pub(super) after: Duration,
    pub(super) budget: Arc<dyn SharedBudget>,
    /// Whether each request is deposited into the budget here: not when
    /// the budget is a failover layer's, which deposits every request
    /// already (twice would double what hedges and retries may spend).
    pub(super) deposit: bool,
    /// Which answers are failures that do not win the race.
    pub(super) policy: Policy,
}

/// Counted as hedges happen; read by [`HedgeLayer::stats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) sent: AtomicU64,
    pub(super) won: AtomicU64,
    pub(super) budget_exhausted: AtomicU64,
    /// Whether a [`RecordTargetLayer`] was made: without one no hedge is
    /// sent, and the first hedge due says so in the log.
    pub(super) recorder: AtomicBool,
}

/// The hedging counters at one moment: what metrics show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HedgeStats {
    /// Hedges sent (a second attempt on another backend).
    pub sent_total: u64,
    /// Hedges whose answer was the one the client got.
    pub won_total: u64,
    /// Hedges that were due but not sent because the budget was spent.
    pub budget_exhausted_total: u64,
}

impl HedgeLayer {
    /// Hedges a request that has no response headers `after` it was sent,
    /// with a budget of its own ([`RetryBudget::default`]: 20 % of the
    /// requests of the last 10 s plus 10 per second) and the failures of
    /// failover's defaults (connect failures, timeouts, broken exchanges,
    /// 502, 503 and 504) as answers that do not win.
    ///
    /// Choose `after` near the latency percentile past which a request is
    /// an outlier (the p95 of a healthy backend, say): much lower and most
    /// requests are sent twice, up to what the budget allows.
    ///
    /// # Errors
    ///
    /// When `after` is zero (every request would be sent twice at once).
    pub fn new(after: Duration) -> Result<Self, ConfigError> {
        if after.is_zero() {
            return Err(ConfigError::new("hedge after: must be above zero"));
        }
        Ok(Self {
            settings: Arc::new(Settings {
                after,
                budget: Arc::new(RetryBudget::default()),
                deposit: true,
                policy: Policy {
                    statuses: Arc::from([502, 503, 504]),
                    non_idempotent: false,
                },
            }),
            counters: Arc::default(),
        })
    }

    fn with(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        change(Arc::make_mut(&mut self.settings));
        self
    }

    /// Spends from `budget` (any tower [`Budget`]), into which this layer
    /// deposits every request it sees.
    pub fn budget(self, budget: impl Budget + Send + Sync + fmt::Debug + 'static) -> Self {
        let budget: Arc<dyn SharedBudget> = Arc::new(budget);
        self.with(|s| {
            s.budget = budget;
            s.deposit = true;
        })
    }

    /// Spends from `failover`'s retry budget, so that hedges and retries
    /// together stay within it, and takes its retried statuses as the
    /// answers that do not win. `failover` deposits each client request;
    /// this layer then deposits nothing. Put this layer below `failover`.
    pub fn with_failover(self, failover: &FailoverLayer) -> Self {
        let budget = Arc::clone(&failover.settings.budget);
        let statuses = Arc::clone(&failover.settings.policy.statuses);
        self.with(|s| {
            s.budget = budget;
            s.deposit = false;
            s.policy.statuses = statuses;
        })
    }

    /// The layer that tells this one where each first attempt went; put it
    /// below [`LoadBalanceLayer`](crate::LoadBalanceLayer). Without it no
    /// request is hedged (a hedge that might go to the same backend is not
    /// worth its load).
    pub fn recorder(&self) -> RecordTargetLayer {
        self.counters.recorder.store(true, Relaxed);
        RecordTargetLayer::new()
    }

    /// How long a request waits for response headers before it is hedged.
    pub fn after(&self) -> Duration {
        self.settings.after
    }

    /// The counters now.
    pub fn stats(&self) -> HedgeStats {
        HedgeStats {
            sent_total: self.counters.sent.load(Relaxed),
            won_total: self.counters.won.load(Relaxed),
            budget_exhausted_total: self.counters.budget_exhausted.load(Relaxed),
        }
    }
}

impl fmt::Debug for HedgeLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("after", &self.settings.after)
            .field("budget", &self.settings.budget)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<S> Layer<S> for HedgeLayer {
    type Service = Hedge<S>;

    fn layer(&self, inner: S) -> Hedge<S> {
        Hedge::new(inner, self.clone())
    }
}
