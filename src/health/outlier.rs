//! Outlier detection: the rules of passive health checking.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::Response;

use super::HealthEventKind;
use crate::backend::{Backend, BackendSet, FULL_SHARE, Tally};
use crate::clock::{self, Nanos};
use crate::{Error, ErrorKind};

/// When a backend's own answers say it is failing, and what to do about it.
///
/// A *failure* is a connect error, a timeout, a broken exchange, or a
/// status in [`failure_statuses`](Self::failure_statuses) (by default 502,
/// 503 and 504: Envoy's "gateway failures"; a 500 is usually one bad
/// request, not a bad backend).
///
/// - **Ejection**: after [`consecutive_failures`](Self::consecutive_failures)
///   failures in a row (default 5) the backend is ejected at once for the
///   base time (default 30 s), doubled on every repeated ejection up to the
///   cap (default 300 s), then let back automatically, through slow start.
///   The doubling starts over once a backend stays in for the cap's length.
///   Envoy's defaults, for the same reasons: quick to act on a dead backend,
///   slow to keep flapping one in rotation.
/// - **Ejection cap**: at most [`max_ejected_share`](Self::max_ejected_share)
///   of the set (default 50 %, at least one backend) is ejected at once, so a
///   fault on the proxy's side (its network, say) cannot eject every backend.
/// - **Ramp-down**: over windows of
///   [`ramp_down_window`](Self::ramp_down_window) (default 10 s), a backend
///   whose success rate falls below 95 % gets that rate as its share of
///   traffic (at least 10 %), before it fails enough in a row to be ejected;
///   it gets its full share back when a window goes well.
#[derive(Clone, Debug)]
#[must_use]
pub struct OutlierDetection {
    consecutive_failures: u32,
    failure_statuses: Arc<[u16]>,
    base_ejection: Duration,
    max_ejection: Duration,
    max_ejected_share: f64,
    ramp_down_window: Duration,
    ramp_down_min_requests: u32,
    /// Serializes ejection decisions, so the cap is exact. Only failures
    /// past the threshold take it; never the request path.
    ejecting: Arc<Mutex<()>>,
}

/// What one request says of its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failure,
}

/// A success rate at or above this is noise: full share.
const HEALTHY_RATE: f64 = 0.95;
/// The least share ramp-down leaves a backend, so it can show it recovered.
const MIN_SHARE: f64 = 0.1;

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_statuses: Arc::from([502, 503, 504]),
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_share: 0.5,
            ramp_down_window: Duration::from_secs(10),
            ramp_down_min_requests: 20,
            ejecting: Arc::new(Mutex::new(())),
        }
    }
}

impl OutlierDetection {
    /// The defaults above.
    pub fn new() -> Self {
        Self::default()
    }

    /// Failures in a row that eject a backend.
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = failures.max(1);
        self
    }

    /// Statuses that count as failures.
    pub fn failure_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.failure_statuses = statuses.into_iter().collect();
        self
    }

    /// The first ejection's length; each repeat doubles it.
    pub fn base_ejection(mut self, duration: Duration) -> Self {
        self.base_ejection = duration;
        self
    }

    /// The longest ejection.
    pub fn max_ejection(mut self, duration: Duration) -> Self {
        self.max_ejection = duration;
        self
    }

    /// The largest share of the set ejected at once (at least one backend).
    pub fn max_ejected_share(mut self, share: f64) -> Self {
        self.max_ejected_share = share.clamp(0.0, 1.0);
        self
    }

    /// The window of ramp-down's success rate; zero turns ramp-down off.
    pub fn ramp_down_window(mut self, window: Duration) -> Self {
        self.ramp_down_window = window;
        self
    }

    /// The fewest requests in a window for its success rate to count.
    pub fn ramp_down_min_requests(mut self, requests: u32) -> Self {
        self.ramp_down_min_requests = requests;
        self
    }

    /// What `response` (or the error it carries) says of the backend;
    /// nothing when the client broke its own request (a hostile client must
    /// not get healthy backends ejected).
    pub(crate) fn outcome<B>(&self, response: &Response<B>) -> Option<Outcome> {
        let failed = match response.extensions().get::<Error>() {
            Some(error) if error.is_client() => return None,
            Some(error) => matches!(
                error.kind(),
                ErrorKind::Connect | ErrorKind::Timeout | ErrorKind::Upstream
            ),
            None => self.failure_statuses.contains(&response.status().as_u16()),
        };
        Some(if failed {
            Outcome::Failure
        } else {
            Outcome::Success
        })
    }

    /// Records one outcome of a request to `backend`.
    pub(crate) fn record(&self, set: &BackendSet, backend: &Backend, outcome: Outcome) {
        let state = backend.state();
        // The common case, a success of a healthy backend, touches two
        // atomics and no clock.
        if outcome == Outcome::Success
            && state.ramp_down_share() == FULL_SHARE
            && state.outcomes().clean_success()
        {
            return;
        }
        let now = clock::now();
        let window = clock::nanos(self.ramp_down_window);
        let tally = if outcome == Outcome::Failure {
            state.count_failure();
            let (consecutive, tally) = state.outcomes().failure(now, window);
            if consecutive >= self.consecutive_failures {
                self.eject(set, backend, now);
            }
            tally
        } else {
            state.outcomes().success(now, window)
        };
        if let (Some(tally), false) = (tally, window == 0) {
            self.ramp(set, backend, tally);
        }
    }

    /// The length of ejection number `exponent + 1` in a row.
    pub(crate) fn ejection_time(&self, exponent: u32) -> Duration {
        let factor = 1u32 << exponent.min(20);
        self.base_ejection
            .saturating_mul(factor)
            .min(self.max_ejection)
    }

    fn eject(&self, set: &BackendSet, backend: &Backend, now: Nanos) {
        let state = backend.state();
        if state.is_flagged_ejected() {
            return;
        }
        let _decision = self.ejecting.lock().unwrap_or_else(PoisonError::into_inner);
        let snapshot = set.snapshot();
        let ejected = snapshot
            .backends()
            .iter()
            .filter(|b| b.state().is_flagged_ejected())
            .count();
        let cap = ((snapshot.len() as f64 * self.max_ejected_share).floor() as usize).max(1);
        if ejected >= cap {
            return;
        }
        let exponent = state
            .outcomes()
            .next_ejection(now, clock::nanos(self.max_ejection));
        let duration = self.ejection_time(exponent);
        if !state.eject(now.saturating_add(clock::nanos(duration))) {
            return;
        }
        set.emit(
            backend,
            HealthEventKind::Ejected {
                duration,
                count: exponent + 1,
            },
        );
        if tokio::runtime::Handle::try_current().is_ok() {
            let (set, backend) = (set.clone(), backend.clone());
            tokio::spawn(async move {
                tokio::time::sleep(duration).await;
                let_back(&set, &backend);
            });
        }
    }

    fn ramp(&self, set: &BackendSet, backend: &Backend, tally: Tally) {
        let total = tally.successes + tally.failures;
        let rate = if total == 0 {
            1.0
        } else {
            f64::from(tally.successes) / f64::from(total)
        };
        let share = if tally.failures == 0 || rate >= HEALTHY_RATE {
            1.0
        } else if total < self.ramp_down_min_requests {
            // Too few requests to judge: keep the share as it is.
            return;
        } else {
            rate.max(MIN_SHARE)
        };
        let state = backend.state();
        let fixed = (share * f64::from(FULL_SHARE)) as u32;
        let before = state.ramp_down_share();
        if fixed.abs_diff(before) > FULL_SHARE / 100
            || (fixed == FULL_SHARE && before != FULL_SHARE)
        {
            state.set_ramp_down(fixed);
            set.emit(backend, HealthEventKind::Share { share });
        }
    }
}

/// Ends `backend`'s ejection: it returns through slow start.
pub(crate) fn let_back(set: &BackendSet, backend: &Backend) {
    let state = backend.state();
    if !state.end_ejection() {
        return;
    }
    let now = clock::now();
    state.outcomes().returned(now);
    state.set_ramp_down(FULL_SHARE);
    set.begin_slow_start(backend, now);
    set.emit(backend, HealthEventKind::Returned);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_of(n: usize) -> BackendSet {
        BackendSet::new((0..n).map(|i| format!("http://127.0.0.1:{}", 1000 + i).parse().unwrap()))
    }

    #[test]
    fn ejection_time_doubles_and_caps() {
        let detection = OutlierDetection::new()
            .base_ejection(Duration::from_secs(10))
            .max_ejection(Duration::from_secs(60));
        let times: Vec<u64> = (0..5)
            .map(|e| detection.ejection_time(e).as_secs())
            .collect();
        assert_eq!(times, [10, 20, 40, 60, 60]);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_then_the_backend_returns() {
        let set = set_of(4);
        let backend = set.snapshot().backends()[0].clone();
        let detection = OutlierDetection::new()
            .consecutive_failures(3)
            .base_ejection(Duration::from_secs(10));
        let mut events = set.events();
        detection.record(&set, &backend, Outcome::Failure);
        detection.record(&set, &backend, Outcome::Failure);
        detection.record(&set, &backend, Outcome::Success);
        detection.record(&set, &backend, Outcome::Failure);
        detection.record(&set, &backend, Outcome::Failure);
        assert!(backend.state().is_eligible_now(), "a success broke the run");
        detection.record(&set, &backend, Outcome::Failure);
        assert!(!backend.state().is_eligible_now(), "three in a row eject");
        let event = events.recv().await.unwrap();
        assert_eq!(
            event.kind(),
            &HealthEventKind::Ejected {
                duration: Duration::from_secs(10),
                count: 1
            }
        );
        tokio::time::sleep(Duration::from_secs(10) + Duration::from_millis(1)).await;
        assert!(backend.state().is_eligible_now());
        assert_eq!(
            events.recv().await.unwrap().kind(),
            &HealthEventKind::Returned
        );
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_ejections_double_up_to_the_cap() {
        let set = set_of(2);
        let backend = set.snapshot().backends()[0].clone();
        let detection = OutlierDetection::new()
            .consecutive_failures(1)
            .base_ejection(Duration::from_secs(10))
            .max_ejection(Duration::from_secs(40));
        let mut events = set.events();
        let mut lengths = Vec::new();
        for _ in 0..4 {
            detection.record(&set, &backend, Outcome::Failure);
            match events.recv().await.unwrap().kind() {
                HealthEventKind::Ejected { duration, .. } => lengths.push(duration.as_secs()),
                other => panic!("{other:?}"),
            }
            // Wait out the ejection (the Returned event).
            assert_eq!(
                events.recv().await.unwrap().kind(),
                &HealthEventKind::Returned
            );
        }
        assert_eq!(lengths, [10, 20, 40, 40]);
        // A quiet period as long as the cap starts the doubling over.
        tokio::time::sleep(Duration::from_secs(41)).await;
        detection.record(&set, &backend, Outcome::Failure);
        match events.recv().await.unwrap().kind() {
            HealthEventKind::Ejected { duration, count } => {
                assert_eq!((duration.as_secs(), *count), (10, 1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_the_cap_is_ejected() {
        let set = set_of(5);
        let detection = OutlierDetection::new()
            .consecutive_failures(1)
            .max_ejected_share(0.4);
        for backend in set.snapshot().backends() {
            detection.record(&set, backend, Outcome::Failure);
        }
        let ejected = set
            .snapshot()
            .backends()
            .iter()
            .filter(|b| !b.state().is_eligible_now())
            .count();
        assert_eq!(ejected, 2, "40 % of 5");
    }

    #[tokio::test(start_paused = true)]
    async fn at_least_one_backend_may_be_ejected() {
        let set = set_of(2);
        let detection = OutlierDetection::new()
            .consecutive_failures(1)
            .max_ejected_share(0.1);
        for backend in set.snapshot().backends() {
            detection.record(&set, backend, Outcome::Failure);
        }
        let eligible = set
            .snapshot()
            .backends()
            .iter()
            .filter(|b| b.state().is_eligible_now())
            .count();
        assert_eq!(eligible, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_share_of_requests_ramps_the_share_down_and_back() {
        let set = set_of(2);
        let backend = set.snapshot().backends()[0].clone();
        let detection = OutlierDetection::new()
            .consecutive_failures(100)
            .ramp_down_window(Duration::from_secs(1))
            .ramp_down_min_requests(10);
        // 60 % success over a window: the share falls to about 0.6.
        for i in 0..50 {
            let outcome = if i % 5 < 2 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            detection.record(&set, &backend, outcome);
        }
        tokio::time::sleep(Duration::from_millis(1001)).await;
        detection.record(&set, &backend, Outcome::Success);
        let share = backend.state().current_share();
        assert!((share - 0.6).abs() < 0.02, "{share}");
        // A clean window restores it.
        for _ in 0..30 {
            detection.record(&set, &backend, Outcome::Success);
        }
        tokio::time::sleep(Duration::from_millis(1001)).await;
        detection.record(&set, &backend, Outcome::Success);
        assert_eq!(backend.state().current_share(), 1.0);
    }
}
