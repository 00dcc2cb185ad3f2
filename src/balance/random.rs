//! Weighted random.

use super::{Candidates, Strategy};
use crate::backend::Backend;

/// How many draws look for an admitted backend before a scan.
const DRAWS: usize = 8;

/// Sends each request to a backend drawn at random in proportion to its
/// weight.
///
/// The right choice when many independent proxies front the same backends
/// and must not fall into lockstep (which synchronized round-robins can), or
/// as a baseline. The draw uses Vose's alias table, built when the set
/// changes: O(1) per pick at any size and any weights.
///
/// ```
/// use tower_lb::balance::Random;
/// use tower_lb::{BackendSet, LoadBalanceLayer};
///
/// let set = BackendSet::new(["http://127.0.0.1:9001,weight=3".parse()?, "http://127.0.0.1:9002".parse()?]);
/// let layer = LoadBalanceLayer::new(set, Random::new());
/// # Ok::<(), tower_lb::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Random;

impl Random {
    /// Weighted random.
    pub fn new() -> Self {
        Self
    }
}

/// Random's table: Vose's alias table over the weights.
#[derive(Debug, Default)]
pub struct AliasTable {
    /// Chance (in 1/2^32) that column i keeps its own backend.
    keep: Box<[u64]>,
    alias: Box<[u32]>,
}

impl AliasTable {
    fn new(weights: &[u64]) -> Self {
        let n = weights.len();
        let total: u64 = weights.iter().sum();
        if n == 0 || total == 0 {
            return Self::default();
        }
        const ONE: u128 = 1 << 32;
        // Scaled so the average column holds exactly ONE.
        let mut scaled: Vec<u128> = weights
            .iter()
            .map(|&w| u128::from(w) * ONE * n as u128 / u128::from(total))
            .collect();
        let mut keep = vec![ONE as u64; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < ONE);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            keep[s] = scaled[s] as u64;
            alias[s] = l as u32;
            scaled[l] -= ONE - scaled[s];
            if scaled[l] < ONE {
                large.pop();
                small.push(l);
            }
        }
        Self {
            keep: keep.into_boxed_slice(),
            alias: alias.into_boxed_slice(),
        }
    }

    #[inline]
    fn draw(&self) -> usize {
        let column = fastrand::usize(..self.keep.len());
        if fastrand::u64(..1 << 32) < self.keep[column] {
            column
        } else {
            self.alias[column] as usize
        }
    }
}

impl Strategy for Random {
    type Table = AliasTable;

    fn build(&self, backends: &[Backend]) -> AliasTable {
        let weights: Vec<u64> = backends.iter().map(|b| u64::from(b.weight())).collect();
        AliasTable::new(&weights)
    }

    fn pick(&self, table: &AliasTable, candidates: &Candidates<'_>) -> Option<usize> {
        if table.keep.is_empty() || candidates.is_empty() {
            return None;
        }
        (0..DRAWS)
            .map(|_| table.draw())
            .find(|&i| candidates.admits(i))
            .or_else(|| candidates.scan_from(fastrand::usize(..candidates.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::Fixture;

    #[test]
    fn draws_follow_weights() {
        let fixture = Fixture::new(Random, &[6, 3, 1]);
        let tally = fixture.tally(20_000);
        let expected = [12_000.0, 6_000.0, 2_000.0];
        for (got, want) in tally.iter().zip(expected) {
            // Five standard deviations of a binomial at most.
            assert!(
                (*got as f64 - want).abs() < 5.0 * (want * 0.7f64).sqrt(),
                "{tally:?}"
            );
        }
    }

    #[test]
    fn alias_columns_sum_to_the_weights() {
        let weights = [5u64, 1, 1, 9, 2];
        let table = AliasTable::new(&weights);
        let n = weights.len() as f64;
        let mut mass = vec![0f64; weights.len()];
        for (column, (&keep, &alias)) in table.keep.iter().zip(table.alias.iter()).enumerate() {
            let p = keep as f64 / (1u64 << 32) as f64;
            mass[column] += p / n;
            mass[alias as usize] += (1.0 - p) / n;
        }
        for (m, w) in mass.iter().zip(weights) {
            assert!((m - w as f64 / 18.0).abs() < 1e-6, "{mass:?}");
        }
    }

    #[test]
    fn unavailable_and_tried_are_skipped() {
        let fixture = Fixture::new(Random, &[1, 1, 1]);
        fixture.eject(0);
        for _ in 0..200 {
            assert_eq!(fixture.pick_excluding(&[2]), Some(1));
        }
        assert_eq!(fixture.pick_excluding(&[1, 2]), None);
    }
}
