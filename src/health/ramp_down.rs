//! Ramp-down: a backend whose success rate falls gets a matching share of
//! traffic, before it fails often enough in a row to be ejected.

use super::OutlierDetection;
use crate::backend::{Backend, BackendSet, FULL_SHARE, HealthEventKind, Tally};

/// A success rate at or above this is noise: full share.
const HEALTHY_RATE: f64 = 0.95;
/// The least share ramp-down leaves a backend, so it can show it recovered.
const MIN_SHARE: f64 = 0.1;

impl OutlierDetection {
    /// Sets `backend`'s share from the tally of the window that just closed;
    /// announces a change of more than a percent (and any return to full).
    pub(super) fn ramp(&self, set: &BackendSet, backend: &Backend, tally: Tally) {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::classify::Outcome;
    use super::super::recorder::Recorder;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failing_share_of_requests_ramps_the_share_down_and_back() {
        let set = BackendSet::new([
            "http://127.0.0.1:1".parse().unwrap(),
            "http://127.0.0.1:2".parse().unwrap(),
        ]);
        let backend = set.snapshot().backends()[0].clone();
        let recorder = Recorder::new(
            set.clone(),
            OutlierDetection::new()
                .consecutive_failures(100)
                .ramp_down_window(Duration::from_secs(1))
                .ramp_down_min_requests(10),
        );
        // 60 % success over a window: the share falls to about 0.6.
        for i in 0..50 {
            let outcome = if i % 5 < 2 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            recorder.record(&backend, outcome);
        }
        tokio::time::advance(Duration::from_millis(1001)).await;
        recorder.record(&backend, Outcome::Success);
        let share = backend.state().share();
        assert!((share - 0.6).abs() < 0.02, "{share}");
        // A clean window restores it.
        for _ in 0..30 {
            recorder.record(&backend, Outcome::Success);
        }
        tokio::time::advance(Duration::from_millis(1001)).await;
        recorder.record(&backend, Outcome::Success);
        assert_eq!(backend.state().share(), 1.0);
    }
}
