//! The traffic controls' gauges and counters (the request queue, sticky
//! cookies, hedging), read from their counters when Prometheus scrapes.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::balance::{QueueLayer, QueueStats, StickyCookieLayer, StickyStats, Strategy};
use crate::hedge::{HedgeLayer, HedgeStats};

impl<St: Strategy> QueueLayer<St> {
    /// Registers the queue's series in `registry`, read from its counters
    /// at scrape time: `lb_queue_pending` (requests waiting now),
    /// `lb_queue_requests_total` (requests that waited),
    /// `lb_queue_rejected_total` (503s for a full queue),
    /// `lb_queue_timeouts_total` (503s for a wait that ran out),
    /// `lb_queue_wait_seconds_total` (time served requests waited; over
    /// `lb_queue_requests_total`, the mean wait) and
    /// `lb_queue_wait_seconds_max` (the longest wait).
    ///
    /// ```
    /// use std::time::Duration;
    /// use prometheus_client::registry::Registry;
    /// use tower_lb::balance::{QueueLayer, RoundRobin};
    /// use tower_lb::{BackendSet, LoadBalanceLayer};
    ///
    /// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?]);
    /// let balance = LoadBalanceLayer::new(set, RoundRobin::new()).max_in_flight(10);
    /// let queue = QueueLayer::new(&balance, 100, Duration::from_secs(1));
    /// let mut registry = Registry::default();
    /// queue.register_metrics(&mut registry);
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry)?;
    /// assert!(text.contains("lb_queue_pending 0"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn register_metrics(&self, registry: &mut Registry) {
        let layer = self.clone();
        register(registry, move || layer.stats(), &QUEUE_SERIES);
    }
}

impl StickyCookieLayer {
    /// Registers the sticky cookies' counters in `registry`:
    /// `lb_sticky_issued_total` (cookies set on a first visit) and
    /// `lb_sticky_reissued_total` (cookies set anew: the client's backend
    /// was gone or unavailable, or its cookie forged, altered or stale).
    ///
    /// ```
    /// use prometheus_client::registry::Registry;
    /// use tower_lb::balance::{StickyCookie, StickyCookieLayer};
    /// use tower_lb::BackendSet;
    ///
    /// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?]);
    /// let layer = StickyCookieLayer::new(&set, StickyCookie::new("srv")?);
    /// let mut registry = Registry::default();
    /// layer.register_metrics(&mut registry);
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry)?;
    /// assert!(text.contains("lb_sticky_issued_total 0"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn register_metrics(&self, registry: &mut Registry) {
        let layer = self.clone();
        register(registry, move || layer.stats(), &STICKY_SERIES);
    }
}

impl HedgeLayer {
    /// Registers the hedging counters in `registry`: `lb_hedges_total`
    /// (hedges sent), `lb_hedges_won_total` (hedges whose answer the client
    /// got) and `lb_hedge_budget_exhausted_total` (hedges due but not sent
    /// for want of budget).
    ///
    /// ```
    /// use std::time::Duration;
    /// use prometheus_client::registry::Registry;
    /// use tower_lb::hedge::HedgeLayer;
    ///
    /// let hedge = HedgeLayer::new(Duration::from_millis(50))?;
    /// let mut registry = Registry::default();
    /// hedge.register_metrics(&mut registry);
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry)?;
    /// assert!(text.contains("lb_hedges_total 0"));
    /// assert!(text.contains("lb_hedges_won_total 0"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn register_metrics(&self, registry: &mut Registry) {
        let layer = self.clone();
        register(registry, move || layer.stats(), &HEDGE_SERIES);
    }
}

const HEDGE_SERIES: [Series<HedgeStats>; 3] = [
    (
        "lb_hedges",
        "Hedges sent: second attempts on another backend for slow requests",
        MetricType::Counter,
        |s| Value::Counter(s.sent_total),
    ),
    (
        "lb_hedges_won",
        "Hedges whose answer was the one the client got",
        MetricType::Counter,
        |s| Value::Counter(s.won_total),
    ),
    (
        "lb_hedge_budget_exhausted",
        "Hedges due but not sent because the retry budget was spent",
        MetricType::Counter,
        |s| Value::Counter(s.budget_exhausted_total),
    ),
];

/// Registers `series`, read from one `stats()` value per scrape.
fn register<T: 'static>(
    registry: &mut Registry,
    stats: impl Fn() -> T + Send + Sync + 'static,
    series: &'static [Series<T>],
) {
    registry.register_collector(Box::new(StatsCollector {
        stats: Box::new(stats),
        series,
    }));
}

/// Series read from one stats value per scrape.
struct StatsCollector<T: 'static> {
    stats: Box<dyn Fn() -> T + Send + Sync>,
    series: &'static [Series<T>],
}

impl<T> fmt::Debug for StatsCollector<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsCollector").finish_non_exhaustive()
    }
}

enum Value {
    Gauge(f64),
    Counter(u64),
    Seconds(f64),
}

type Series<T> = (&'static str, &'static str, MetricType, fn(&T) -> Value);

const STICKY_SERIES: [Series<StickyStats>; 2] = [
    (
        "lb_sticky_issued",
        "Sticky cookies set on a first visit",
        MetricType::Counter,
        |s| Value::Counter(s.issued_total),
    ),
    (
        "lb_sticky_reissued",
        "Sticky cookies set anew (backend gone or unavailable, cookie invalid)",
        MetricType::Counter,
        |s| Value::Counter(s.reissued_total),
    ),
];

const QUEUE_SERIES: [Series<QueueStats>; 6] = [
    (
        "lb_queue_pending",
        "Requests waiting for a backend slot now",
        MetricType::Gauge,
        |s| Value::Gauge(s.pending as f64),
    ),
    (
        "lb_queue_requests",
        "Requests that waited for a backend slot",
        MetricType::Counter,
        |s| Value::Counter(s.queued_total),
    ),
    (
        "lb_queue_rejected",
        "Requests answered 503 because the queue was full",
        MetricType::Counter,
        |s| Value::Counter(s.rejected_total),
    ),
    (
        "lb_queue_timeouts",
        "Requests answered 503 because their wait ran out",
        MetricType::Counter,
        |s| Value::Counter(s.timed_out_total),
    ),
    (
        "lb_queue_wait_seconds",
        "Time served requests waited in the queue",
        MetricType::Counter,
        |s| Value::Seconds(s.wait_seconds_total),
    ),
    (
        "lb_queue_wait_seconds_max",
        "The longest time a served request waited",
        MetricType::Gauge,
        |s| Value::Gauge(s.longest_wait_seconds),
    ),
];

impl<T: 'static> Collector for StatsCollector<T> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = (self.stats)();
        for &(name, help, kind, read) in self.series {
            let family = encoder.encode_descriptor(name, help, None, kind)?;
            match read(&stats) {
                Value::Gauge(value) => ConstGauge::new(value).encode(family)?,
                Value::Counter(value) => ConstCounter::new(value).encode(family)?,
                Value::Seconds(value) => ConstCounter::new(value).encode(family)?,
            }
        }
        Ok(())
    }
}
