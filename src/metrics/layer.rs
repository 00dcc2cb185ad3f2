//! The metrics layer.

use std::fmt;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tower_layer::Layer;

use super::Metrics;
use super::recorder::Recorder;
use crate::backend::BackendSet;
use crate::replica::Replica;

/// Counts requests and times responses, per backend and in all, into a
/// Prometheus registry.
///
/// Put it outermost (above [`FailoverLayer`](crate::failover::FailoverLayer)):
/// it reads what the layers below put on the response, the
/// [`Target`](crate::Target) that answered, the
/// [`Attempts`](crate::failover::Attempts) a request took and the
/// [`Error`](crate::Error) of a local answer. Request duration runs until the
/// response body ends.
///
/// Exported (prometheus-client names; counters end in `_total`):
///
/// | metric | what |
/// |---|---|
/// | `lb_backend_requests_total{backend, code}` | responses per backend and status class (`2xx`, `5xx`, ...) |
/// | `lb_backend_request_duration_seconds{backend}` | histogram per backend |
/// | `lb_request_duration_seconds` | histogram of all requests, retries included |
/// | `lb_backend_in_flight{backend}` | requests in flight (read at scrape time) |
/// | `lb_backend_healthy{backend}` | 1 if eligible, else 0 |
/// | `lb_backend_ejections_total{backend}` | outlier ejections |
/// | `lb_backend_weight{backend}`, `lb_backend_share{backend}` | weight, and share during slow start / ramp-down |
/// | `lb_retries_total`, `lb_retry_budget_exhausted_total`, `lb_no_backend_total` | failover and exhaustion |
///
/// Per-backend handles are looked up when the backend set changes, so a
/// request formats no label and takes no lock: a few atomic additions.
///
/// ```
/// use prometheus_client::registry::Registry;
/// use tower::ServiceBuilder;
/// use tower_lb::metrics::MetricsLayer;
/// use tower_lb::{BackendSet, Forward, LoadBalanceLayer, balance::RoundRobin};
///
/// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?]);
/// let mut registry = Registry::default();
/// let service = ServiceBuilder::new()
///     .layer(MetricsLayer::new(&set, &mut registry))
///     .layer(LoadBalanceLayer::new(set, RoundRobin::new()))
///     .service(Forward::new());
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct MetricsLayer {
    recorder: Arc<Recorder>,
}

impl MetricsLayer {
    /// Registers the metrics of `set` (the set itself or a reference to
    /// it) in `registry`.
    pub fn new(set: impl AsRef<BackendSet>, registry: &mut Registry) -> Self {
        Self {
            recorder: Recorder::register(set.as_ref(), registry),
        }
    }

    /// What the layer records into, for the admin service's history.
    pub(crate) fn recorder(&self) -> Arc<Recorder> {
        Arc::clone(&self.recorder)
    }
}

impl fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsLayer")
            .field("recorder", &self.recorder)
            .finish()
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics::new(inner, Replica::new(Arc::clone(&self.recorder)))
    }
}
