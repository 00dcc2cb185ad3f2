//! The failover layer and its settings.

use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::Budget;
use tower_layer::Layer;

use super::policy::Policy;
use super::{Failover, RetryBudget};
use crate::ConfigError;

/// Retries a failed request on a *different* backend: wraps
/// [`LoadBalance`](crate::LoadBalance), which skips the backends a request
/// already [`Tried`](crate::Tried).
///
/// What is retried, by default:
///
/// - a connect failure (the backend never got the request), whatever the
///   method;
/// - a timeout, a broken exchange, or status 502, 503 or 504, only for
///   idempotent requests: GET, HEAD, OPTIONS, PUT, DELETE, TRACE, or any
///   request with an `Idempotency-Key` header. A POST that reached a
///   backend is never sent twice unless you say so
///   ([`retry_non_idempotent`](Self::retry_non_idempotent)).
///
/// And within what bounds:
///
/// - at most [`max_retries`](Self::max_retries) retries (default 2: three
///   backends tried);
/// - a [retry budget](RetryBudget) (default 20 % of requests plus 10 per
///   second over 10 s), so retries never multiply load during an outage;
/// - the request body is kept for replay up to
///   [`replay_limit`](Self::replay_limit) (default 64 KiB); a larger body
///   streams through, and is not retried once it began streaming;
/// - an optional [per-try timeout](Self::per_try_timeout), an optional
///   [overall deadline](Self::deadline) (504 when it passes), and an
///   optional [back-off](Self::backoff) with full jitter between tries
///   (default none: the next try goes to another backend, so waiting buys
///   nothing).
///
/// A retry needs the request's head. Rather than copy every head in
/// advance for the few requests that are retried, the first try is marked
/// [`ReturnHead`](crate::extensions::ReturnHead) and [`Forward`](crate::Forward)
/// hands the head back on an answer that may be retried. Failover learns
/// this per service: until a head has come back it copies heads as before,
/// so an innermost service of your own that never hands heads back (see
/// [`ReturnHead::answer`](crate::extensions::ReturnHead::answer)) costs only
/// the copies; one that stops handing them back costs one request its
/// retry, a warning says so once, and failover copies from then on.
///
/// When no backend is left to try, the client gets the last failure as it
/// was. A response that took more than the first try (or whose retry the
/// budget withheld) carries an [`Attempts`](super::Attempts) extension;
/// [`Attempts::of`](super::Attempts::of) reads it, a first try included.
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_lb::failover::FailoverLayer;
/// use tower_lb::{BackendSet, Forward, LoadBalanceLayer, balance::RoundRobin};
///
/// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002".parse()?]);
/// let service = ServiceBuilder::new()
///     .layer(FailoverLayer::new().max_retries(2).deadline(Duration::from_secs(10)))
///     .layer(LoadBalanceLayer::new(set, RoundRobin::new()))
///     .service(Forward::new());
/// # fn is_service<S: tower::Service<http::Request<axum::body::Body>>>(_: &S) {}
/// # is_service(&service);
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct FailoverLayer {
    pub(crate) settings: Arc<Settings>,
}

/// Everything a [`Failover`] service needs, shared by its clones.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) policy: Policy,
    pub(crate) max_retries: u32,
    pub(crate) replay_limit: usize,
    pub(crate) budget: Arc<dyn SharedBudget>,
    pub(crate) per_try_timeout: Option<Duration>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) backoff: Option<(Duration, Duration)>,
}

/// A budget that can be shared between threads.
pub(crate) trait SharedBudget: Budget + Send + Sync + std::fmt::Debug {}

impl<T: Budget + Send + Sync + std::fmt::Debug> SharedBudget for T {}

impl Default for FailoverLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl FailoverLayer {
    /// Failover with the defaults above.
    pub fn new() -> Self {
        Self {
            settings: Arc::new(Settings {
                policy: Policy {
                    statuses: Arc::from([502, 503, 504]),
                    non_idempotent: false,
                },
                max_retries: 2,
                replay_limit: 64 * 1024,
                budget: Arc::new(RetryBudget::default()),
                per_try_timeout: None,
                deadline: None,
                backoff: None,
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        change(Arc::make_mut(&mut self.settings));
        self
    }

    /// Retries after the first try; 0 turns failover off.
    pub fn max_retries(self, retries: u32) -> Self {
        self.with(|s| s.max_retries = retries)
    }

    /// Statuses from a backend that are retried (idempotent requests only).
    pub fn retry_statuses(self, statuses: impl IntoIterator<Item = u16>) -> Self {
        let statuses: Arc<[u16]> = statuses.into_iter().collect();
        self.with(|s| s.policy.statuses = statuses)
    }

    /// Also retry timeouts, broken exchanges and retryable statuses of
    /// requests that are not idempotent. Only for backends that deduplicate.
    pub fn retry_non_idempotent(self, on: bool) -> Self {
        self.with(|s| s.policy.non_idempotent = on)
    }

    /// How much of a request body is kept for replay.
    pub fn replay_limit(self, bytes: usize) -> Self {
        self.with(|s| s.replay_limit = bytes)
    }

    /// The retry budget (any tower [`Budget`]); clones of the layer share it.
    pub fn budget(self, budget: impl Budget + Send + Sync + std::fmt::Debug + 'static) -> Self {
        let budget: Arc<dyn SharedBudget> = Arc::new(budget);
        self.with(|s| s.budget = budget)
    }

    /// How long one try may take to answer (504, then a retry where safe).
    /// The tried backend is not known when the balancer's future is
    /// dropped, so prefer [`Forward`](crate::Forward)'s own timeout, whose
    /// 504 names the backend; use this one in front of other services.
    pub fn per_try_timeout(self, timeout: Duration) -> Self {
        self.with(|s| s.per_try_timeout = Some(timeout))
    }

    /// How long all tries together may take: past it, 504.
    pub fn deadline(self, deadline: Duration) -> Self {
        self.with(|s| s.deadline = Some(deadline))
    }

    /// Waits before retry n a random time up to `base` × 2^(n-1), at most
    /// `max` (full jitter).
    ///
    /// # Errors
    ///
    /// When `base` is zero or above `max`.
    pub fn backoff(self, base: Duration, max: Duration) -> Result<Self, ConfigError> {
        if base.is_zero() || base > max {
            return Err(ConfigError::new(
                "failover backoff: base must be above zero and at most max",
            ));
        }
        Ok(self.with(|s| s.backoff = Some((base, max))))
    }
}

impl<S> Layer<S> for FailoverLayer {
    type Service = Failover<S>;

    fn layer(&self, inner: S) -> Failover<S> {
        Failover::new(inner, Arc::clone(&self.settings))
    }
}
