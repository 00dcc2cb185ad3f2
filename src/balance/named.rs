//! Strategies chosen by name at run time (command lines, config files).

use std::fmt;
use std::str::FromStr;

use super::hash::HashTable;
use super::least_conn::LeastConnectionsTable;
use super::random::AliasTable;
use super::round_robin::RoundRobinTable;
use super::weighted::WeightedTable;
use super::{
    Candidates, ConsistentHash, HashKey, LeastConnections, PowerOfTwoChoices, Random, RoundRobin,
    Strategy, WeightedRoundRobin,
};
use crate::{Backend, Error};

/// The names [`AnyStrategy`] parses, as operators call them.
pub const STRATEGY_NAMES: &[&str] = &[
    "round-robin",
    "weighted-round-robin",
    "least-connections",
    "ip-hash",
    "hash",
    "p2c",
    "random",
];

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
/// # Ok::<(), tower_lb::Error>(())
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
        match self {
            AnyStrategy::RoundRobin(_) => "round-robin",
            AnyStrategy::WeightedRoundRobin(_) => "weighted-round-robin",
            AnyStrategy::LeastConnections(_) => "least-connections",
            AnyStrategy::ConsistentHash(hash) if *hash.key() == HashKey::ClientIp => "ip-hash",
            AnyStrategy::ConsistentHash(_) => "hash",
            AnyStrategy::PowerOfTwoChoices(_) => "p2c",
            AnyStrategy::Random(_) => "random",
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
    /// Power of two choices' (none).
    PowerOfTwoChoices,
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
            AnyStrategy::PowerOfTwoChoices(_) => AnyTable::PowerOfTwoChoices,
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
            (AnyStrategy::PowerOfTwoChoices(s), AnyTable::PowerOfTwoChoices) => {
                s.pick(&(), candidates)
            }
            (AnyStrategy::Random(s), AnyTable::Random(t)) => s.pick(t, candidates),
            // A table is only ever built by the strategy that reads it.
            _ => None,
        }
    }
}

impl FromStr for AnyStrategy {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self, Error> {
        Ok(match name {
            "round-robin" => AnyStrategy::RoundRobin(RoundRobin::new()),
            "weighted-round-robin" => AnyStrategy::WeightedRoundRobin(WeightedRoundRobin::new()),
            "least-connections" => AnyStrategy::LeastConnections(LeastConnections),
            "ip-hash" | "hash" => AnyStrategy::ConsistentHash(ConsistentHash::client_ip()),
            "p2c" => AnyStrategy::PowerOfTwoChoices(PowerOfTwoChoices),
            "random" => AnyStrategy::Random(Random),
            _ => {
                return Err(Error::config(format!(
                    "unknown strategy `{name}` (known: {})",
                    STRATEGY_NAMES.join(", ")
                )));
            }
        })
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
