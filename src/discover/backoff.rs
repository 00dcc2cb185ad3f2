//! How long a discovery source waits before trying again after a failure.

use std::time::Duration;

/// Exponential back-off with jitter: 1 s, 2 s, 4 s, ... up to a cap, each
/// drawn from 80 % to 120 % of its step, so that many proxies that lost
/// their DNS server or etcd at the same moment do not come back in
/// lockstep. A success resets it.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, cap: Duration) -> Self {
        let first = first.max(Duration::from_millis(1));
        Self {
            first,
            cap: cap.max(first),
            next: first,
        }
    }

    /// The wait after one more failure in a row.
    pub(crate) fn fail(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.cap);
        step.mul_f64(0.8 + 0.4 * fastrand::f64())
    }

    /// A success: the next failure waits the first step again.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let waits: Vec<f64> = (0..5).map(|_| backoff.fail().as_secs_f64()).collect();
        for (wait, step) in waits.iter().zip([1.0, 2.0, 4.0, 5.0, 5.0]) {
            assert!((step * 0.8..=step * 1.2).contains(wait), "{waits:?}");
        }
        backoff.reset();
        assert!(backoff.fail() <= Duration::from_millis(1200));
    }
}
