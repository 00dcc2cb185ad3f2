//! Ejection by outlier detection: out at once after failures in a row,
//! for a time that doubles on repeats, under a cap on the set's share.

use std::time::Duration;

use super::OutlierDetection;
use crate::backend::{Backend, BackendSet, HealthEventKind};
use crate::clock::{self, Nanos};

impl OutlierDetection {
    /// Ejects `backend` at `now` unless it is ejected already or the cap is
    /// reached; returns the ejection's length when it did.
    ///
    /// The decision runs under the set's ejection lock, so concurrent
    /// failures of several backends cannot pass the cap together. The
    /// ejection ends by its deadline: no task is started for it.
    pub(super) fn eject(
        &self,
        set: &BackendSet,
        backend: &Backend,
        now: Nanos,
    ) -> Option<Duration> {
        let state = backend.state();
        if state.is_ejected_at(now) {
            return None;
        }
        let ejected = set.deciding_ejection(now, |ejected, members| {
            if ejected >= self.ejection_cap(members) {
                return None;
            }
            let exponent = state
                .outcomes()
                .next_ejection(now, clock::nanos(self.max_ejection));
            let duration = self.ejection_time(exponent);
            let until = now.saturating_add(clock::nanos(duration));
            state
                .eject(now, until, set.slow_start_nanos())
                .then_some((duration, exponent + 1))
        });
        let (duration, count) = ejected?;
        set.emit(backend, HealthEventKind::Ejected { duration, count });
        Some(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::super::classify::Outcome;
    use super::super::recorder::Recorder;
    use super::*;

    fn set_of(n: usize) -> BackendSet {
        BackendSet::new((0..n).map(|i| format!("http://127.0.0.1:{}", 1000 + i).parse().unwrap()))
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_then_the_backend_returns() {
        let set = set_of(4);
        let backend = set.snapshot().backends()[0].clone();
        let recorder = Recorder::new(
            set.clone(),
            OutlierDetection::new()
                .consecutive_failures(3)
                .base_ejection(Duration::from_secs(10)),
        );
        let mut events = set.events();
        for outcome in [Outcome::Failure, Outcome::Failure, Outcome::Success] {
            recorder.record(&backend, outcome);
        }
        recorder.record(&backend, Outcome::Failure);
        recorder.record(&backend, Outcome::Failure);
        assert!(backend.state().is_eligible(), "a success broke the run");
        recorder.record(&backend, Outcome::Failure);
        assert!(!backend.state().is_eligible(), "three in a row eject");
        assert_eq!(
            events.try_recv().unwrap().kind(),
            &HealthEventKind::Ejected {
                duration: Duration::from_secs(10),
                count: 1
            }
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(backend.state().is_eligible(), "out at the deadline");
        assert_eq!(
            events.try_recv().unwrap().kind(),
            &HealthEventKind::Returned
        );
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_ejections_double_up_to_the_cap() {
        let set = set_of(2);
        let backend = set.snapshot().backends()[0].clone();
        let recorder = Recorder::new(
            set.clone(),
            OutlierDetection::new()
                .consecutive_failures(1)
                .base_ejection(Duration::from_secs(10))
                .max_ejection(Duration::from_secs(40)),
        );
        let mut lengths = Vec::new();
        for _ in 0..4 {
            recorder.record(&backend, Outcome::Failure);
            let left = backend.state().ejection_remaining().unwrap();
            lengths.push(left.as_secs());
            tokio::time::advance(left).await;
            assert!(backend.state().is_eligible());
        }
        assert_eq!(lengths, [10, 20, 40, 40]);
        // A quiet period as long as the cap starts the doubling over.
        tokio::time::advance(Duration::from_secs(41)).await;
        recorder.record(&backend, Outcome::Failure);
        assert_eq!(
            backend.state().ejection_remaining(),
            Some(Duration::from_secs(10))
        );
        assert_eq!(backend.state().ejections(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_the_cap_is_ejected() {
        let set = set_of(5);
        let recorder = Recorder::new(
            set.clone(),
            OutlierDetection::new()
                .consecutive_failures(1)
                .max_ejected_share(0.4),
        );
        for backend in set.snapshot().backends() {
            recorder.record(backend, Outcome::Failure);
        }
        let ejected = set
            .snapshot()
            .backends()
            .iter()
            .filter(|b| !b.state().is_eligible())
            .count();
        assert_eq!(ejected, 2, "40 % of 5");
    }

    #[tokio::test(start_paused = true)]
    async fn at_least_one_backend_may_be_ejected() {
        let set = set_of(2);
        let recorder = Recorder::new(
            set.clone(),
            OutlierDetection::new()
                .consecutive_failures(1)
                .max_ejected_share(0.1),
        );
        for backend in set.snapshot().backends() {
            recorder.record(backend, Outcome::Failure);
        }
        let eligible = set
            .snapshot()
            .backends()
            .iter()
            .filter(|b| b.state().is_eligible())
            .count();
        assert_eq!(eligible, 1);
    }

    /// No runtime at all: nothing could run a timer task, and the ejection
    /// still ends and stops counting against the cap.
    #[test]
    fn ejections_end_without_a_runtime() {
        let set = set_of(2);
        let [first, second] = [0, 1].map(|i| set.snapshot().backends()[i].clone());
        let recorder = Recorder::new(
            set.clone(),
            OutlierDetection::new()
                .consecutive_failures(1)
                .base_ejection(Duration::from_millis(5))
                .max_ejected_share(0.5),
        );
        recorder.record(&first, Outcome::Failure);
        assert!(!first.state().is_eligible());
        recorder.record(&second, Outcome::Failure);
        assert!(second.state().is_eligible(), "the cap: one of two");
        std::thread::sleep(Duration::from_millis(6));
        recorder.record(&second, Outcome::Failure);
        assert!(
            !second.state().is_eligible(),
            "the first's ejection ran out: it no longer counts against the cap"
        );
        assert!(first.state().is_eligible());
    }
}
