//! Strategies chosen by name at run time (command lines, config files).

use std::fmt;
use std::str::FromStr;

use super::hash::HashTable;
use super::least_conn::LeastConnectionsTable;
use super::p2c_table::PowerOfTwoChoicesTable;
use super::random::AliasTable;
use super::round_robin::RoundRobinTable;
use super::weighted::WeightedTable;
use super::{
    Candidates, ConsistentHash, HashKey, LeastConnections, PowerOfTwoChoices, Random, RoundRobin,
    Strategy, WeightedRoundRobin,
};
use crate::backend::Backend;
use crate::error::ConfigError;

/// One built-in strategy as operators name it: the name, how to make it,
/// and how to recognise it.
struct Entry {
    name: &'static str,
    make: fn() -> AnyStrategy,
    is: fn(&AnyStrategy) -> bool,
}

/// Every built-in strategy, the one place their names are written: parsing,
/// [`AnyStrategy::name`] and [`STRATEGY_NAMES`] all read it. Where two
/// entries recognise one value, the first names it (`ip-hash` before the
/// general `hash`).
const TABLE: [Entry; 7] = [
    Entry {
        name: "round-robin",
        make: || AnyStrategy::RoundRobin(RoundRobin::new()),
        is: |s| matches!(s, AnyStrategy::RoundRobin(_)),
    },
    Entry {
        name: "weighted-round-robin",
        make: || AnyStrategy::WeightedRoundRobin(WeightedRoundRobin::new()),
        is: |s| matches!(s, AnyStrategy::WeightedRoundRobin(_)),
    },
    Entry {
        name: "least-connections",
        make: || AnyStrategy::LeastConnections(LeastConnections::new()),
        is: |s| matches!(s, AnyStrategy::LeastConnections(_)),
    },
    Entry {
        name: "ip-hash",
        make: || AnyStrategy::ConsistentHash(ConsistentHash::client_ip()),
        is: |s| matches!(s, AnyStrategy::ConsistentHash(h) if *h.key() == HashKey::ClientIp),
    },
    Entry {
        name: "hash",
        make: || AnyStrategy::ConsistentHash(ConsistentHash::client_ip()),
        is: |s| matches!(s, AnyStrategy::ConsistentHash(_)),
    },
    Entry {
        name: "p2c",
        make: || AnyStrategy::PowerOfTwoChoices(PowerOfTwoChoices::new()),
        is: |s| matches!(s, AnyStrategy::PowerOfTwoChoices(_)),
    },
    Entry {
        name: "random",
        make: || AnyStrategy::Random(Random),
        is: |s| matches!(s, AnyStrategy::Random(_)),
    },
];

/// The names [`AnyStrategy`] parses, as operators call them.
pub const STRATEGY_NAMES: &[&str] = &names();

const fn names() -> [&'static str; TABLE.len()] {
    let mut names = [""; TABLE.len()];
    let mut i = 0;
    while i < TABLE.len() {
        names[i] = TABLE[i].name;
        i += 1;
    }
    names
}

/// Any of the built-in strategies, chosen at run time.
///
/// Parses from the names in [`STRATEGY_NAMES`]: `round-robin`,
/// `weighted-round-robin`, `least-connections`, `ip-hash` (consistent hashing
/// on the client IP), `hash` (consistent hashing, on the client IP until
/// [`with_hash_key`](Self::with_hash_key) says otherwise), `p2c` and `random`.
/// A pick costs one `match` more than the strategy itself.
///
/// ```
/// use tower_lb::balance::AnyStrategy;
///
/// let strategy: AnyStrategy = "least-connections".parse()?;
/// assert_eq!(strategy.name(), "least-connections");
/// let sticky = "hash".parse::<AnyStrategy>()?.with_hash_key("cookie:session".parse()?);
/// assert!("fastest".parse::<AnyStrategy>().is_err());
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum AnyStrategy {
    /// [`RoundRobin`].
    RoundRobin(RoundRobin),
    /// [`WeightedRoundRobin`].
    WeightedRoundRobin(WeightedRoundRobin),
    /// [`LeastConnections`].
    LeastConnections(LeastConnections),
    /// [`ConsistentHash`].
    ConsistentHash(ConsistentHash),
    /// [`PowerOfTwoChoices`].
    PowerOfTwoChoices(PowerOfTwoChoices),
    /// [`Random`].
    Random(Random),
}

impl AnyStrategy {
    /// The operator's name for the strategy.
    pub fn name(&self) -> &'static str {
        match TABLE.iter().find(|entry| (entry.is)(self)) {
            Some(entry) => entry.name,
            None => unreachable!("every variant has an entry in the table"),
        }
    }

    /// Sets the key of consistent hashing, keeping its trusted proxies; other
    /// strategies are returned unchanged.
    pub fn with_hash_key(self, key: HashKey) -> Self {
        match self {
            AnyStrategy::ConsistentHash(hash) => AnyStrategy::ConsistentHash(hash.with_key(key)),
            other => other,
        }
    }

    /// Bounds consistent hashing's loads
    /// ([`ConsistentHash::with_balance_factor`]); for any other strategy an
    /// error, since only hashing has a preference to bound.
    pub fn with_hash_balance_factor(self, factor: f64) -> Result<Self, ConfigError> {
        match self {
            AnyStrategy::ConsistentHash(hash) => Ok(AnyStrategy::ConsistentHash(
                hash.with_balance_factor(factor)?,
            )),
            other => Err(ConfigError::new(format!(
                "a hash balance factor needs strategy hash (or ip-hash), not {other}"
            ))),
        }
    }
}

/// The table of whichever strategy [`AnyStrategy`] holds.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyTable {
    /// Round-robin's.
    RoundRobin(RoundRobinTable),
    /// Weighted round-robin's.
    WeightedRoundRobin(WeightedTable),
    /// Least-connections'.
    LeastConnections(LeastConnectionsTable),
    /// Consistent hashing's.
    ConsistentHash(HashTable),
    /// Power of two choices'.
    PowerOfTwoChoices(PowerOfTwoChoicesTable),
    /// Random's.
    Random(AliasTable),
}

impl Strategy for AnyStrategy {
    type Table = AnyTable;

    fn build(&self, backends: &[Backend]) -> AnyTable {
        match self {
            AnyStrategy::RoundRobin(s) => AnyTable::RoundRobin(s.build(backends)),
            AnyStrategy::WeightedRoundRobin(s) => AnyTable::WeightedRoundRobin(s.build(backends)),
            AnyStrategy::LeastConnections(s) => AnyTable::LeastConnections(s.build(backends)),
            AnyStrategy::ConsistentHash(s) => AnyTable::ConsistentHash(s.build(backends)),
            AnyStrategy::PowerOfTwoChoices(s) => AnyTable::PowerOfTwoChoices(s.build(backends)),
            AnyStrategy::Random(s) => AnyTable::Random(s.build(backends)),
        }
    }

    #[inline]
    fn pick(&self, table: &AnyTable, candidates: &Candidates<'_>) -> Option<usize> {
        match (self, table) {
            (AnyStrategy::RoundRobin(s), AnyTable::RoundRobin(t)) => s.pick(t, candidates),
            (AnyStrategy::WeightedRoundRobin(s), AnyTable::WeightedRoundRobin(t)) => {
                s.pick(t, candidates)
            }
            (AnyStrategy::LeastConnections(s), AnyTable::LeastConnections(t)) => {
                s.pick(t, candidates)
            }
            (AnyStrategy::ConsistentHash(s), AnyTable::ConsistentHash(t)) => s.pick(t, candidates),
            (AnyStrategy::PowerOfTwoChoices(s), AnyTable::PowerOfTwoChoices(t)) => {
                s.pick(t, candidates)
            }
            (AnyStrategy::Random(s), AnyTable::Random(t)) => s.pick(t, candidates),
            // A table is only ever built by the strategy that reads it: a
            // mismatch is a bug here, not a backend to refuse with a 503.
            _ => unreachable!("a strategy was given another strategy's table"),
        }
    }
}

impl FromStr for AnyStrategy {
    type Err = ConfigError;

    fn from_str(name: &str) -> Result<Self, ConfigError> {
        match TABLE.iter().find(|entry| entry.name == name) {
            Some(entry) => Ok((entry.make)()),
            None => Err(ConfigError::new(format!(
                "unknown strategy `{name}` (known: {})",
                STRATEGY_NAMES.join(", ")
            ))),
        }
    }
}

impl fmt::Display for AnyStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyStrategy::ConsistentHash(hash) if *hash.key() != HashKey::ClientIp => {
                write!(f, "hash ({})", hash.key())
            }
            other => f.write_str(other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_to_a_strategy_of_that_name() {
        for name in STRATEGY_NAMES {
            let strategy: AnyStrategy = name.parse().unwrap();
            let expected = if *name == "hash" { "ip-hash" } else { name };
            assert_eq!(
                strategy.name(),
                expected,
                "`hash` on the client IP is `ip-hash`"
            );
        }
        let by_path = "hash"
            .parse::<AnyStrategy>()
            .unwrap()
            .with_hash_key("path".parse().unwrap());
        assert_eq!(by_path.name(), "hash");
        let unknown = "fastest".parse::<AnyStrategy>().unwrap_err();
        assert!(
            unknown.to_string().contains("known: round-robin, weighted"),
            "{unknown}"
        );
    }
}
