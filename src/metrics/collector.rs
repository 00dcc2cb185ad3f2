//! Gauges read from the backends' state when Prometheus scrapes.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::backend::{Backend, BackendSet};

/// Reads in-flight counts, health, ejections, weights and shares straight
/// from each backend's atomics at scrape time: nothing to update per request.
pub(crate) struct BackendCollector {
    set: BackendSet,
}

impl BackendCollector {
    pub(crate) fn new(set: BackendSet) -> Self {
        Self { set }
    }
}

impl fmt::Debug for BackendCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendCollector").finish_non_exhaustive()
    }
}

type Read = fn(&Backend) -> Value;

enum Value {
    Gauge(f64),
    Counter(u64),
}

const SERIES: [(&str, &str, MetricType, Read); 5] = [
    (
        "lb_backend_in_flight",
        "Requests in flight to each backend (draining ones included)",
        MetricType::Gauge,
        |b| Value::Gauge(f64::from(b.state().in_flight())),
    ),
    (
        "lb_backend_healthy",
        "1 when the backend is eligible for new requests, else 0",
        MetricType::Gauge,
        |b| Value::Gauge(if b.state().is_eligible() { 1.0 } else { 0.0 }),
    ),
    (
        "lb_backend_ejections",
        "Times outlier detection ejected the backend",
        MetricType::Counter,
        |b| Value::Counter(b.state().ejections_total()),
    ),
    (
        "lb_backend_weight",
        "Configured weight",
        MetricType::Gauge,
        |b| Value::Gauge(f64::from(b.weight())),
    ),
    (
        "lb_backend_share",
        "Share of its weight the backend gets now (below 1 in slow start or ramp-down)",
        MetricType::Gauge,
        |b| Value::Gauge(b.state().share()),
    ),
];

impl Collector for BackendCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let snapshot = self.set.snapshot();
        let draining = self.set.draining();
        let backends: Vec<&Backend> = snapshot.backends().iter().chain(&draining).collect();
        for (name, help, kind, read) in SERIES {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for backend in &backends {
                let labels = [("backend", backend.address().as_str())];
                let series = family.encode_family(&labels)?;
                match read(backend) {
                    Value::Gauge(value) => ConstGauge::new(value).encode(series)?,
                    Value::Counter(value) => ConstCounter::new(value).encode(series)?,
                }
            }
        }
        Ok(())
    }
}
