//! The status model behind `/status` and the status page.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use crate::backend::{Backend, BackendId, BackendSet, Verdict};
use crate::clock::{self, Nanos};

/// One backend as the status views show it.
#[derive(Debug, Serialize)]
pub(crate) struct BackendStatus {
    pub(crate) url: String,
    /// Spoken to over TLS (an `https://` backend).
    pub(crate) tls: bool,
    /// The discovery sources that list it (`dns:web:8000`, `etcd:...`,
    /// `static`), first-started first; empty when it was written to the
    /// set directly, or has left it and drains.
    pub(crate) sources: Vec<String>,
    /// Eligible for new requests now.
    pub(crate) healthy: bool,
    pub(crate) verdict: &'static str,
    pub(crate) ejected: bool,
    pub(crate) ejection_remaining_ms: Option<u128>,
    pub(crate) consecutive_failures: u32,
    pub(crate) ejections: u64,
    pub(crate) draining: bool,
    pub(crate) weight: u32,
    /// Weight × share: what the strategies use during slow start or ramp-down.
    pub(crate) effective_weight: f64,
    pub(crate) share: f64,
    pub(crate) in_flight: u32,
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    /// This backend's part of the requests since the last sample (a few
    /// seconds), `0.0..=1.0`.
    pub(crate) recent_traffic: f64,
    pub(crate) latency_ms: Option<f64>,
    pub(crate) last_probe_error: Option<String>,
}

/// The whole set.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub(crate) version: u64,
    pub(crate) backends: Vec<BackendStatus>,
}

/// How often the "recent traffic" baseline moves.
const SAMPLE_EVERY: Nanos = 5_000_000_000;

/// Request counts at a past instant, the baseline of "recent traffic".
#[derive(Debug, Default)]
pub(crate) struct TrafficSample {
    inner: Mutex<(Nanos, HashMap<BackendId, u64>)>,
}

impl TrafficSample {
    /// Requests per backend since the baseline; moves the baseline when it
    /// is older than a few seconds.
    fn recent(&self, backends: &[&Backend]) -> HashMap<BackendId, u64> {
        let now = clock::now();
        let current: HashMap<BackendId, u64> = backends
            .iter()
            .map(|b| (b.id(), b.state().requests()))
            .collect();
        let mut sample = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let deltas = current
            .iter()
            .map(|(id, &count)| (*id, count.saturating_sub(*sample.1.get(id).unwrap_or(&0))))
            .collect();
        if sample.0 == 0 || now.saturating_sub(sample.0) >= SAMPLE_EVERY {
            *sample = (now, current);
        }
        deltas
    }
}

impl Status {
    pub(crate) fn of(set: &BackendSet, sample: &TrafficSample) -> Self {
        let snapshot = set.snapshot();
        let draining = set.draining();
        let backends: Vec<&Backend> = snapshot.backends().iter().chain(&draining).collect();
        let recent = sample.recent(&backends);
        let total: u64 = recent.values().sum();
        let sources = set.sources_of(backends.iter().map(|b| b.address()));
        Status {
            version: snapshot.version(),
            backends: backends
                .iter()
                .zip(sources)
                .map(|(b, sources)| {
                    let part = recent.get(&b.id()).copied().unwrap_or(0);
                    let recent_traffic = if total == 0 {
                        0.0
                    } else {
                        part as f64 / total as f64
                    };
                    BackendStatus::of(b, recent_traffic, sources)
                })
                .collect(),
        }
    }
}

impl BackendStatus {
    fn of(backend: &Backend, recent_traffic: f64, sources: Vec<std::sync::Arc<str>>) -> Self {
        let state = backend.state();
        let share = state.share();
        let remaining = state.ejection_remaining();
        BackendStatus {
            url: backend.address().to_string(),
            tls: backend.address().scheme() == &http::uri::Scheme::HTTPS,
            sources: sources.iter().map(|s| s.to_string()).collect(),
            healthy: state.is_eligible(),
            verdict: match state.verdict() {
                Verdict::Healthy => "healthy",
                Verdict::Unhealthy => "unhealthy",
                _ => "unknown",
            },
            ejected: remaining.is_some(),
            ejection_remaining_ms: remaining.map(|d| d.as_millis()),
            consecutive_failures: state.consecutive_failures(),
            ejections: state.ejections_total(),
            draining: state.is_removed() || state.is_draining(),
            weight: backend.weight(),
            effective_weight: f64::from(backend.weight()) * share,
            share,
            in_flight: state.in_flight(),
            requests: state.requests(),
            failures: state.failures(),
            recent_traffic,
            latency_ms: state.latency().map(|d| d.as_secs_f64() * 1e3),
            last_probe_error: state.last_probe_error().map(|e| e.to_string()),
        }
    }
}
