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
/// # Ok::<(), tower_lb::ConfigError>(())
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
///
/// A column is one `u64`, the chance (in 1/2^32) that it keeps its own
/// backend in the high half and its alias in the low half, so a draw reads
/// one word: at 10,000 backends, one cache line where two arrays cost two.
#[derive(Debug, Default)]
pub struct AliasTable {
    columns: Box<[u64]>,
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
        // A column kept in full (chance 2^32) keeps its own index as its
        // alias, so storing 2^32 - 1 instead cannot change a draw's result.
        let columns = keep
            .iter()
            .zip(&alias)
            .map(|(&keep, &alias)| (keep.min(u64::from(u32::MAX)) << 32) | u64::from(alias))
            .collect();
        Self { columns }
    }

    #[inline]
    fn draw(&self) -> usize {
        let index = fastrand::usize(..self.columns.len());
        let column = self.columns[index];
        if fastrand::u32(..) < (column >> 32) as u32 {
            index
        } else {
            column as u32 as usize
        }
    }

    #[cfg(test)]
    fn column(&self, index: usize) -> (u64, u32) {
        let column = self.columns[index];
        (column >> 32, column as u32)
    }
}

impl Strategy for Random {
    type Table = AliasTable;

    fn build(&self, backends: &[Backend]) -> AliasTable {
        let weights: Vec<u64> = backends.iter().map(|b| u64::from(b.weight())).collect();
        AliasTable::new(&weights)
    }

    fn pick(&self, table: &AliasTable, candidates: &Candidates<'_>) -> Option<usize> {
        if table.columns.is_empty() || candidates.is_empty() {
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
        for column in 0..weights.len() {
            let (keep, alias) = table.column(column);
            if keep == u64::from(u32::MAX) {
                assert_eq!(alias as usize, column, "a full column is its own alias");
            }
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
