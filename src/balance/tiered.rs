//! Priority tiers (Envoy's priority levels; nginx's and HAProxy's `backup`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

use super::{Candidates, Strategy};
use crate::backend::{Backend, BackendState, LoadWatch, Watching};

/// Envoy's over-provisioning factor, in hundredths: a tier with at least
/// 1/1.4 of its members healthy takes all of its traffic.
const OVERPROVISIONING: u64 = 140;
/// Loads are in basis points of the traffic.
const WHOLE: u64 = 10_000;

/// Sends traffic to the lowest priority tier ([`Backend::priority`], 0 by
/// default) and spills to the next tiers as it loses healthy members, with
/// `inner` choosing within a tier.
///
/// The split is Envoy's priority load: a tier's *health* is
/// `min(100 %, 1.4 × healthy / members)`; tiers take traffic in order, each
/// up to its health, until 100 % is placed, and when all tiers' health sums
/// below 100 % each gets its health's share of the sum. So three primaries
/// and a backup: all healthy, none to the backup; one primary down, 6.7 %
/// to the backup (1 − 1.4 × 2/3); two down, 53.3 %; all down, all of it.
/// The factor 1.4 keeps a tier that lost a few members from shedding load
/// it can still carry. A request whose tier has nothing left for it (all
/// tried, full) goes to the other tiers, lowest first. In panic mode
/// ([`Balancer::set_panic_routing`](super::Balancer::set_panic_routing)),
/// when no tier has a healthy member, the lowest tier with members takes
/// everything: panic routing per tier, as Envoy does it.
///
/// The healthy counts are kept by a watcher on the members' eligibility (as
/// least-connections' tree is), so a pick reads one counter per tier and
/// draws one random number; with a single tier (every member at one
/// priority, the usual set) a pick goes straight to `inner` and nothing
/// watches, since a watcher hears every request start and end; within the tier `inner` sees only that tier's
/// members as available. `inner` skips the other tiers' members one by one,
/// so a strategy that scans (round-robin among many backup members, say)
/// pays for the members of the tiers it does not use.
///
/// ```
/// use tower_lb::balance::{RoundRobin, Tiered};
/// use tower_lb::{BackendSet, LoadBalanceLayer};
///
/// let set = BackendSet::new([
///     "http://127.0.0.1:9001".parse()?,
///     "http://127.0.0.1:9002".parse()?,
///     "http://127.0.0.1:9003,backup".parse()?,
/// ]);
/// let layer = LoadBalanceLayer::new(&set, Tiered::new(RoundRobin::new()));
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Tiered<S> {
    inner: S,
}

impl<S> Tiered<S> {
    /// Tiers over `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The strategy within a tier.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

/// [`Tiered`]'s table: the inner strategy's, and the tiers' healthy counts.
pub struct TieredTable<T> {
    inner: T,
    tiers: Arc<Tiers>,
    health: Health,
}

/// How the tiers' healthy counts are known.
enum Health {
    /// Kept by a watcher on the members: more than one tier, whose picks
    /// read the counts.
    Watched { _watching: Watching },
    /// Counted when asked ([`TieredTable::loads`]): one tier, whose picks
    /// never read them. A watcher is told of every request's start and end
    /// on each member (a load of the watcher list and a call each), which
    /// the usual single-tier set would pay for nothing.
    Counted(Box<[Backend]>),
}

/// The tiers of one snapshot.
struct Tiers {
    /// The distinct priorities, lowest first.
    levels: Box<[u8]>,
    members: Box<[u32]>,
    healthy: Box<[AtomicU32]>,
    /// Per member, its position in `levels`.
    level_of: Box<[usize]>,
    /// Per member, whether it was last counted healthy.
    seen: Box<[AtomicBool]>,
}

impl Tiers {
    fn new(backends: &[Backend]) -> Self {
        let mut levels: Vec<u8> = backends.iter().map(Backend::priority).collect();
        levels.sort_unstable();
        levels.dedup();
        let level_of: Box<[usize]> = backends
            .iter()
            .map(|b| levels.binary_search(&b.priority()).unwrap_or(0))
            .collect();
        let mut members = vec![0u32; levels.len()];
        for &level in level_of.iter() {
            members[level] += 1;
        }
        Self {
            healthy: levels.iter().map(|_| AtomicU32::new(0)).collect(),
            levels: levels.into_boxed_slice(),
            members: members.into_boxed_slice(),
            level_of,
            seen: backends.iter().map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// Tier `i`'s health: `min(100 %, 1.4 × healthy / members)`, in basis
    /// points.
    #[inline]
    fn health(&self, i: usize) -> u64 {
        let members = u64::from(self.members[i]).max(1);
        let healthy = u64::from(self.healthy[i].load(Relaxed));
        (healthy * OVERPROVISIONING * WHOLE / 100 / members).min(WHOLE)
    }

    /// Each tier's share of new requests now, in basis points.
    fn loads(&self) -> Vec<u64> {
        let health: Vec<u64> = (0..self.levels.len()).map(|i| self.health(i)).collect();
        split(&health)
    }

    /// Sets the healthy counts from the members' states now.
    fn count(&self, backends: &[Backend]) {
        for (level, healthy) in self.healthy.iter().enumerate() {
            let n = backends
                .iter()
                .zip(self.level_of.iter())
                .filter(|&(b, &l)| l == level && b.state().eligible_by_flags())
                .count();
            healthy.store(u32::try_from(n).unwrap_or(u32::MAX), Relaxed);
        }
    }

    /// The tier a request drawing `draw` (in `0..WHOLE`) goes to: the same
    /// split as [`split`], without allocating; `None` when no tier has a
    /// healthy member.
    #[inline]
    fn choose(&self, mut draw: u64) -> Option<usize> {
        let n = self.levels.len();
        let total = (0..n).map(|i| self.health(i)).sum::<u64>().min(WHOLE);
        if total == 0 {
            return None;
        }
        let mut left = WHOLE;
        for i in 0..n {
            let load = (self.health(i) * WHOLE / total).min(left);
            if draw < load {
                return Some(i);
            }
            draw -= load;
            left -= load;
        }
        // The rounding's remainder: the first tier with health.
        (0..n).find(|&i| self.health(i) > 0)
    }
}

/// Envoy's priority load from each tier's health (basis points): filled in
/// order up to each health, scaled up when the healths sum below 100 %.
fn split(health: &[u64]) -> Vec<u64> {
    let total: u64 = health.iter().sum::<u64>().min(WHOLE);
    let mut loads = vec![0; health.len()];
    if total == 0 {
        return loads;
    }
    let mut left = WHOLE;
    for (load, &h) in loads.iter_mut().zip(health) {
        *load = (h * WHOLE / total).min(left);
        left -= *load;
    }
    // Rounding: the rest to the first tier with health.
    if let Some(first) = health.iter().position(|&h| h > 0) {
        loads[first] += left;
    }
    loads
}

impl LoadWatch for Tiers {
    fn load_changed(&self, leaf: usize, state: &BackendState) {
        let (Some(seen), Some(&level)) = (self.seen.get(leaf), self.level_of.get(leaf)) else {
            return;
        };
        let healthy = state.eligible_by_flags();
        // Read first: this hears every request's start and end, and a
        // swap that changes nothing would still take the line from the
        // other threads.
        if seen.load(Relaxed) != healthy && seen.swap(healthy, Relaxed) != healthy {
            if healthy {
                self.healthy[level].fetch_add(1, Relaxed);
            } else {
                self.healthy[level].fetch_sub(1, Relaxed);
            }
        }
    }
}

impl<S: Strategy> Strategy for Tiered<S> {
    type Table = TieredTable<S::Table>;

    fn build(&self, backends: &[Backend]) -> Self::Table {
        let tiers = Arc::new(Tiers::new(backends));
        let health = if tiers.levels.len() > 1 {
            Health::Watched {
                _watching: Watching::new(backends, tiers.clone()),
            }
        } else {
            Health::Counted(backends.into())
        };
        TieredTable {
            inner: self.inner.build(backends),
            tiers,
            health,
        }
    }

    fn pick(&self, table: &Self::Table, candidates: &Candidates<'_>) -> Option<usize> {
        let levels = &table.tiers.levels;
        if levels.len() <= 1 {
            return self.inner.pick(&table.inner, candidates);
        }
        let in_tier = |i: usize| {
            self.inner
                .pick(&table.inner, &candidates.in_tier(levels[i]))
        };
        let in_order = || (0..levels.len()).find_map(in_tier);
        if candidates.is_panicking() {
            return in_order();
        }
        let chosen = table.tiers.choose(fastrand::u64(..WHOLE))?;
        in_tier(chosen).or_else(|| (0..levels.len()).filter(|&i| i != chosen).find_map(in_tier))
    }
}

impl<T> TieredTable<T> {
    /// Each tier's priority and share of new requests now (0.0 to 1.0),
    /// lowest tier first: what a status view shows.
    pub fn loads(&self) -> Vec<(u8, f64)> {
        if let Health::Counted(backends) = &self.health {
            self.tiers.count(backends);
        }
        let loads = self.tiers.loads();
        self.tiers
            .levels
            .iter()
            .zip(loads)
            .map(|(&level, load)| (level, load as f64 / WHOLE as f64))
            .collect()
    }
}

impl<T: fmt::Debug> fmt::Debug for TieredTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredTable")
            .field("inner", &self.inner)
            .field("loads", &self.loads())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::RoundRobin;
    use crate::balance::test_support::Fixture;

    fn tiered(priorities: &[u8]) -> Fixture<Tiered<RoundRobin>> {
        let backends = crate::balance::test_support::backends(&vec![1; priorities.len()])
            .into_iter()
            .zip(priorities)
            .map(|(b, &p)| b.with_priority(p))
            .collect();
        Fixture::with_backends(Tiered::new(RoundRobin::new()), backends)
    }

    #[test]
    fn envoys_split_with_over_provisioning() {
        assert_eq!(split(&[10_000, 10_000]), [10_000, 0]);
        // Two of three primaries: 1.4 × 2/3 = 93.33 %.
        assert_eq!(split(&[9_333, 10_000]), [9_333, 667]);
        assert_eq!(split(&[4_666, 10_000]), [4_666, 5_334]);
        assert_eq!(split(&[0, 10_000]), [0, 10_000]);
        // Healths summing below 100 %: scaled up in proportion.
        assert_eq!(split(&[2_000, 3_000]), [4_000, 6_000]);
        assert_eq!(split(&[0, 0]), [0, 0]);
    }

    #[test]
    fn primaries_lost_one_by_one_spill_to_the_backup() {
        let fixture = tiered(&[0, 0, 0, 1]);
        let to_backup = |fixture: &Fixture<Tiered<RoundRobin>>| {
            (0..6000).filter(|_| fixture.pick() == Some(3)).count()
        };
        assert_eq!(to_backup(&fixture), 0, "all primaries up");
        let expected = [0.0667, 0.5333, 1.0];
        for (down, share) in expected.iter().enumerate() {
            fixture.eject(down);
            let got = to_backup(&fixture) as f64 / 6000.0;
            assert!((got - share).abs() < 0.03, "{} down: {got}", down + 1);
        }
        for i in 0..3 {
            fixture.backends[i].state().readmit(1, 0);
        }
        assert_eq!(to_backup(&fixture), 0, "all back");
        assert_eq!(fixture.table.loads(), [(0, 1.0), (1, 0.0)]);
    }

    /// One tier: nothing watches the members (their every request would
    /// be heard for nothing), and its load is counted when asked; more
    /// tiers are watched.
    #[test]
    fn a_single_tier_is_not_watched_and_its_load_is_counted_when_asked() {
        let fixture = tiered(&[2, 2, 2]);
        assert!(fixture.backends.iter().all(|b| !b.state().watched()));
        assert_eq!(fixture.table.loads(), [(2, 1.0)]);
        fixture.eject(0);
        fixture.eject(1);
        assert_eq!(
            fixture.table.loads(),
            [(2, 1.0)],
            "1.4 x 1/3 of a single tier is all there is"
        );
        fixture.eject(2);
        assert_eq!(fixture.table.loads(), [(2, 0.0)], "none healthy");
        assert_eq!(fixture.pick(), None);
        fixture.backends[2].state().readmit(1, 0);
        assert_eq!(fixture.table.loads(), [(2, 1.0)]);
        assert_eq!(fixture.pick(), Some(2));

        let tiers = tiered(&[0, 1]);
        assert!(tiers.backends.iter().all(|b| b.state().watched()));
    }

    #[test]
    fn a_tier_with_nothing_left_for_a_request_hands_it_on() {
        let fixture = tiered(&[0, 1]);
        assert_eq!(fixture.pick_excluding(&[0]), Some(1), "retry on the backup");
        fixture.eject(0);
        fixture.eject(1);
        assert_eq!(fixture.pick(), None);
    }
}
