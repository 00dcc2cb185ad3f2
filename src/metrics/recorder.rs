//! The metric families and the per-backend handles the request path uses.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rustc_hash::FxHashMap;

use super::collector::BackendCollector;
use super::histogram::LatencyHistogram;
use crate::backend::{Backend, BackendId, BackendSet, Snapshot, SnapshotListener};

/// Status classes, the `code` label: bounded cardinality, what dashboards
/// and autoscalers group by anyway.
const CLASSES: [&str; 6] = ["other", "1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    backend: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

type IdMap<V> = FxHashMap<BackendId, V>;

/// One backend's handles, looked up once per backend when the set changes
/// (label strings are built then, never per request).
#[derive(Debug)]
pub(crate) struct BackendMetrics {
    by_class: [Counter; CLASSES.len()],
    latency: LatencyHistogram,
    /// Whose they are: a backend that leaves the set keeps its series
    /// until it has drained, then they are dropped from the families.
    backend: Backend,
}

impl BackendMetrics {
    #[inline]
    pub(crate) fn count(&self, status: u16) {
        let class = usize::from(status / 100);
        self.by_class[if class < CLASSES.len() { class } else { 0 }].inc();
    }

    #[inline]
    pub(crate) fn observe(&self, duration: Duration) {
        self.latency.observe(duration);
    }

    /// Responses counted so far, and how many of them were 5xx (the admin
    /// service's history reads these every few seconds).
    pub(crate) fn responses(&self) -> (u64, u64) {
        let total = self.by_class.iter().map(Counter::get).sum();
        (total, self.by_class[5].get())
    }

    /// The latency histogram, for the admin service's quantiles.
    pub(crate) fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }
}

/// Everything the metrics layer records into.
pub(crate) struct Recorder {
    requests: Family<RequestLabels, Counter>,
    backend_latency: Family<BackendLabel, LatencyHistogram>,
    pub(crate) latency: LatencyHistogram,
    pub(crate) retries: Counter,
    pub(crate) budget_exhausted: Counter,
    pub(crate) no_backend: Counter,
    backends: ArcSwap<IdMap<Arc<BackendMetrics>>>,
}

impl Recorder {
    /// Registers the metrics of `set` in `registry` and follows the set.
    pub(crate) fn register(set: &BackendSet, registry: &mut Registry) -> Arc<Self> {
        let recorder = Arc::new(Self {
            requests: Family::default(),
            backend_latency: Family::default(),
            latency: LatencyHistogram::sharded(),
            retries: Counter::default(),
            budget_exhausted: Counter::default(),
            no_backend: Counter::default(),
            backends: ArcSwap::default(),
        });
        registry.register(
            "lb_backend_requests",
            "Responses from each backend, by status class",
            recorder.requests.clone(),
        );
        registry.register(
            "lb_backend_request_duration_seconds",
            "Time from request to the end of the response body, per backend",
            recorder.backend_latency.clone(),
        );
        registry.register(
            "lb_request_duration_seconds",
            "Time from request to the end of the response body, all tries included",
            recorder.latency.clone(),
        );
        registry.register(
            "lb_retries",
            "Retries sent to another backend",
            recorder.retries.clone(),
        );
        registry.register(
            "lb_retry_budget_exhausted",
            "Retries not sent because the retry budget was spent",
            recorder.budget_exhausted.clone(),
        );
        registry.register(
            "lb_no_backend",
            "Requests answered 503 because no backend was eligible",
            recorder.no_backend.clone(),
        );
        registry.register_collector(Box::new(BackendCollector::new(set.clone())));
        let weak: std::sync::Weak<dyn SnapshotListener> = Arc::downgrade(&recorder) as _;
        set.listen(weak);
        recorder
    }

    /// The handles of `backend`: lock-free for members and for removed
    /// backends still draining. A backend the set never published (or one
    /// already drained and forgotten) gets handles of its own that no
    /// family holds: counted nowhere, but nothing per backend is kept
    /// past its drain.
    #[inline]
    pub(crate) fn backend(&self, backend: &Backend) -> Arc<BackendMetrics> {
        match self.backends.load().get(&backend.id()) {
            Some(metrics) => Arc::clone(metrics),
            None => Arc::new(BackendMetrics {
                by_class: Default::default(),
                latency: LatencyHistogram::default(),
                backend: backend.clone(),
            }),
        }
    }

    /// The handles of backend `id`, if it has some (off the request path:
    /// the admin service's history).
    pub(crate) fn member(&self, id: BackendId) -> Option<Arc<BackendMetrics>> {
        self.backends.load().get(&id).cloned()
    }

    /// Drops a drained backend's series from the families.
    fn unregister(&self, backend: &Backend) {
        let name = backend.address().as_str().to_owned();
        for code in CLASSES {
            self.requests.remove(&RequestLabels {
                backend: name.clone(),
                code,
            });
        }
        self.backend_latency.remove(&BackendLabel { backend: name });
    }

    /// How many backends have handles (members and those still draining).
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.backends.load().len()
    }

    fn handles(&self, backend: &Backend) -> BackendMetrics {
        let name = backend.address().as_str().to_owned();
        let by_class = CLASSES.map(|code| {
            self.requests
                .get_or_create(&RequestLabels {
                    backend: name.clone(),
                    code,
                })
                .clone()
        });
        let latency = self
            .backend_latency
            .get_or_create(&BackendLabel { backend: name })
            .clone();
        BackendMetrics {
            by_class,
            latency,
            backend: backend.clone(),
        }
    }
}

impl SnapshotListener for Recorder {
    /// Members keep (or get) their handles; a backend that left keeps them
    /// while requests to it are in flight, and once it has drained its
    /// series leave the families, so churn does not grow the registry.
    fn published(&self, snapshot: &Arc<Snapshot>) {
        let current = self.backends.load();
        let mut next: IdMap<Arc<BackendMetrics>> = snapshot
            .backends()
            .iter()
            .map(|backend| {
                let metrics = current
                    .get(&backend.id())
                    .cloned()
                    .unwrap_or_else(|| Arc::new(self.handles(backend)));
                (backend.id(), metrics)
            })
            .collect();
        let mut drained = Vec::new();
        for (id, metrics) in current.iter() {
            if next.contains_key(id) {
                continue;
            }
            if metrics.backend.state().in_flight() > 0 {
                next.insert(*id, Arc::clone(metrics));
            } else {
                drained.push(metrics.backend.clone());
            }
        }
        self.backends.store(Arc::new(next));
        for backend in drained {
            // The address may be back as a new member: its series stay.
            if snapshot.get(backend.address()).is_none() {
                self.unregister(&backend);
            }
        }
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("backends", &self.backends.load().len())
            .field("requests", &self.latency.count())
            .finish_non_exhaustive()
    }
}
