//! The Maglev lookup table (Eisenbud et al., NSDI 2016), weighted as Envoy does.
//!
//! Every backend has a pseudo-random permutation of the table's slots, drawn
//! from its address. Backends take turns claiming the next free slot of
//! their permutation until the table is full. Lookup is one index. When a
//! backend leaves, the others' permutations are unchanged, so almost only
//! its own slots change hands: about 1/N of keys move.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::backend::Backend;

/// Slots per backend at least; more slots spread keys more evenly (each
/// backend's share is within about 1/100 of its due).
const SLOTS_PER_BACKEND: u64 = 100;
/// The smallest table: Envoy's default size.
const MIN_SIZE: u64 = 65_537;
/// The largest table: 5 M slots, 20 MB, for sets above 50 000 backends.
/// (Up to 65,536 backends a slot holds 16 bits: 10,000 backends take 2 MB.)
const MAX_SIZE: u64 = 5_000_011;

/// A filled Maglev table: slot → index of a backend.
#[derive(Debug, Default)]
pub(crate) struct Maglev {
    slots: Slots,
    /// Backend indices ordered by address: the deterministic order of the
    /// fallback walk, independent of the order backends joined.
    by_address: Box<[u32]>,
    /// The position of each backend in `by_address`.
    rank: Box<[u32]>,
}

impl Maglev {
    pub(crate) fn build(backends: &[Backend]) -> Self {
        if backends.is_empty() {
            return Self::default();
        }
        let mut by_address: Vec<u32> = (0..backends.len() as u32).collect();
        by_address.sort_by(|&a, &b| {
            backends[a as usize]
                .address()
                .cmp(backends[b as usize].address())
        });
        let mut rank = vec![0u32; backends.len()];
        for (position, &index) in by_address.iter().enumerate() {
            rank[index as usize] = position as u32;
        }
        let size = table_size(backends.len() as u64);
        let slots = Slots::from(fill(backends, &by_address, size));
        Self {
            slots,
            by_address: by_address.into_boxed_slice(),
            rank: rank.into_boxed_slice(),
        }
    }

    /// The backend that owns `hash`'s slot. The slot is `hash × len / 2^64`
    /// (Lemire's multiply-shift), as uniform as `hash % len` for a good hash
    /// and without a division.
    #[inline]
    pub(crate) fn lookup(&self, hash: u64) -> Option<usize> {
        let len = self.slots.len() as u64;
        let slot = ((u128::from(hash) * u128::from(len)) >> 64) as usize;
        self.slots.get(slot)
    }

    /// Backend indices in address order, starting after `index`.
    pub(crate) fn walk_after(&self, index: usize) -> impl Iterator<Item = usize> + Clone + '_ {
        let n = self.by_address.len();
        let start = self.rank[index] as usize;
        (1..=n).map(move |k| self.by_address[(start + k) % n] as usize)
    }
}

/// The filled slots, 16 bits each when every backend index fits: half the
/// memory, so more of a large table stays in cache and fewer pages are
/// touched per lookup.
#[derive(Debug)]
enum Slots {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

impl Default for Slots {
    fn default() -> Self {
        Slots::Narrow(Box::default())
    }
}

impl From<Vec<u32>> for Slots {
    fn from(slots: Vec<u32>) -> Self {
        let narrow: Option<Vec<u16>> = slots.iter().map(|&i| u16::try_from(i).ok()).collect();
        match narrow {
            Some(narrow) => Slots::Narrow(narrow.into_boxed_slice()),
            None => Slots::Wide(slots.into_boxed_slice()),
        }
    }
}

impl Slots {
    #[inline]
    fn len(&self) -> usize {
        match self {
            Slots::Narrow(slots) => slots.len(),
            Slots::Wide(slots) => slots.len(),
        }
    }

    #[inline]
    fn get(&self, slot: usize) -> Option<usize> {
        match self {
            Slots::Narrow(slots) => slots.get(slot).map(|&i| usize::from(i)),
            Slots::Wide(slots) => slots.get(slot).map(|&i| i as usize),
        }
    }
}

/// A prime of at least `SLOTS_PER_BACKEND` slots per backend.
fn table_size(backends: u64) -> u64 {
    let mut size = (backends * SLOTS_PER_BACKEND).clamp(MIN_SIZE, MAX_SIZE);
    while !is_prime(size) {
        size += 1;
    }
    size
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

struct Permutation {
    offset: u64,
    skip: u64,
    next: u64,
    weight: u64,
    target: u64,
}

/// Fills the table; heavier backends take turns more often (a backend of
/// weight w claims a slot in w of every `max_weight` rounds).
fn fill(backends: &[Backend], by_address: &[u32], size: u64) -> Vec<u32> {
    let max_weight = backends
        .iter()
        .map(|b| u64::from(b.weight()))
        .max()
        .unwrap_or(1);
    let mut permutations: Vec<Permutation> = by_address
        .iter()
        .map(|&index| {
            let backend = &backends[index as usize];
            let name = backend.address().as_str().as_bytes();
            Permutation {
                offset: xxh3_64_with_seed(name, 0) % size,
                skip: xxh3_64_with_seed(name, 1) % (size - 1) + 1,
                next: 0,
                weight: u64::from(backend.weight()),
                target: 0,
            }
        })
        .collect();
    let mut slots = vec![u32::MAX; size as usize];
    let mut filled = 0;
    let mut round = 1u64;
    while filled < size {
        for (permutation, &index) in permutations.iter_mut().zip(by_address) {
            if filled == size {
                break;
            }
            if round * permutation.weight < permutation.target {
                continue;
            }
            permutation.target += max_weight;
            loop {
                let slot =
                    ((permutation.offset + permutation.skip * permutation.next) % size) as usize;
                permutation.next += 1;
                if slots[slot] == u32::MAX {
                    slots[slot] = index;
                    filled += 1;
                    break;
                }
            }
        }
        round += 1;
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::backends;

    #[test]
    fn sizes_are_prime_and_grow_with_the_set() {
        assert_eq!(table_size(3), 65_537);
        let big = table_size(10_000);
        assert!(big >= 1_000_000 && is_prime(big));
    }

    #[test]
    fn slots_are_narrow_up_to_65536_backends() {
        assert!(matches!(Slots::from(vec![0, 65_535]), Slots::Narrow(_)));
        let wide = Slots::from(vec![0, 65_536]);
        assert!(matches!(wide, Slots::Wide(_)));
        assert_eq!(wide.get(1), Some(65_536));
        assert!(matches!(
            Maglev::build(&backends(&[1; 10])).slots,
            Slots::Narrow(_)
        ));
    }

    #[test]
    fn shares_follow_weights() {
        let table = Maglev::build(&backends(&[1, 2, 1]));
        let mut counts = [0usize; 3];
        for slot in 0..table.slots.len() {
            counts[table.slots.get(slot).unwrap()] += 1;
        }
        let total = table.slots.len() as f64;
        let shares: Vec<f64> = counts.iter().map(|&c| c as f64 / total).collect();
        assert!((shares[1] - 0.5).abs() < 0.01, "{shares:?}");
        assert!((shares[0] - 0.25).abs() < 0.01, "{shares:?}");
    }
}
