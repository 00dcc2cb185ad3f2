//! Outlier detection's configuration: when a backend's own answers say it
//! is failing, and what to do about it.
//!
//! Only settings live here, so that a clone of the configuration is a
//! clone of settings: the state its rules act on is each backend's (its
//! outcomes, its ejection), and what serializes ejection decisions is the
//! set's. The rules are beside it: [`classify`](super::classify) (what a
//! response says), [`ejection`](super::ejection), [`ramp_down`](super::ramp_down),
//! applied per outcome by the [`recorder`](super::recorder).

use std::sync::Arc;
use std::time::Duration;

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
///   slow to keep flapping one in rotation. The ejection ends by its
///   deadline, checked whenever the backend is looked at, so nothing
///   depends on a timer task.
/// - **Ejection cap**: at most [`max_ejected_share`](Self::max_ejected_share)
///   of the set (default 50 %, at least one backend) is ejected at once, so a
///   fault on the proxy's side (its network, say) cannot eject every backend.
/// - **Ramp-down**: over windows of
///   [`ramp_down_window`](Self::ramp_down_window) (default 10 s), a backend
///   whose success rate falls below 95 % gets that rate as its share of
///   traffic (at least 10 %), before it fails enough in a row to be ejected;
///   it gets its full share back when a window goes well.
/// - **Overload signals**: a backend answering `429`, or `503` with
///   `Retry-After`, gets no new requests for as long as it asks (at most
///   [`max_retry_after`](Self::max_retry_after), 60 s), within the same cap.
///
/// ```
/// use std::time::Duration;
/// use tower_lb::health::OutlierDetection;
///
/// let detection = OutlierDetection::new()
///     .consecutive_failures(3)
///     .base_ejection(Duration::from_secs(10))
///     .max_ejected_share(0.3);
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct OutlierDetection {
    pub(super) consecutive_failures: u32,
    pub(super) failure_statuses: Arc<[u16]>,
    pub(super) base_ejection: Duration,
    pub(super) max_ejection: Duration,
    pub(super) max_ejected_share: f64,
    pub(super) ramp_down_window: Duration,
    pub(super) ramp_down_min_requests: u32,
    pub(super) max_retry_after: Duration,
}

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
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl OutlierDetection {
    /// The defaults above.
    pub fn new() -> Self {
        Self::default()
    }

    /// Failures in a row that eject a backend (at least 1).
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

    /// The longest pause a backend's overload signal (`429`, or `503` with
    /// `Retry-After`) gets: it takes no new requests for as long as it
    /// asks, up to this (default 60 s), within the ejection cap. Zero
    /// ignores the signals. `Retry-After` is seconds or an HTTP date (read
    /// against the wall clock). A 429 without a usable value, or with a
    /// date already past, pauses for 1 s; a 503 without one is an ordinary
    /// failure.
    pub fn max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = cap;
        self
    }

    /// How many of `members` may be out at once (ejected or paused).
    pub(super) fn ejection_cap(&self, members: usize) -> usize {
        ((members as f64 * self.max_ejected_share).floor() as usize).max(1)
    }

    /// The length of ejection number `exponent + 1` in a row.
    pub(super) fn ejection_time(&self, exponent: u32) -> Duration {
        let factor = 1u32 << exponent.min(20);
        self.base_ejection
            .saturating_mul(factor)
            .min(self.max_ejection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
