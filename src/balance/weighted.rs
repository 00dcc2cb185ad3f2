//! Smooth weighted round-robin, nginx's sequence.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::counter::Counter;
use super::{Candidates, Strategy};
use crate::backend::Backend;

/// The longest schedule kept (entries of 4 bytes). Weights whose reduced sum
/// is larger are scaled down to fit, keeping their proportions to within one
/// part in a million.
const MAX_SCHEDULE: u64 = 1 << 20;

/// Up to this many steps × backends, the schedule is computed with nginx's
/// own algorithm, step by step; beyond, with an equivalent-in-share stride
/// scheduler in O(log n) per step (see [`WeightedRoundRobin`]).
const EXACT_WORK: u64 = 1 << 24;

/// How many schedule entries past an unavailable one are tried before a
/// linear scan.
const SKIP_AHEAD: usize = 16;

/// Smooth weighted round-robin: each backend gets requests in proportion to
/// its weight, spread out rather than in bursts.
///
/// This is nginx's algorithm (`ngx_http_upstream_get_peer`): weights 5, 1, 1
/// give `a a b a c a a` per cycle, never five `a`s in a row. nginx recomputes
/// the "current weights" of every backend per request (O(n)); here one cycle
/// of the sequence is computed when the set changes, after dividing the
/// weights by their greatest common divisor, and a pick reads the next entry
/// (O(1)). For very large sets with uneven weights (more than 16 M steps ×
/// backends) the cycle comes from a stride scheduler instead: the same shares
/// and the same smoothness, though ties may fall in another order than
/// nginx's.
///
/// An unavailable backend's turn goes to the next entries of the cycle.
///
/// As with [`RoundRobin`](super::RoundRobin), the position is one counter
/// for the process unless [`per_thread`](Self::per_thread) is chosen.
///
/// ```
/// use tower_lb::balance::WeightedRoundRobin;
/// use tower_lb::{BackendSet, LoadBalanceLayer};
///
/// let set = BackendSet::new([
///     "http://127.0.0.1:9001,weight=5".parse()?,
///     "http://127.0.0.1:9002".parse()?,
///     "http://127.0.0.1:9003".parse()?,
/// ]);
/// let layer = LoadBalanceLayer::new(set, WeightedRoundRobin::new());
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct WeightedRoundRobin {
    per_thread: bool,
}

impl WeightedRoundRobin {
    /// Smooth weighted round-robin, one sequence for all threads.
    pub fn new() -> Self {
        Self::default()
    }

    /// With a position per thread (see [`RoundRobin::per_thread`](super::RoundRobin::per_thread)).
    pub fn per_thread() -> Self {
        Self { per_thread: true }
    }
}

/// Weighted round-robin's table: one cycle of the sequence, and each
/// thread's position in it.
#[derive(Debug, Default)]
pub struct WeightedTable {
    schedule: Box<[u32]>,
    position: Counter,
}

impl Strategy for WeightedRoundRobin {
    type Table = WeightedTable;

    fn build(&self, backends: &[Backend]) -> WeightedTable {
        let weights: Vec<u64> = backends.iter().map(|b| u64::from(b.weight())).collect();
        WeightedTable {
            schedule: schedule(&reduce(weights)).into_boxed_slice(),
            position: if self.per_thread {
                Counter::per_thread()
            } else {
                Counter::shared()
            },
        }
    }

    fn pick(&self, table: &WeightedTable, candidates: &Candidates<'_>) -> Option<usize> {
        let len = table.schedule.len();
        if len == 0 {
            return None;
        }
        let at = table.position.advance(1) % len;
        let first = table.schedule[at] as usize;
        if candidates.admits(first) {
            return Some(first);
        }
        for step in 1..SKIP_AHEAD.min(len) {
            let next = table.schedule[(at + step) % len] as usize;
            if candidates.admits(next) {
                table.position.skip(step);
                return Some(next);
            }
        }
        candidates.scan_from(first + 1)
    }
}

/// Divides the weights by their gcd and scales them to fit the schedule.
fn reduce(mut weights: Vec<u64>) -> Vec<u64> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    weights.iter_mut().for_each(|w| *w /= divisor);
    let total: u64 = weights.iter().sum();
    if total > MAX_SCHEDULE {
        weights
            .iter_mut()
            .for_each(|w| *w = (*w * MAX_SCHEDULE / total).max(1));
    }
    weights
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn schedule(weights: &[u64]) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    if total.saturating_mul(weights.len() as u64) <= EXACT_WORK {
        nginx_sequence(weights, total)
    } else {
        stride_sequence(weights, total)
    }
}

/// nginx's smooth weighted round-robin, one full cycle: every step adds
/// each weight to its backend's current weight, picks the largest (the
/// first on ties) and subtracts the total from it.
fn nginx_sequence(weights: &[u64], total: u64) -> Vec<u32> {
    let total = total as i64;
    let mut current = vec![0i64; weights.len()];
    let mut sequence = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &weight) in weights.iter().enumerate() {
            current[i] += weight as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        sequence.push(best as u32);
    }
    sequence
}

/// Stride scheduling: backend i is due every `total / w_i` steps, first at
/// half a stride; the earliest due goes next. Gives every backend exactly
/// its weight per cycle, evenly spaced.
fn stride_sequence(weights: &[u64], total: u64) -> Vec<u32> {
    // Fixed point: deadlines in units of 1/w_i scaled by lcm-free total.
    let mut due: BinaryHeap<Reverse<(u128, u32)>> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Reverse((u128::from(total) * 1_000_000 / u128::from(w) / 2, i as u32)))
        .collect();
    let mut sequence = Vec::with_capacity(total as usize);
    while let Some(Reverse((deadline, i))) = due.pop() {
        if sequence.len() as u64 == total {
            break;
        }
        sequence.push(i);
        let stride = u128::from(total) * 1_000_000 / u128::from(weights[i as usize]);
        due.push(Reverse((deadline + stride, i)));
    }
    sequence
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::Fixture;

    fn letters(fixture: &Fixture<WeightedRoundRobin>, n: usize) -> String {
        (0..n)
            .map(|_| (b'a' + fixture.pick().unwrap() as u8) as char)
            .collect()
    }

    #[test]
    fn nginx_sequence_for_5_1_1() {
        let fixture = Fixture::new(WeightedRoundRobin::new(), &[5, 1, 1]);
        assert_eq!(letters(&fixture, 14), "aabacaaaabacaa");
    }

    #[test]
    fn gcd_reduction_keeps_the_sequence() {
        let fixture = Fixture::new(WeightedRoundRobin::new(), &[50, 10, 10]);
        assert_eq!(fixture.table.schedule.len(), 7);
        assert_eq!(letters(&fixture, 7), "aabacaa");
    }

    #[test]
    fn shares_follow_weights() {
        let fixture = Fixture::new(WeightedRoundRobin::new(), &[3, 2, 1]);
        assert_eq!(fixture.tally(600), [300, 200, 100]);
    }

    #[test]
    fn an_unavailable_backends_turns_go_to_the_others() {
        let fixture = Fixture::new(WeightedRoundRobin::new(), &[5, 1, 1]);
        fixture.eject(0);
        let tally = fixture.tally(700);
        assert_eq!(tally[0], 0);
        assert!(tally[1] > 250 && tally[2] > 250, "{tally:?}");
        assert_eq!(fixture.pick_excluding(&[1, 2]), None);
    }

    #[test]
    fn stride_schedule_gives_exact_shares_and_no_bursts() {
        let weights: Vec<u64> = (1..=200).collect();
        let total: u64 = weights.iter().sum();
        let sequence = stride_sequence(&weights, total);
        assert_eq!(sequence.len() as u64, total);
        let mut counts = vec![0u64; weights.len()];
        for &i in &sequence {
            counts[i as usize] += 1;
        }
        assert_eq!(counts, weights);
        // The heaviest backend never takes two turns in a row.
        let heaviest = 199u32;
        assert!(sequence.windows(2).all(|w| w != [heaviest, heaviest]));
    }

    #[test]
    fn huge_totals_are_scaled_to_the_cap() {
        let weights = reduce([10_000, 9_999, 1].repeat(100));
        let total: u64 = weights.iter().sum();
        assert!(total <= MAX_SCHEDULE + weights.len() as u64);
        assert!(weights.iter().all(|&w| w >= 1));
    }
}
