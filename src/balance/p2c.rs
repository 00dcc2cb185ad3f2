//! Power of two choices on peak-EWMA latency.

use std::cmp::Ordering;

use super::p2c_table::PowerOfTwoChoicesTable;
use super::{Candidates, Strategy};
use crate::backend::Backend;
use crate::backend::ewma::decay_between;
use crate::clock::Nanos;

/// How many random draws look for an available backend before a scan.
const DRAWS: usize = 4;

/// One pick in this many is a probe (see [`PowerOfTwoChoices`]).
const PROBE_ODDS: u8 = 16;

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
/// A pick reads the two draws' loads and estimates from its
/// [table](PowerOfTwoChoicesTable), a packed copy kept by the backends as
/// requests start and end, so that in a large set it does not take a
/// cache miss on each backend it looks at.
///
/// **Every backend keeps a share.** Decay alone does not bring back a
/// backend that answered slowly once: at low load nothing is pending, so
/// latency alone decides, the backend gets no request, and with the 10 s
/// decay it stays out for tens of seconds (a client sending one request
/// at a time once sent none of 150 to one of three equal backends). So one
/// pick in 16 is a *probe*: of its two draws it takes the one whose
/// estimate is older, when that one is idle, and the probe's answer
/// replaces that backend's estimate instead of blending into it (Finagle's
/// rule for an unmeasured backend, applied to a stale one). A backend that
/// recovered is seen at its first probe; one that is really slow gets about
/// one pick in 16 of those it is drawn for, an eighth of an equal share,
/// and sheds it again with the next sample.
///
/// ```
/// use tower_lb::balance::PowerOfTwoChoices;
/// use tower_lb::{BackendSet, LoadBalanceLayer};
///
/// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002".parse()?]);
/// let layer = LoadBalanceLayer::new(set, PowerOfTwoChoices::new());
/// # Ok::<(), tower_lb::ConfigError>(())
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
    type Table = PowerOfTwoChoicesTable;

    fn build(&self, backends: &[Backend]) -> PowerOfTwoChoicesTable {
        PowerOfTwoChoicesTable::build(backends)
    }

    fn pick(&self, table: &PowerOfTwoChoicesTable, candidates: &Candidates<'_>) -> Option<usize> {
        let n = candidates.len();
        match n {
            0 => return None,
            1 => return candidates.is_available(0).then_some(0),
            _ => {}
        }
        let a = draw(candidates, None);
        let b = draw(candidates, a);
        match (a, b) {
            (Some(a), Some(b)) => {
                let (cost_a, cost_b) = (
                    Cost::of(table, candidates, a),
                    Cost::of(table, candidates, b),
                );
                let (cheaper, dearer) = if cost_b < cost_a {
                    ((b, cost_b), (a, cost_a))
                } else {
                    ((a, cost_a), (b, cost_b))
                };
                if dearer.1.staler_and_idle(&cheaper.1) && fastrand::u8(..PROBE_ODDS) == 0 {
                    candidates.backends()[dearer.0].state().ewma().probe();
                    return Some(dearer.0);
                }
                Some(cheaper.0)
            }
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

/// A backend's cost, latency × (pending + 1) / (weight × share), kept as a
/// fraction with the latency undecayed at its last sample. Comparing two
/// costs cross-multiplies (no division) and applies the decay between their
/// stamps (both decay alike from then on), so a pick reads no clock and
/// computes at most one exponential.
#[derive(Clone, Copy, Debug)]
enum Cost {
    /// Never timed and idle: free, so a new backend gets its first request.
    Free,
    /// Timed: `load / capacity` as of `stamp`.
    Measured {
        load: f64,
        capacity: f64,
        stamp: Nanos,
        idle: bool,
    },
    /// Never timed with requests pending: above any measured cost (lower
    /// with fewer pending), so an unknown backend gets one request at a
    /// time until its first response tells its latency (Finagle's rule).
    Penalised { pending: u32 },
}

impl Cost {
    #[inline]
    fn of(table: &PowerOfTwoChoicesTable, candidates: &Candidates<'_>, index: usize) -> Self {
        let inputs = table.inputs(index, &candidates.backends()[index]);
        let pending = inputs.pending;
        match inputs.sample {
            Some((latency, stamp)) => Cost::Measured {
                load: latency * (f64::from(pending) + 1.0),
                capacity: (u64::from(inputs.weight) * u64::from(candidates.share(index).max(1)))
                    as f64,
                stamp,
                idle: pending == 0,
            },
            None if pending == 0 => Cost::Free,
            None => Cost::Penalised { pending },
        }
    }
}

impl Cost {
    /// Whether this is an idle backend measured before `other` was: one a
    /// probe may re-measure.
    #[inline]
    fn staler_and_idle(&self, other: &Cost) -> bool {
        match (self, other) {
            (
                Cost::Measured {
                    stamp, idle: true, ..
                },
                Cost::Measured { stamp: theirs, .. },
            ) => stamp < theirs,
            _ => false,
        }
    }
}

impl PartialEq for Cost {
    fn eq(&self, other: &Self) -> bool {
        self.partial_cmp(other) == Some(Ordering::Equal)
    }
}

impl PartialOrd for Cost {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        use Cost::*;
        match (*self, *other) {
            (Free, Free) => Some(Ordering::Equal),
            (Free, _) => Some(Ordering::Less),
            (_, Free) => Some(Ordering::Greater),
            (Penalised { pending: a }, Penalised { pending: b }) => Some(a.cmp(&b)),
            (Penalised { .. }, Measured { .. }) => Some(Ordering::Greater),
            (Measured { .. }, Penalised { .. }) => Some(Ordering::Less),
            (
                Measured {
                    load: a,
                    capacity: ca,
                    stamp: sa,
                    ..
                },
                Measured {
                    load: b,
                    capacity: cb,
                    stamp: sb,
                    ..
                },
            ) => {
                // a / ca against b / cb, both as of the later stamp (the
                // older one has decayed more).
                let (a, b) = (a * cb, b * ca);
                let (a, b) = if sa <= sb {
                    (a * decay_between(sa, sb), b)
                } else {
                    (a, b * decay_between(sb, sa))
                };
                a.partial_cmp(&b)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::InFlight;
    use crate::balance::test_support::Fixture;
    use crate::clock;
    use std::time::Duration;

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

    /// One client, one request at a time, three equal backends, and the
    /// very first answer slow (a cold backend): nothing is ever pending, so
    /// latency alone decides, and a plain peak-EWMA keeps the backend that
    /// answered slowly once out for tens of seconds (its estimate decays
    /// with a 10 s constant). Every backend must keep its share.
    #[tokio::test(start_paused = true)]
    async fn a_sequential_client_keeps_every_backend_in_use() {
        fastrand::seed(11);
        let fixture = Fixture::new(PowerOfTwoChoices, &[1, 1, 1]);
        let mut tally = [0usize; 3];
        for request in 0..150 {
            let index = fixture.pick().unwrap();
            let _in_flight = InFlight::begin(fixture.backends[index].clone());
            let started = clock::now();
            let rtt = if request == 0 { 50 * MS } else { MS };
            tokio::time::advance(Duration::from_nanos(rtt)).await;
            let now = clock::now();
            fixture.backends[index]
                .state()
                .observe_latency(now - started, now);
            tally[index] += 1;
        }
        assert!(tally.iter().all(|&n| n >= 25), "{tally:?}");
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
