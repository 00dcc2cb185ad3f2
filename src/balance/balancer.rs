//! A strategy bound to a backend set, with its tables kept current.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use arc_swap::{ArcSwap, Guard};

use super::strategy::slots;
use super::{Candidates, RequestRef, Strategy};
use crate::backend::{Backend, BackendId, BackendSet, InFlight, Snapshot, SnapshotListener};
use crate::clock::Nanos;

/// A [`Strategy`] bound to a [`BackendSet`]: the set rebuilds the strategy's
/// table whenever it changes (off the request path), and
/// [`pick`](Self::pick) reads the current snapshot and table without a lock.
///
/// [`LoadBalance`](crate::LoadBalance) holds one; use it directly to pick
/// backends outside a tower stack. [`pick`](Self::pick) returns the
/// backend's handle (one reference-count increment);
/// [`pick_ref`](Self::pick_ref) returns the pick itself, a position in the
/// snapshot, for callers that clone the handle only when they keep it.
///
/// ```
/// use tower_lb::balance::{Balancer, RoundRobin};
/// use tower_lb::BackendSet;
///
/// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002".parse()?]);
/// let balancer = Balancer::new(&set, RoundRobin::new());
/// let request = http::Request::new(());
/// let first = balancer.pick(&request).unwrap();
/// let second = balancer.pick(&request).unwrap();
/// assert_ne!(first.address(), second.address());
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
pub struct Balancer<S: Strategy> {
    strategy: S,
    /// The set it is bound to, so that a builder can bind a copy.
    set: BackendSet,
    current: ArcSwap<Prepared<S::Table>>,
    panic_routing: AtomicBool,
    /// Requests in flight per unit of weight a backend may hold; 0: none.
    max_in_flight: AtomicU32,
}

struct Prepared<T> {
    snapshot: Arc<Snapshot>,
    table: T,
}

impl<S: Strategy> Balancer<S> {
    /// Binds `strategy` to `set`; the table is built at once.
    pub fn new(set: &BackendSet, strategy: S) -> Arc<Self> {
        let empty = Prepared {
            snapshot: Arc::new(Snapshot::default()),
            table: strategy.build(&[]),
        };
        let balancer = Arc::new(Self {
            strategy,
            set: set.clone(),
            current: ArcSwap::from_pointee(empty),
            panic_routing: AtomicBool::new(false),
            max_in_flight: AtomicU32::new(0),
        });
        let weak: Weak<Self> = Arc::downgrade(&balancer);
        set.listen(weak);
        balancer
    }

    /// Turns Envoy's panic mode on or off for this balancer, at run time:
    /// when no backend is eligible, send to every member that is not
    /// drained rather than fail everyone (the health checks may be wrong, or
    /// some backends may limp along). Off by default: a 503 is the honest
    /// answer when every backend is known to be down.
    ///
    /// Every service sharing this balancer sees the change at its next
    /// pick: this is the switch an admin API flips. To configure a layer
    /// before it serves, use
    /// [`LoadBalanceLayer::panic_routing`](crate::LoadBalanceLayer::panic_routing).
    pub fn set_panic_routing(&self, on: bool) {
        self.panic_routing.store(on, Relaxed);
    }

    /// Whether panic routing is on.
    pub fn panic_routing(&self) -> bool {
        self.panic_routing.load(Relaxed)
    }

    /// Limits every backend to `limit` requests in flight per unit of its
    /// weight (HAProxy's `maxconn`, nginx's `max_conns`), at run time; 0
    /// removes the limit (the default).
    ///
    /// A backend at its limit is not available to any strategy: the
    /// request goes to another backend, and when every eligible backend is
    /// full the pick finds none (a 503, or a wait in a
    /// [`QueueLayer`](super::QueueLayer) above the balancer). The limit is
    /// exact: [`LoadBalance`](crate::LoadBalance) takes the picked
    /// backend's slot with [`claim`](Self::claim), one compare-and-swap
    /// that fails when racing requests took the last slot since the pick,
    /// and then picks again without that backend. Without a limit a
    /// request costs a plain increment, as before limits existed.
    ///
    /// ```
    /// use tower_lb::balance::{Balancer, RoundRobin};
    /// use tower_lb::BackendSet;
    ///
    /// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?]);
    /// let balancer = Balancer::new(&set, RoundRobin::new());
    /// balancer.set_max_in_flight(1);
    /// let request = http::Request::new(());
    /// let held = balancer.claim(&request).unwrap();
    /// assert!(balancer.claim(&request).is_none(), "the one backend is full");
    /// drop(held);
    /// assert!(balancer.claim(&request).is_some());
    /// # Ok::<(), tower_lb::ConfigError>(())
    /// ```
    pub fn set_max_in_flight(&self, limit: u32) {
        self.max_in_flight.store(limit, Relaxed);
    }

    /// The limit per unit of weight (0: none).
    pub fn max_in_flight(&self) -> u32 {
        self.max_in_flight.load(Relaxed)
    }

    /// Picks a backend for `request` and counts the request in flight
    /// there, within the backend's limit when there is one: what
    /// [`LoadBalance`](crate::LoadBalance) does per request. `None` when
    /// no backend it may go to has room.
    ///
    /// A [`pick`](Self::pick) only looks: its backend may be full by the
    /// time a caller counts a request there. A claim is exact: when the
    /// picked backend's last slot went to a racing request in between, the
    /// claim picks again with that backend left out (as a retry leaves
    /// out the backends it tried), until it gets a slot or none is left.
    pub fn claim<B>(&self, request: &http::Request<B>) -> Option<InFlight> {
        self.claim_at(RequestRef::from(request), tried(request), None)
    }

    /// The claim itself, given what the service already read.
    #[inline]
    pub(crate) fn claim_at(
        &self,
        request: RequestRef<'_>,
        tried: &[BackendId],
        now: Option<Nanos>,
    ) -> Option<InFlight> {
        let limit = self.max_in_flight.load(Relaxed);
        let picked = self.pick_limited(request, tried, now, limit)?;
        if limit == 0 {
            return Some(InFlight::begin(picked.backend().clone()));
        }
        let backend = picked.backend();
        let claimed = InFlight::claim(backend, slots(limit, backend));
        if claimed.is_some() {
            return claimed;
        }
        let lost = backend.id();
        // Not held across the next picks: each takes a snapshot guard.
        drop(picked);
        self.claim_contended(request, tried, now, limit, lost)
    }

    /// Picks again after a lost race for `lost`'s last slot, leaving out
    /// every backend whose claim failed: each round leaves out one more, so
    /// it ends. Only contention reaches here, so the list of those left out
    /// may allocate.
    #[cold]
    fn claim_contended(
        &self,
        request: RequestRef<'_>,
        tried: &[BackendId],
        now: Option<Nanos>,
        limit: u32,
        lost: BackendId,
    ) -> Option<InFlight> {
        let mut left_out = Vec::with_capacity(tried.len() + 4);
        left_out.extend_from_slice(tried);
        left_out.push(lost);
        loop {
            let picked = self.pick_limited(request, &left_out, now, limit)?;
            let backend = picked.backend();
            if left_out.contains(&backend.id()) {
                // A strategy that ignored the exclusion would have this spin.
                return None;
            }
            if let Some(claimed) = InFlight::claim(backend, slots(limit, backend)) {
                return Some(claimed);
            }
            left_out.push(backend.id());
        }
    }

    /// Picks a backend for `request`, skipping those in its
    /// [`Tried`](super::Tried) extension. The pick counts nothing; see
    /// [`claim`](Self::claim) to send a request there.
    pub fn pick<B>(&self, request: &http::Request<B>) -> Option<Backend> {
        self.pick_ref(request)
            .map(|picked| picked.backend().clone())
    }

    /// Picks like [`pick`](Self::pick), without cloning the backend's
    /// handle: the result borrows the snapshot the pick was made in.
    ///
    /// A handle is an `Arc`, and cloning it writes the backend's reference
    /// count: at 10,000 backends a cache miss, and with several threads a
    /// cache line they pass back and forth. A pick itself writes nothing
    /// shared (bar round-robin's one position, when it is shared), so
    /// callers that only look, or that pick again, scale across threads.
    pub fn pick_ref<B>(&self, request: &http::Request<B>) -> Option<Picked<S>> {
        self.pick_at(RequestRef::from(request), tried(request), None)
    }

    /// The pick itself, given what the service already read.
    #[inline]
    pub(crate) fn pick_at(
        &self,
        request: RequestRef<'_>,
        tried: &[BackendId],
        now: Option<Nanos>,
    ) -> Option<Picked<S>> {
        self.pick_limited(request, tried, now, self.max_in_flight.load(Relaxed))
    }

    /// The pick under a given limit per unit of weight (0: none): a queue
    /// asks with none to tell "all full" from "none eligible".
    #[inline]
    pub(crate) fn pick_limited(
        &self,
        request: RequestRef<'_>,
        tried: &[BackendId],
        now: Option<Nanos>,
        limit: u32,
    ) -> Option<Picked<S>> {
        let prepared = self.current.load();
        let candidates = Candidates::new(&prepared.snapshot, request, tried, now).limited(limit);
        let index = match self.strategy.pick(&prepared.table, &candidates) {
            Some(index) => index,
            None if self.panic_routing.load(Relaxed) => {
                let candidates = candidates.panicking();
                self.strategy.pick(&prepared.table, &candidates)?
            }
            None => return None,
        };
        // The strategy's contract; checked so that `Picked::backend` cannot
        // fail.
        (index < prepared.snapshot.len()).then_some(Picked { prepared, index })
    }

    /// Whether `request` would find a backend with room: one below the
    /// limit, or only full ones, or none eligible at all. A scan, not a
    /// pick (a pick would move round-robin's position): a queue asks this
    /// before a request goes down to the balancer's own pick.
    pub(crate) fn room(&self, request: RequestRef<'_>, tried: &[BackendId]) -> Room {
        let prepared = self.current.load();
        let limit = self.max_in_flight.load(Relaxed);
        let mut candidates = Candidates::new(&prepared.snapshot, request, tried, None);
        if self.panic_routing.load(Relaxed)
            && !(0..candidates.len()).any(|i| candidates.is_available(i))
        {
            candidates = candidates.panicking();
        }
        let candidates = candidates.limited(limit);
        let any = |c: &Candidates<'_>| (0..c.len()).any(|i| c.is_available(i));
        if limit == 0 || any(&candidates) {
            return Room::Free;
        }
        if any(&candidates.limited(0)) {
            Room::Full
        } else {
            Room::NoneEligible
        }
    }

    /// The snapshot the current table was built from.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.load().snapshot)
    }

    /// The strategy.
    pub fn strategy(&self) -> &S {
        &self.strategy
    }

    /// The set this balancer is bound to.
    pub fn backend_set(&self) -> &BackendSet {
        &self.set
    }
}

/// The backends `request` already tried (its [`Tried`](super::Tried)
/// extension).
fn tried<B>(request: &http::Request<B>) -> &[BackendId] {
    request
        .extensions()
        .get::<super::Tried>()
        .map_or(&[][..], |t| t.as_slice())
}

/// What [`Balancer::room`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Room {
    /// Some backend the request may go to is below its limit.
    Free,
    /// Backends are eligible, and every one is at its limit.
    Full,
    /// No backend is eligible, full or not.
    NoneEligible,
}

/// A backend picked for one request: its position in the snapshot the pick
/// was made in, which this keeps alive.
///
/// Hold it for the moment of deciding, not for a request's life (it pins
/// a snapshot through one of the thread's few fast snapshot guards); clone
/// [`backend`](Self::backend) for anything that outlives it.
pub struct Picked<S: Strategy> {
    prepared: Guard<Arc<Prepared<S::Table>>>,
    index: usize,
}

impl<S: Strategy> Picked<S> {
    /// The backend's position in [`snapshot`](Self::snapshot).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The picked backend.
    pub fn backend(&self) -> &Backend {
        &self.prepared.snapshot.backends()[self.index]
    }

    /// The snapshot the pick was made in.
    pub fn snapshot(&self) -> &Snapshot {
        &self.prepared.snapshot
    }
}

impl<S: Strategy> fmt::Debug for Picked<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picked")
            .field("index", &self.index)
            .field("backend", &format_args!("{}", self.backend()))
            .finish()
    }
}

impl<S: Strategy> SnapshotListener for Balancer<S> {
    fn published(&self, snapshot: &Arc<Snapshot>) {
        let table = self.strategy.build(snapshot.backends());
        self.current.store(Arc::new(Prepared {
            snapshot: Arc::clone(snapshot),
            table,
        }));
    }
}

impl<S: Strategy + fmt::Debug> fmt::Debug for Balancer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("strategy", &self.strategy)
            .field("backends", &self.current.load().snapshot.len())
            .field("panic_routing", &self.panic_routing())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::balance::test_support::backends;
    use crate::balance::{AnyStrategy, STRATEGY_NAMES};

    #[test]
    fn every_strategy_skips_full_backends() {
        for name in STRATEGY_NAMES {
            let set = BackendSet::new(backends(&[1, 2, 1]));
            let balancer = Balancer::new(&set, name.parse::<AnyStrategy>().unwrap());
            balancer.set_max_in_flight(2);
            let request = http::Request::new(());
            let mut held = Vec::new();
            while let Some(backend) = balancer.pick(&request) {
                held.push(InFlight::begin(backend));
                assert!(held.len() <= 8, "{name}: past the limits");
            }
            let loads: Vec<u32> = set
                .snapshot()
                .backends()
                .iter()
                .map(|b| b.state().in_flight())
                .collect();
            assert_eq!(loads, [2, 4, 2], "{name}: 2 per unit of weight");
            assert_eq!(
                balancer.room(RequestRef::from(&request), &[]),
                Room::Full,
                "{name}"
            );
            held.pop();
            assert!(balancer.pick(&request).is_some(), "{name}: a freed slot");
            balancer.set_max_in_flight(0);
            assert!(balancer.pick(&request).is_some(), "{name}: no limit");
        }
    }

    /// The first available backend, whose last slot a "racing request"
    /// takes between this pick and the claim, for the first `steals` picks.
    #[derive(Debug, Default)]
    struct Raced {
        steals: usize,
        stolen: Mutex<Vec<InFlight>>,
    }

    impl Strategy for Raced {
        type Table = ();
        fn build(&self, _backends: &[Backend]) {}
        fn pick(&self, _table: &(), candidates: &Candidates<'_>) -> Option<usize> {
            let index = (0..candidates.len()).find(|&i| candidates.is_available(i))?;
            let mut stolen = self.stolen.lock().unwrap();
            if stolen.len() < self.steals {
                stolen.push(InFlight::begin(candidates.backends()[index].clone()));
            }
            Some(index)
        }
    }

    #[test]
    fn a_claim_that_loses_the_race_picks_again_without_that_backend() {
        let set = BackendSet::new(backends(&[1, 1, 1]));
        let loads = || -> Vec<u32> {
            let snapshot = set.snapshot();
            snapshot
                .backends()
                .iter()
                .map(|b| b.state().in_flight())
                .collect()
        };
        let request = http::Request::new(());
        for (steals, claimed) in [(0, Some(0)), (1, Some(1)), (2, Some(2)), (3, None)] {
            let balancer = Balancer::new(
                &set,
                Raced {
                    steals,
                    ..Raced::default()
                },
            );
            balancer.set_max_in_flight(1);
            let held = balancer.claim(&request);
            let index = held
                .as_ref()
                .map(|h| h.backend().address().authority().host().to_owned());
            let expected = claimed.map(|i: usize| format!("10.0.0.{}", i + 1));
            assert_eq!(index, expected, "{steals} lost races");
            let mut expected_loads = vec![0; 3];
            for slot in expected_loads.iter_mut().take(steals) {
                *slot = 1;
            }
            if let Some(i) = claimed {
                expected_loads[i] = 1;
            }
            assert_eq!(
                loads(),
                expected_loads,
                "never above 1, {steals} lost races"
            );
            drop(held);
            drop(balancer);
            assert_eq!(loads(), [0, 0, 0], "every count released");
        }
    }

    #[test]
    fn without_a_limit_a_claim_always_counts() {
        let set = BackendSet::new(backends(&[1]));
        let balancer = Balancer::new(
            &set,
            Raced {
                steals: 1,
                ..Raced::default()
            },
        );
        let request = http::Request::new(());
        let held = balancer.claim(&request);
        assert!(held.is_some(), "no limit: the stolen slot does not matter");
        assert_eq!(set.snapshot().backends()[0].state().in_flight(), 2);
    }
}
