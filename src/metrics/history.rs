//! The last five minutes of each backend's traffic, in fixed-size rings.
//!
//! The status page draws requests per second, error rate and p50 / p99
//! latency over time; a counter read at one instant cannot show that
//! ("recent traffic" that reads 0 % a few seconds after traffic stops).
//! So every [`SLOT`] the admin service reads each backend's counters and
//! pushes the differences into rings of [`SLOTS`] values: memory is fixed
//! per backend (4 rings of 150 `f32`, 2.4 KB), nothing grows with traffic,
//! and the request path does nothing more than it did (the counters and
//! histograms it already keeps are what is read).

use std::time::Duration;

use rustc_hash::FxHashMap;

use super::histogram::LATENCY_BUCKETS;
use super::recorder::Recorder;
use crate::backend::{Backend, BackendId};
use crate::clock::{self, Nanos};

/// The width of one slot. Two seconds: the page refreshes about that
/// often, and 150 of them are five minutes.
pub(crate) const SLOT: Duration = Duration::from_secs(2);

/// Slots kept: five minutes.
pub(crate) const SLOTS: usize = 150;

const SLOT_NANOS: Nanos = SLOT.as_nanos() as Nanos;

type Buckets = [u64; LATENCY_BUCKETS.len()];

/// A fixed ring of the latest values, oldest overwritten first. NaN marks
/// a slot without data (no request to take an error rate or latency of).
#[derive(Clone, Debug)]
pub(crate) struct Ring {
    values: [f32; SLOTS],
    next: usize,
    len: usize,
}

impl Default for Ring {
    fn default() -> Self {
        Self {
            values: [f32::NAN; SLOTS],
            next: 0,
            len: 0,
        }
    }
}

impl Ring {
    pub(crate) fn push(&mut self, value: f32) {
        self.values[self.next] = value;
        self.next = (self.next + 1) % SLOTS;
        self.len = (self.len + 1).min(SLOTS);
    }

    /// The values held, oldest first.
    pub(crate) fn values(&self) -> impl DoubleEndedIterator<Item = f32> + '_ {
        let start = (self.next + SLOTS - self.len) % SLOTS;
        (0..self.len).map(move |i| self.values[(start + i) % SLOTS])
    }

    /// How many slots hold a value (up to [`SLOTS`]).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The newest `n` values, newest first.
    fn newest(&self, n: usize) -> impl Iterator<Item = f32> + '_ {
        self.values().rev().take(n)
    }
}

/// One backend's (or the whole set's) history.
#[derive(Clone, Debug, Default)]
pub(crate) struct Series {
    /// Requests per second started in each slot.
    pub(crate) rate: Ring,
    /// Share of the slot's responses that failed, `0.0..=1.0`.
    pub(crate) errors: Ring,
    /// Median latency in the slot, ms.
    pub(crate) p50: Ring,
    /// 99th percentile latency in the slot, ms.
    pub(crate) p99: Ring,
}

impl Series {
    fn push(&mut self, delta: &Delta, seconds: f64, slots: usize) {
        let rate = (delta.requests as f64 / seconds) as f32;
        let errors = if delta.answered == 0 {
            f32::NAN
        } else {
            (delta.errors as f64 / delta.answered as f64) as f32
        };
        let (p50, p99) = match &delta.buckets {
            Some(buckets) => (quantile(buckets, 0.5), quantile(buckets, 0.99)),
            None => (f32::NAN, f32::NAN),
        };
        // A gap (no sample for a while) is filled with its average: the
        // counters say how much happened in it, not when.
        for _ in 0..slots.min(SLOTS) {
            self.rate.push(rate);
            self.errors.push(errors);
            self.p50.push(p50);
            self.p99.push(p99);
        }
    }

    /// Mean requests per second over the newest `n` slots.
    pub(crate) fn mean_rate(&self, n: usize) -> f64 {
        let (sum, count) = self
            .rate
            .newest(n)
            .fold((0.0, 0usize), |(s, c), v| (s + f64::from(v), c + 1));
        if count == 0 { 0.0 } else { sum / count as f64 }
    }

    /// Requests started over the newest `n` slots.
    pub(crate) fn requests(&self, n: usize) -> f64 {
        self.rate.newest(n).map(f64::from).sum::<f64>() * SLOT.as_secs_f64()
    }

    /// The error rate over the newest `n` slots, weighted by each slot's
    /// requests; `None` without any.
    pub(crate) fn error_rate(&self, n: usize) -> Option<f64> {
        let (failed, of) = self
            .rate
            .newest(n)
            .zip(self.errors.newest(n))
            .filter(|(_, e)| !e.is_nan())
            .fold((0.0, 0.0), |(f, o), (r, e)| {
                (f + f64::from(r * e), o + f64::from(r))
            });
        (of > 0.0).then(|| failed / of)
    }

    /// The newest value of `ring` within the newest `n` slots that has one.
    pub(crate) fn latest(ring: &Ring, n: usize) -> Option<f64> {
        ring.newest(n).find(|v| !v.is_nan()).map(f64::from)
    }
}

/// What one backend's counters read at a sample.
#[derive(Clone, Debug, Default)]
struct Counters {
    requests: u64,
    failures: u64,
    /// Responses and 5xx among them, when a metrics layer counts them.
    responses: Option<(u64, u64)>,
    buckets: Option<Buckets>,
}

/// What happened between two samples.
#[derive(Debug, Default)]
struct Delta {
    requests: u64,
    errors: u64,
    /// What `errors` is a share of.
    answered: u64,
    buckets: Option<Buckets>,
}

impl Delta {
    fn between(now: &Counters, before: &Counters) -> Self {
        let requests = now.requests.saturating_sub(before.requests);
        // The metrics layer's 5xx count when there is one (every failure
        // ends as a 5xx response); passive health's failures otherwise.
        let (errors, answered) = match (now.responses, before.responses) {
            (Some((n, e)), Some((n0, e0))) => (e.saturating_sub(e0), n.saturating_sub(n0)),
            _ => (now.failures.saturating_sub(before.failures), requests),
        };
        Self {
            requests,
            errors,
            answered,
            buckets: difference(now.buckets.as_ref(), before.buckets.as_ref()),
        }
    }

    fn add(&mut self, other: &Delta) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.answered += other.answered;
    }
}

fn difference(now: Option<&Buckets>, before: Option<&Buckets>) -> Option<Buckets> {
    let (now, before) = (now?, before?);
    Some(std::array::from_fn(|i| now[i].saturating_sub(before[i])))
}

#[derive(Debug)]
struct Track {
    series: Series,
    last: Counters,
}

/// Every backend's rings, and the whole set's.
#[derive(Debug, Default)]
pub(crate) struct History {
    tracks: FxHashMap<BackendId, Track>,
    total: Series,
    total_buckets: Option<Buckets>,
    /// When the last sample was taken; `None` before the first.
    last: Option<Nanos>,
}

impl History {
    /// Reads the counters of `backends` at `now`; pushes one value per
    /// slot elapsed since the last sample (a gap gets its average), or
    /// nothing when less than half a slot has passed. A backend seen for
    /// the first time starts from its counters now; backends not listed
    /// are forgotten.
    pub(crate) fn sample(&mut self, now: Nanos, backends: &[Backend], recorder: Option<&Recorder>) {
        let slots = match self.last {
            None => 0,
            Some(last) => (now.saturating_sub(last) + SLOT_NANOS / 2) / SLOT_NANOS,
        };
        if self.last.is_some() && slots == 0 {
            return;
        }
        let seconds = self
            .last
            .map_or(1.0, |last| now.saturating_sub(last) as f64 / 1e9)
            .max(1e-3);
        let slots = usize::try_from(slots).unwrap_or(SLOTS);
        self.last = Some(now);
        let mut total = Delta::default();
        let mut seen = Vec::with_capacity(backends.len());
        for backend in backends {
            let counters = read(backend, recorder);
            seen.push(backend.id());
            match self.tracks.get_mut(&backend.id()) {
                Some(track) => {
                    let delta = Delta::between(&counters, &track.last);
                    track.series.push(&delta, seconds, slots);
                    total.add(&delta);
                    track.last = counters;
                }
                None => {
                    self.tracks.insert(
                        backend.id(),
                        Track {
                            series: Series::default(),
                            last: counters,
                        },
                    );
                }
            }
        }
        self.tracks.retain(|id, _| seen.contains(id));
        let buckets = recorder.map(|r| r.latency.buckets());
        total.buckets = difference(buckets.as_ref(), self.total_buckets.as_ref());
        self.total_buckets = buckets;
        if slots > 0 {
            self.total.push(&total, seconds, slots);
        }
    }

    /// Takes the baselines of a metrics layer's counters attached after the
    /// last sample, so that the next slot's error rate and latency come
    /// from them rather than from nothing.
    pub(crate) fn baseline_metrics(&mut self, backends: &[Backend], recorder: &Recorder) {
        for backend in backends {
            if let Some(track) = self.tracks.get_mut(&backend.id()) {
                let counters = read(backend, Some(recorder));
                track.last.responses = counters.responses;
                track.last.buckets = counters.buckets;
            }
        }
        self.total_buckets = Some(recorder.latency.buckets());
    }

    /// Samples now (see [`sample`](Self::sample)).
    pub(crate) fn sample_now(&mut self, backends: &[Backend], recorder: Option<&Recorder>) {
        self.sample(clock::now(), backends, recorder);
    }

    /// The history of backend `id`, once it has been sampled twice.
    pub(crate) fn of(&self, id: BackendId) -> Option<&Series> {
        self.tracks.get(&id).map(|t| &t.series)
    }

    /// The whole set's history.
    pub(crate) fn total(&self) -> &Series {
        &self.total
    }

    /// When the newest slot ended.
    pub(crate) fn last(&self) -> Option<Nanos> {
        self.last
    }
}

fn read(backend: &Backend, recorder: Option<&Recorder>) -> Counters {
    let state = backend.state();
    let metrics = recorder.and_then(|r| r.member(backend.id()));
    Counters {
        requests: state.requests(),
        failures: state.failures(),
        responses: metrics.as_ref().map(|m| m.responses()),
        buckets: metrics.as_ref().map(|m| m.latency().buckets()),
    }
}

/// The `q` quantile of a histogram's per-bucket counts, in ms, as
/// Prometheus' `histogram_quantile` computes it: linear within the bucket
/// the rank falls in; the last finite bound when it falls past them. NaN
/// for an empty histogram.
fn quantile(buckets: &Buckets, q: f64) -> f32 {
    let count: u64 = buckets.iter().sum();
    if count == 0 {
        return f32::NAN;
    }
    let rank = q * count as f64;
    let mut below = 0u64;
    for (i, &n) in buckets.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
            let upper = LATENCY_BUCKETS[i];
            if upper.is_infinite() {
                return (lower * 1e3) as f32;
            }
            let within = (rank - below as f64) / n as f64;
            return ((lower + (upper - lower) * within) * 1e3) as f32;
        }
        below += n;
    }
    f32::NAN
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::InFlight;

    fn backend(port: u16) -> Backend {
        format!("http://127.0.0.1:{port}").parse().unwrap()
    }

    const S: Nanos = SLOT_NANOS;

    #[test]
    fn a_ring_keeps_the_newest_values_in_order() {
        let mut ring = Ring::default();
        for i in 0..(SLOTS + 5) {
            ring.push(i as f32);
        }
        assert_eq!(ring.len(), SLOTS);
        let values: Vec<f32> = ring.values().collect();
        assert_eq!(values.first(), Some(&5.0));
        assert_eq!(values.last(), Some(&((SLOTS + 4) as f32)));
        assert_eq!(ring.newest(2).collect::<Vec<_>>(), [154.0, 153.0]);
    }

    #[test]
    fn rates_come_from_the_counters_and_gaps_get_their_average() {
        let a = backend(1);
        let only = std::slice::from_ref(&a);
        let mut history = History::default();
        history.sample(S, only, None);
        assert!(
            history.of(a.id()).unwrap().rate.len() == 0,
            "a baseline only"
        );
        for _ in 0..10 {
            drop(InFlight::begin(a.clone()));
        }
        history.sample(2 * S, only, None);
        let series = history.of(a.id()).unwrap();
        assert_eq!(series.rate.values().collect::<Vec<_>>(), [5.0]);
        assert!(series.errors.values().all(|e| e == 0.0));
        assert!(series.p50.values().all(f32::is_nan), "no metrics layer");
        // Too soon: nothing moves.
        history.sample(2 * S + S / 4, only, None);
        assert_eq!(history.of(a.id()).unwrap().rate.len(), 1);
        // Three slots without a sample: 12 requests spread over them.
        for _ in 0..12 {
            drop(InFlight::begin(a.clone()));
        }
        history.sample(5 * S, only, None);
        let series = history.of(a.id()).unwrap();
        assert_eq!(
            series.rate.values().collect::<Vec<_>>(),
            [5.0, 2.0, 2.0, 2.0]
        );
        assert_eq!(series.mean_rate(3), 2.0);
        assert_eq!(series.requests(4), 22.0);
        assert_eq!(history.total().rate.len(), 4);
        // A backend no longer listed is forgotten.
        history.sample(6 * S, &[], None);
        assert!(history.of(a.id()).is_none());
    }

    #[test]
    fn error_rates_weigh_each_slot_by_its_requests() {
        let mut series = Series::default();
        let slot = |requests, errors| Delta {
            requests,
            errors,
            answered: requests,
            buckets: None,
        };
        series.push(&slot(10, 0), 1.0, 1);
        series.push(&slot(30, 3), 1.0, 1);
        series.push(&slot(0, 0), 1.0, 1);
        assert!(
            series.errors.newest(1).all(f32::is_nan),
            "no request, no rate"
        );
        let rate = series.error_rate(3).unwrap();
        assert!((rate - 3.0 / 40.0).abs() < 1e-6, "{rate}");
        assert_eq!(Series::default().error_rate(3), None);
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let mut buckets = [0u64; LATENCY_BUCKETS.len()];
        // 100 observations between 10 and 25 ms.
        buckets[4] = 100;
        let p50 = quantile(&buckets, 0.5);
        assert!((p50 - 17.5).abs() < 1e-3, "{p50}");
        // One slow outlier past every bound.
        buckets[13] = 1;
        let p99 = quantile(&buckets, 0.999);
        assert_eq!(p99, 10_000.0);
        assert!(quantile(&[0; LATENCY_BUCKETS.len()], 0.5).is_nan());
    }
}
