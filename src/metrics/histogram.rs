//! A latency histogram that records without a lock.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::thread_slot::{SLOTS, thread_slot};

/// Upper bounds of the buckets, in seconds: from 1 ms to 10 s, the range
/// of HTTP latencies an autoscaler or an SLO looks at.
pub(crate) const LATENCY_BUCKETS: [f64; 14] = [
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    f64::INFINITY,
];

/// A Prometheus histogram of durations whose `observe` is a few relaxed
/// atomic additions.
///
/// prometheus-client's own `Histogram` takes a mutex per observation; on
/// a balancer's request path that would be a lock every request takes. This
/// one plugs into the same registry and encoder.
///
/// One that every request on every thread records into (the stack's total
/// latency) is [`sharded`](Self::sharded): one padded set of counters per
/// thread slot, added up when read, so that threads do not take one line
/// from each other on every request. One per backend has a single set
/// (eight would be a kilobyte per backend, and threads spread over the
/// backends anyway).
#[derive(Clone)]
pub(crate) struct LatencyHistogram {
    shards: Arc<[Shard]>,
}

/// One set of counters: 15 atomics, one 128-byte pair of cache lines.
///
/// No count of its own: the count is the buckets' sum (as the encoder
/// already took it), and an observation is then two atomic additions, not
/// three; each is a locked instruction, about 6 ns here whatever else the
/// request does.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    /// Per bucket, not cumulative.
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    sum_nanos: AtomicU64,
}

impl Default for LatencyHistogram {
    /// One set of counters.
    fn default() -> Self {
        Self::with_shards(1)
    }
}

impl LatencyHistogram {
    /// One set of counters per thread slot.
    pub(crate) fn sharded() -> Self {
        Self::with_shards(SLOTS)
    }

    fn with_shards(n: usize) -> Self {
        Self {
            shards: (0..n).map(|_| Shard::default()).collect(),
        }
    }

    /// This thread's shard.
    #[inline]
    fn shard(&self) -> &Shard {
        match &*self.shards {
            [only] => only,
            shards => &shards[thread_slot() % shards.len()],
        }
    }

    /// Every shard's `field`, added up.
    fn total(&self, field: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|s| field(s).load(Relaxed)).sum()
    }

    /// Records one duration.
    #[inline]
    pub(crate) fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS.len() - 1);
        let shard = self.shard();
        shard.buckets[bucket].fetch_add(1, Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        shard.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Observations so far per bucket (not cumulative), bounds as in
    /// [`LATENCY_BUCKETS`].
    pub(crate) fn buckets(&self) -> [u64; LATENCY_BUCKETS.len()] {
        std::array::from_fn(|i| self.total(|s| &s.buckets[i]))
    }

    /// Observations so far: the buckets' sum.
    pub(crate) fn count(&self) -> u64 {
        self.buckets().iter().sum()
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        // The encoder wants per-bucket counts and adds them up itself.
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .zip(self.buckets())
            .map(|(&bound, count)| (bound, count))
            .collect();
        // The count is the buckets' sum, so the exposition is consistent even
        // when an observation lands between the loads.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.total(|s| &s.sum_nanos) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets() {
        let histogram = LatencyHistogram::default();
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(30));
        histogram.observe(Duration::from_secs(60));
        let mut registry = Registry::default();
        registry.register("latency_seconds", "test", histogram.clone());
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("latency_seconds_bucket{le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("latency_seconds_bucket{le=\"0.05\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("latency_seconds_bucket{le=\"10.0\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("latency_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("latency_seconds_count 3\n"), "{text}");
        assert_eq!(histogram.count(), 3);
    }

    /// Observations made on several threads (each writing its own shard)
    /// are all read back: buckets, count and sum.
    #[test]
    fn a_sharded_histogram_adds_its_threads_up() {
        let histogram = LatencyHistogram::sharded();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        histogram.observe(Duration::from_millis(2));
                    }
                });
            }
        });
        histogram.observe(Duration::from_secs(20));
        assert_eq!(histogram.count(), 401);
        let buckets = histogram.buckets();
        assert_eq!((buckets[1], buckets[13]), (400, 1));
        let mut registry = Registry::default();
        registry.register("latency_seconds", "test", histogram.clone());
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("latency_seconds_sum 20.8\n"), "{text}");
        assert!(text.contains("latency_seconds_count 401\n"), "{text}");
    }
}
