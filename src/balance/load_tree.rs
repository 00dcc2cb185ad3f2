//! The tree of loads behind least-connections: an 8-ary tournament tree
//! whose nodes hold the lowest load below them, updated without a lock as
//! in-flight counts change, and walked from the top by a pick (one cache
//! line per level: five levels at 10,000 backends).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::Candidates;
use crate::backend::{Backend, BackendState};
use crate::clock;

/// Bits of a node value that count the leaves sharing the minimum.
const COUNT_BITS: u32 = 20;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// The load of an ineligible leaf: above every real load.
const KEY_MAX: u64 = (1 << (64 - COUNT_BITS)) - 1;
const INELIGIBLE: u64 = KEY_MAX << COUNT_BITS;
/// In-flight counts are clamped here so keys fit their bits.
const MAX_COUNTED: u64 = (1 << COUNT_BITS) - 1;

/// Children per node: eight packed values fill one cache line, so each
/// level of a walk costs one line, and 10,000 backends are five levels deep.
const FANOUT: usize = 8;

/// A complete 8-ary tree whose nodes hold the minimum load of their subtree
/// and how many leaves have it, packed in one atomic: `load << 20 | count`.
///
/// Levels are stored one after another without a root: level 1 is nodes
/// `0..8`, and the children of node `i` are `8(i + 1)..8(i + 1) + 8`, a
/// cache-line-aligned group. Leaf `j` is node `first_leaf + j`.
pub(super) struct LoadTree {
    first_leaf: usize,
    nodes: Box<[Group]>,
    weights: Box<[u64]>,
}

/// Eight sibling nodes on one cache line.
#[repr(align(64))]
struct Group([AtomicU64; FANOUT]);

impl LoadTree {
    pub(super) fn new(backends: &[Backend]) -> Self {
        // Levels until there is a leaf per backend.
        let mut width = FANOUT;
        let mut first_leaf = 0;
        while width < backends.len() {
            first_leaf = FANOUT * (first_leaf + 1);
            width *= FANOUT;
        }
        let groups = (first_leaf + width) / FANOUT;
        Self {
            first_leaf,
            nodes: (0..groups)
                .map(|_| Group(std::array::from_fn(|_| AtomicU64::new(INELIGIBLE))))
                .collect(),
            weights: backends.iter().map(|b| u64::from(b.weight())).collect(),
        }
    }

    #[inline]
    fn node(&self, index: usize) -> &AtomicU64 {
        &self.nodes[index / FANOUT].0[index % FANOUT]
    }

    /// The group holding the children of `index`.
    #[inline]
    fn children(&self, index: usize) -> &[AtomicU64; FANOUT] {
        &self.nodes[index + 1].0
    }

    /// The packed value of a leaf: its load key and a count of 1.
    fn leaf_value(&self, leaf: usize, state: &BackendState) -> u64 {
        if !state.eligible_by_flags() {
            return INELIGIBLE;
        }
        // (in_flight + 1) / (weight × share), as a fixed-point number whose
        // resolution separates consecutive in-flight counts at any weight.
        let effective = ((self.weights[leaf] * u64::from(state.share_at(clock::now))) >> 10).max(1);
        let in_flight = u64::from(state.in_flight()).min(MAX_COUNTED - 1) + 1;
        let key = ((in_flight << 24) / effective).min(KEY_MAX - 1);
        (key << COUNT_BITS) | 1
    }

    pub(super) fn store_leaf(&self, leaf: usize, state: &BackendState) {
        self.node(self.first_leaf + leaf)
            .store(self.leaf_value(leaf, state), Relaxed);
    }

    pub(super) fn rebuild_inner_nodes(&self) {
        for index in (0..self.first_leaf).rev() {
            self.node(index).store(self.combined(index), Relaxed);
        }
    }

    /// The value node `index` should hold, from its children.
    fn combined(&self, index: usize) -> u64 {
        self.children(index)
            .iter()
            .map(|child| child.load(Relaxed))
            .fold(INELIGIBLE, combine)
    }

    /// Recomputes the ancestors of `leaf`, stopping where nothing changes.
    ///
    /// Each node is replaced by compare-and-swap against the value its
    /// children gave when read, retried on conflict: whichever update runs
    /// last reads all children after all were written, so no change is lost
    /// to a race.
    pub(super) fn propagate(&self, leaf: usize) {
        let mut index = self.first_leaf + leaf;
        while index >= FANOUT {
            let parent = index / FANOUT - 1;
            let node = self.node(parent);
            let mut current = node.load(Relaxed);
            loop {
                let wanted = self.combined(parent);
                if wanted == current {
                    return;
                }
                match node.compare_exchange_weak(current, wanted, Relaxed, Relaxed) {
                    Ok(_) => break,
                    Err(actual) => current = actual,
                }
            }
            index = parent;
        }
    }

    /// The best available leaf: straight down the lowest loads when the leaf
    /// found there is available (a loop, nothing kept per level), else the
    /// backtracking [`descend`](Self::descend) from the top.
    #[inline]
    pub(super) fn walk(
        &self,
        candidates: &Candidates<'_>,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        let mut first = 0;
        let mut known = None;
        loop {
            let (slot, key) = choose_in(&self.nodes.get(first / FANOUT)?.0, known, rng)?;
            let index = first + slot;
            known = Some(key);
            if index >= self.first_leaf {
                let leaf = index - self.first_leaf;
                if leaf < candidates.len() && candidates.is_available(leaf) {
                    return Some(leaf);
                }
                // Tried already, or ineligible since the tree last heard.
                return self.descend(0, candidates, rng);
            }
            first = FANOUT * (index + 1);
        }
    }

    /// The best available leaf in the group starting at `first`: into the
    /// lowest load first, among equal loads at random weighted by how many
    /// leaves tie, and on to the next best when a subtree holds nothing
    /// available.
    pub(super) fn descend(
        &self,
        first: usize,
        candidates: &Candidates<'_>,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        let group = &self.nodes[first / FANOUT].0;
        let mut values: [u64; FANOUT] = std::array::from_fn(|i| group[i].load(Relaxed));
        loop {
            let (slot, _) = choose(&values, None, rng)?;
            let index = first + slot;
            let found = if index >= self.first_leaf {
                let leaf = index - self.first_leaf;
                (leaf < candidates.len() && candidates.is_available(leaf)).then_some(leaf)
            } else {
                self.descend(FANOUT * (index + 1), candidates, rng)
            };
            if found.is_some() {
                return found;
            }
            // Nothing available down there: try the next best sibling.
            values[slot] = INELIGIBLE;
        }
    }
}

/// A slot among those holding the lowest load, drawn with a chance
/// proportional to how many leaves share it there, and that load; `None`
/// when all eight are ineligible.
///
/// Every level of a walk runs this, and the next level's load waits for
/// it, so it is kept short and free of branches on the data (the draw
/// lands on a random slot, which a search that exits early mispredicts
/// about once per level). Below the top the lowest load is known already:
/// it is the value of the parent the walk came from (`known`), so only if
/// no child holds it any more (the loads moved meanwhile) are the eight
/// compared. The tied counts add up to running totals, the draw is scaled
/// into their sum by one multiplication (Lemire's, without the rejection
/// step: a bias below 2^-40 at any real count), and a three-step binary
/// search finds the first total above it. Counts need no floor: every
/// value below `KEY_MAX` counts at least its own leaf, and an ineligible
/// one counts 0.
#[inline(always)]
fn choose(
    values: &[u64; FANOUT],
    known: Option<u64>,
    rng: &mut fastrand::Rng,
) -> Option<(usize, u64)> {
    let tied = |best: u64| -> [u64; FANOUT] {
        std::array::from_fn(|i| {
            let value = values[i];
            if value >> COUNT_BITS == best {
                value & COUNT_MASK
            } else {
                0
            }
        })
    };
    // Running totals t[i] = w[0] + ... + w[i], as a tree of additions.
    let totals = |w: [u64; FANOUT]| {
        let (w01, w23, w45, w67) = (w[0] + w[1], w[2] + w[3], w[4] + w[5], w[6] + w[7]);
        let (t1, t3) = (w01, w01 + w23);
        let t5 = t3 + w45;
        [w[0], t1, t1 + w[2], t3, t3 + w[4], t5, t5 + w[6], t5 + w67]
    };
    let lowest = || {
        values
            .iter()
            .fold(KEY_MAX, |best, value| best.min(value >> COUNT_BITS))
    };
    let mut best = known.unwrap_or_else(lowest);
    let mut t = totals(tied(best));
    if t[7] == 0 {
        // All ineligible, or the parent's load is no child's any more.
        best = lowest();
        if best == KEY_MAX {
            return None;
        }
        t = totals(tied(best));
    }
    let [t0, t1, t2, t3, t4, t5, t6, t7] = t;
    let draw = ((u128::from(rng.u64(..)) * u128::from(t7)) >> 64) as u64;
    // The first total above the draw, by a binary search in registers.
    let upper = t3 <= draw;
    let (quarter, low, high) = if upper { (t5, t4, t6) } else { (t1, t0, t2) };
    let second = quarter <= draw;
    let last = if second { high } else { low };
    let slot = 4 * usize::from(upper) + 2 * usize::from(second) + usize::from(last <= draw);
    Some((slot, best))
}

/// [`choose`] on a group as it is now. Not inlined: inside the walk's loop
/// the compiler turns `choose`'s conditional moves into branches on the
/// data. In the pick bench those branches predict well (its weights repeat
/// every four backends, so every group ties alike) and inlining measured a
/// few percent faster; with real, varied loads they would mispredict about
/// twice per level (callgrind's model: 3.3 mispredictions per pick at
/// 10,000 backends inlined, 1.0 not).
#[inline(never)]
fn choose_in(
    group: &[AtomicU64; FANOUT],
    known: Option<u64>,
    rng: &mut fastrand::Rng,
) -> Option<(usize, u64)> {
    choose(&std::array::from_fn(|i| group[i].load(Relaxed)), known, rng)
}

/// The lower of two packed values; on equal loads, the counts add up.
fn combine(a: u64, b: u64) -> u64 {
    let (ka, kb) = (a >> COUNT_BITS, b >> COUNT_BITS);
    match ka.cmp(&kb) {
        std::cmp::Ordering::Less => a,
        std::cmp::Ordering::Greater => b,
        std::cmp::Ordering::Equal if ka == KEY_MAX => INELIGIBLE,
        std::cmp::Ordering::Equal => {
            (ka << COUNT_BITS) | ((a & COUNT_MASK) + (b & COUNT_MASK)).min(COUNT_MASK)
        }
    }
}

impl LoadTree {
    /// The number of backends (leaves in use).
    pub(super) fn len(&self) -> usize {
        self.weights.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choose_draws_among_the_lowest_by_their_counts() {
        let value = |key: u64, count: u64| (key << COUNT_BITS) | count;
        let mut values = [INELIGIBLE; FANOUT];
        values[..5].copy_from_slice(&[
            value(5, 1),
            value(3, 2),
            value(3, 1),
            value(9, 1),
            value(3, 5),
        ]);
        let mut tally = [0usize; FANOUT];
        let mut rng = fastrand::Rng::new();
        for _ in 0..8000 {
            tally[choose(&values, None, &mut rng).unwrap().0] += 1;
            // Told the lowest load (as a walk's parent tells it), or told a
            // stale one no child holds: the same draw.
            for known in [3, 4] {
                let (slot, key) = choose(&values, Some(known), &mut rng).unwrap();
                assert!([1, 2, 4].contains(&slot) && key == 3);
            }
        }
        assert_eq!(tally[0] + tally[3] + tally[5..].iter().sum::<usize>(), 0);
        // 2 : 1 : 5 of 8000, within about five standard deviations.
        for (slot, want) in [(1, 2000), (2, 1000), (4, 5000)] {
            assert!(tally[slot].abs_diff(want) < 250, "{tally:?}");
        }
        assert_eq!(choose(&[INELIGIBLE; FANOUT], None, &mut rng), None);
        assert_eq!(choose(&[INELIGIBLE; FANOUT], Some(3), &mut rng), None);
    }
}
