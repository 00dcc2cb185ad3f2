//! Power of two choices on peak-EWMA latency.

use super::{Candidates, Strategy};
use crate::backend::{Backend, FULL_SHARE};

/// How many random draws look for an available backend before a scan.
const DRAWS: usize = 4;

/// The cost of a backend never timed that already has a request pending:
/// above any measured cost, so an unknown backend gets one request at a time
/// until its first response tells its latency (Finagle's rule).
const UNMEASURED_PENALTY: f64 = 1e15;

/// Power of two choices: draw two backends at random, send to the one with
/// the lower *cost*, its peak-EWMA latency times its requests in flight plus
/// one, divided by its weight.
///
/// The right choice for backends that differ in speed or slow down under
/// load: traffic leans away from a backend as soon as it answers slower or
/// piles up requests, without the herd behaviour of always picking the single
/// best (every proxy rushing to the same backend). This is the balancer of
/// Finagle, linkerd and tower's `p2c`; the latency estimate (time to response
/// headers) decays while a backend is idle, so a backend that was slow is
/// tried again. A backend not timed yet costs nothing while idle and a
/// penalty while it has a request pending, so a new backend is probed with
/// one request before it gets more. O(1) per pick.
///
/// ```
/// use tower_lb::balance::PowerOfTwoChoices;
/// use tower_lb::{BackendSet, LoadBalanceLayer};
///
/// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002".parse()?]);
/// let layer = LoadBalanceLayer::new(set, PowerOfTwoChoices::new());
/// # Ok::<(), tower_lb::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct PowerOfTwoChoices;

impl PowerOfTwoChoices {
    /// Power of two choices.
    pub fn new() -> Self {
        Self
    }
}

impl Strategy for PowerOfTwoChoices {
    type Table = ();

    fn build(&self, _backends: &[Backend]) {}

    fn pick(&self, _table: &(), candidates: &Candidates<'_>) -> Option<usize> {
        let n = candidates.len();
        match n {
            0 => return None,
            1 => return candidates.is_available(0).then_some(0),
            _ => {}
        }
        let a = draw(candidates, None);
        let b = draw(candidates, a);
        match (a, b) {
            (Some(a), Some(b)) => Some(if cost(candidates, b) < cost(candidates, a) {
                b
            } else {
                a
            }),
            (Some(one), None) | (None, Some(one)) => Some(one),
            (None, None) => candidates.scan_from(fastrand::usize(..n)),
        }
    }
}

/// A random available backend other than `not`, if a few draws find one.
/// (Needs at least two backends.)
fn draw(candidates: &Candidates<'_>, not: Option<usize>) -> Option<usize> {
    let n = candidates.len();
    let one = || match not {
        None => fastrand::usize(..n),
        // Uniform over the others: draw from n - 1 and step over `not`.
        Some(not) => {
            let i = fastrand::usize(..n - 1);
            if i >= not { i + 1 } else { i }
        }
    };
    (0..DRAWS)
        .map(|_| one())
        .find(|&i| candidates.is_available(i))
}

/// Latency × (pending + 1) / (weight × share).
fn cost(candidates: &Candidates<'_>, index: usize) -> f64 {
    let backend = &candidates.backends()[index];
    let state = backend.state();
    let pending = f64::from(state.in_flight());
    let capacity = f64::from(backend.weight()) * f64::from(candidates.share(index).max(1))
        / f64::from(FULL_SHARE);
    let load = match state.ewma().estimate_at(candidates.now()) {
        Some(latency) => latency * (pending + 1.0),
        None if pending == 0.0 => 0.0,
        None => UNMEASURED_PENALTY + pending,
    };
    load / capacity
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::InFlight;
    use crate::balance::test_support::Fixture;
    use crate::clock;

    const MS: u64 = 1_000_000;

    #[test]
    fn the_slow_backend_gets_little_traffic() {
        let fixture = Fixture::new(PowerOfTwoChoices, &[1, 1, 1]);
        let now = clock::now();
        fixture.backends[0].state().observe_latency(2 * MS, now);
        fixture.backends[1].state().observe_latency(2 * MS, now);
        fixture.backends[2].state().observe_latency(50 * MS, now);
        let tally = fixture.tally(3000);
        // The slow one only wins when drawn against itself, which p2c never
        // does: it is picked only if both draws fail, i.e. never here.
        assert_eq!(tally[2], 0, "{tally:?}");
        assert!(tally[0] > 1200 && tally[1] > 1200, "{tally:?}");
    }

    #[test]
    fn pending_requests_raise_the_cost() {
        let fixture = Fixture::new(PowerOfTwoChoices, &[1, 1]);
        let now = clock::now();
        for backend in &fixture.backends {
            backend.state().observe_latency(10 * MS, now);
        }
        let _held: Vec<_> = (0..3)
            .map(|_| InFlight::begin(fixture.backends[0].clone()))
            .collect();
        assert_eq!(fixture.tally(100), [0, 100]);
    }

    #[test]
    fn an_unmeasured_backend_gets_one_request_at_a_time() {
        let fixture = Fixture::new(PowerOfTwoChoices, &[1, 1]);
        fixture.backends[0]
            .state()
            .observe_latency(10 * MS, clock::now());
        assert_eq!(
            fixture.tally(20),
            [0, 20],
            "idle and unmeasured costs nothing"
        );
        let _probe = InFlight::begin(fixture.backends[1].clone());
        assert_eq!(
            fixture.tally(20),
            [20, 0],
            "pending and unmeasured is penalised"
        );
    }

    #[test]
    fn unavailable_and_tried_are_skipped() {
        let fixture = Fixture::new(PowerOfTwoChoices, &[1, 1, 1]);
        fixture.eject(0);
        for _ in 0..100 {
            let pick = fixture.pick_excluding(&[1]);
            assert_eq!(pick, Some(2));
        }
        assert_eq!(fixture.pick_excluding(&[1, 2]), None);
    }
}
