//! The status model behind `/status`, the write routes' answers and the
//! status page.
//!
//! `/status` is for scripts, so its shape is a promise: [`SCHEMA`] says
//! which one. Within a schema, fields are only ever added; a field
//! removed, renamed or given another meaning bumps it. The schema is
//! documented on [`AdminService`](super::AdminService).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::history::{History, SLOT, Series};
use super::timeline::{Entry, Timeline};
use crate::backend::{Backend, BackendId, BackendSet, Verdict};
use crate::balance::QueueStats;

/// The version of the `/status` shape.
pub(crate) const SCHEMA: u32 = 1;

/// "Now" for requests per second: the newest 5 slots (10 s).
const NOW: usize = 5;
/// "Recent" for error rates, shares and quantiles: 30 slots (a minute).
const RECENT: usize = 30;

/// Figures over the recent past, from the history rings.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Figures {
    /// Requests per second over the last 10 s.
    pub(crate) requests_per_s: f64,
    /// Failed share of the last minute's responses; `None` without any.
    pub(crate) error_rate: Option<f64>,
    /// Latency of the newest 2 s slot with responses in the last minute,
    /// ms (from the metrics layer's histogram; `None` without one).
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
}

impl Figures {
    fn of(series: Option<&Series>) -> Self {
        let Some(series) = series else {
            return Self::default();
        };
        Self {
            requests_per_s: series.mean_rate(NOW),
            error_rate: series.error_rate(RECENT),
            p50_ms: Series::latest(&series.p50, RECENT),
            p99_ms: Series::latest(&series.p99, RECENT),
        }
    }
}

/// One backend as the views show it.
#[derive(Debug, Serialize)]
pub(crate) struct BackendStatus {
    #[serde(skip)]
    pub(crate) id: BackendId,
    pub(crate) url: String,
    /// One word: `healthy`, `ramping`, `unhealthy`, `ejected`, `draining`
    /// (an operator's drain) or `removed` (left the set, finishing its
    /// requests).
    pub(crate) state: &'static str,
    /// Spoken to over TLS (an `https://` backend).
    pub(crate) tls: bool,
    /// Its priority tier: 0 is the primary tier (the default), 1 and up
    /// are backups that take traffic as the tiers before them lose
    /// healthy members.
    pub(crate) priority: u8,
    /// The discovery sources that list it (`dns:web:8000`, `etcd:...`,
    /// `static`), first-started first; empty when it was written to the
    /// set directly, or has left it and drains.
    pub(crate) sources: Vec<String>,
    /// Eligible for new requests now.
    pub(crate) healthy: bool,
    pub(crate) verdict: &'static str,
    pub(crate) ejected: bool,
    pub(crate) ejection_remaining_ms: Option<u128>,
    /// While the ejection is an overload pause (the backend answered 429,
    /// or 503 with `Retry-After`): how long it still lasts.
    pub(crate) overload_remaining_ms: Option<u128>,
    pub(crate) consecutive_failures: u32,
    pub(crate) ejections: u64,
    /// Drained by an operator, or removed and finishing its requests.
    pub(crate) draining: bool,
    pub(crate) removed: bool,
    pub(crate) weight: u32,
    /// Weight × share: what the strategies use during slow start or ramp-down.
    pub(crate) effective_weight: f64,
    pub(crate) share: f64,
    pub(crate) in_flight: u32,
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    /// Sticky cookies: responses to clients whose cookie named this
    /// backend; cookies naming it set on a first visit; set for clients
    /// that moved here.
    pub(crate) sticky_kept: u64,
    pub(crate) sticky_issued: u64,
    pub(crate) sticky_reissued: u64,
    /// This backend's part of the last minute's requests, `0.0..=1.0`.
    pub(crate) recent_traffic: f64,
    #[serde(flatten)]
    pub(crate) figures: Figures,
    /// The peak-EWMA latency estimate, ms.
    pub(crate) latency_ms: Option<f64>,
    pub(crate) last_probe_error: Option<String>,
}

/// The whole set.
#[derive(Debug, Serialize)]
pub(crate) struct Status<'a> {
    pub(crate) schema: u32,
    /// The set's snapshot version: it moves with every membership or
    /// weight change.
    pub(crate) version: u64,
    pub(crate) generated_at_ms: u64,
    /// The width of a history slot.
    pub(crate) slot_ms: u64,
    /// Whether the write routes are on (a token file was given).
    pub(crate) write_routes: bool,
    pub(crate) total: Figures,
    /// The request queue, when the service was given one.
    pub(crate) queue: Option<QueueStatus>,
    pub(crate) backends: Vec<BackendStatus>,
    /// The newest health events, newest first.
    pub(crate) events: Vec<&'a Entry>,
}

/// The request queue (set-wide: requests wait for any backend).
#[derive(Debug, Serialize)]
pub(crate) struct QueueStatus {
    /// Requests waiting now, and the most that may.
    pub(crate) pending: usize,
    pub(crate) max_pending: usize,
    /// Requests that waited; refused for a full queue; refused when their
    /// wait ran out: since the queue was made.
    pub(crate) waited_total: u64,
    pub(crate) rejected_total: u64,
    pub(crate) timeouts_total: u64,
    /// Time served requests waited, in all and at the longest, ms.
    pub(crate) wait_ms_total: f64,
    pub(crate) longest_wait_ms: f64,
}

impl From<QueueStats> for QueueStatus {
    fn from(stats: QueueStats) -> Self {
        Self {
            pending: stats.pending,
            max_pending: stats.max_pending,
            waited_total: stats.queued_total,
            rejected_total: stats.rejected_total,
            timeouts_total: stats.timed_out_total,
            wait_ms_total: stats.wait_seconds_total * 1e3,
            longest_wait_ms: stats.longest_wait_seconds * 1e3,
        }
    }
}

impl<'a> Status<'a> {
    /// The status of `backends` (members, then the removed ones still
    /// draining) of `set`.
    pub(crate) fn of(
        set: &BackendSet,
        backends: &[Backend],
        history: &History,
        timeline: &'a Timeline,
        write_routes: bool,
        queue: Option<QueueStats>,
    ) -> Self {
        let recent = |b: &Backend| history.of(b.id()).map_or(0.0, |s| s.requests(RECENT));
        let total: f64 = backends.iter().map(recent).sum();
        let sources = set.sources_of(backends.iter().map(Backend::address));
        Status {
            schema: SCHEMA,
            version: set.snapshot().version(),
            generated_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            slot_ms: SLOT.as_millis() as u64,
            write_routes,
            total: Figures::of(Some(history.total())),
            queue: queue.map(QueueStatus::from),
            backends: backends
                .iter()
                .zip(sources)
                .map(|(b, sources)| {
                    let share = if total > 0.0 { recent(b) / total } else { 0.0 };
                    let mut status = BackendStatus::of(b, history, share);
                    status.sources = sources.iter().map(|s| s.to_string()).collect();
                    status
                })
                .collect(),
            events: timeline.newest_first().collect(),
        }
    }
}

impl BackendStatus {
    pub(crate) fn of(backend: &Backend, history: &History, recent_traffic: f64) -> Self {
        let state = backend.state();
        let share = state.share();
        let remaining = state.ejection_remaining();
        let sticky = state.sticky();
        let healthy = state.is_eligible();
        let verdict = match state.verdict() {
            Verdict::Healthy => "healthy",
            Verdict::Unhealthy => "unhealthy",
            _ => "unknown",
        };
        let word = if state.is_removed() {
            "removed"
        } else if state.is_draining() {
            "draining"
        } else if remaining.is_some() {
            "ejected"
        } else if !healthy {
            "unhealthy"
        } else if share < 1.0 {
            "ramping"
        } else {
            "healthy"
        };
        BackendStatus {
            id: backend.id(),
            url: backend.address().to_string(),
            state: word,
            tls: backend.address().scheme() == &http::uri::Scheme::HTTPS,
            priority: backend.priority(),
            sources: Vec::new(),
            healthy,
            verdict,
            ejected: remaining.is_some(),
            ejection_remaining_ms: remaining.map(|d| d.as_millis()),
            overload_remaining_ms: state.overload_remaining().map(|d| d.as_millis()),
            consecutive_failures: state.consecutive_failures(),
            ejections: state.ejections_total(),
            draining: state.is_removed() || state.is_draining(),
            removed: state.is_removed(),
            weight: backend.weight(),
            effective_weight: f64::from(backend.weight()) * share,
            share,
            in_flight: state.in_flight(),
            requests: state.requests(),
            failures: state.failures(),
            sticky_kept: sticky.kept,
            sticky_issued: sticky.issued,
            sticky_reissued: sticky.reissued,
            recent_traffic,
            figures: Figures::of(history.of(backend.id())),
            latency_ms: state.latency().map(|d| d.as_secs_f64() * 1e3),
            last_probe_error: state.last_probe_error().map(|e| e.to_string()),
        }
    }
}
