//! Consistent hashing on a request key (ip-hash, header, cookie, path).

use std::sync::Arc;

use ipnet::IpNet;

use super::bounded::{BalanceFactor, BoundedLoad};
use super::maglev::Maglev;
use super::{Candidates, HashKey, Strategy};
use crate::backend::Backend;
use crate::error::ConfigError;

/// How many times a key is rehashed to another slot when its backend is
/// unavailable, before the deterministic walk in address order.
const REHASHES: u64 = 8;

/// Sends every request with the same key to the same backend: the client IP
/// by default (`ip-hash`), or a header, a cookie or the path.
///
/// The right choice for affinity: per-client caches, sessions held in
/// memory, sharded data. The table is Maglev (Google's consistent hashing,
/// weighted as in Envoy), built when the set changes; a pick is one hash
/// (XXH3) and one table lookup.
///
/// - *Minimal remapping*: removing one of N backends moves about 1/N of the
///   keys (those it had, plus a small fraction), adding one moves about
///   1/(N+1).
/// - *No shared state*: the table depends only on the backends' addresses
///   and weights, never on the order they joined or a per-process seed, so
///   several proxies with the same backends send each key to the same
///   backend.
/// - *Failover*: when a key's backend is unavailable (down, ejected, already
///   tried), the key is rehashed to another slot, then backends are walked in
///   address order; all deterministic, so the proxies still agree and the
///   unavailable backend's keys spread over the others. They come back when it
///   does.
/// - *Ramps*: a backend in slow start takes the keys whose hash falls in its
///   current share, so the same keys stay as the share grows.
/// - A request without the key (no such header or cookie) falls back to the
///   client IP, and without that to a random backend.
/// - *Bounded loads* ([`with_balance_factor`](Self::with_balance_factor),
///   off by default): no backend holds more than `⌈F × average⌉` requests
///   in flight; a hot key's overflow goes to the next backends of its own
///   preference order, and only while its backend is at the bound.
///
/// ```
/// use tower_lb::balance::ConsistentHash;
/// use tower_lb::{BackendSet, LoadBalanceLayer};
///
/// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002".parse()?]);
/// // Sticky by client IP; the client is whoever the proxies in 10.0.0.0/8 say.
/// let layer = LoadBalanceLayer::new(set.clone(), ConsistentHash::client_ip().trust_proxies(["10.0.0.0/8".parse()?]));
/// // Sticky by session cookie.
/// let layer = LoadBalanceLayer::new(set, ConsistentHash::new("cookie:session".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ConsistentHash {
    key: HashKey,
    trusted: Arc<[IpNet]>,
    balance: Option<BalanceFactor>,
}

impl ConsistentHash {
    /// Consistent hashing on `key`.
    pub fn new(key: HashKey) -> Self {
        Self {
            key,
            trusted: Arc::from([]),
            balance: None,
        }
    }

    /// `ip-hash`: consistent hashing on the client IP.
    pub fn client_ip() -> Self {
        Self::new(HashKey::ClientIp)
    }

    /// Believe `X-Forwarded-For` from peers in these networks (your own
    /// proxies), for the client IP key and the fallback to it. By default no
    /// one is believed, since any client can write the header.
    pub fn trust_proxies(mut self, networks: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted = networks.into_iter().collect();
        self
    }

    /// The same strategy on another key.
    pub fn with_key(mut self, key: HashKey) -> Self {
        self.key = key;
        self
    }

    /// The key.
    pub fn key(&self) -> &HashKey {
        &self.key
    }

    /// Bounds every backend's load to `factor` times the average
    /// (consistent hashing with bounded loads, Mirrokni et al.; HAProxy's
    /// `hash-balance-factor`): a backend holding
    /// `⌈factor × (in flight + 1) × its weight / eligible weight⌉` requests
    /// takes no new ones, and the keys that meet it go to the next backend
    /// in their own preference order (the same order retries and failover
    /// take), coming back as soon as it has room.
    ///
    /// Use it when a few keys are hot enough to overload one backend and
    /// affinity is an optimisation (caches), not a correctness need (use
    /// [sticky cookies] or plain hashing for that). 1.25 is a common choice:
    /// within a quarter of the average, and most keys stay put. The cost is
    /// an atomic add per request start and end, to keep the set's total
    /// (split over eight counters, so threads rarely write the same one);
    /// a pick sums the total and reads the candidate's count from the
    /// table, where the counts are packed, not from the backend.
    ///
    /// `factor` must be within `1.0..=1000.0`.
    ///
    /// [sticky cookies]: crate::balance
    ///
    /// ```
    /// use tower_lb::balance::ConsistentHash;
    /// use tower_lb::{BackendSet, LoadBalanceLayer};
    ///
    /// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002".parse()?]);
    /// let strategy = ConsistentHash::new("path".parse()?).with_balance_factor(1.25)?;
    /// assert_eq!(strategy.balance_factor(), Some(1.25));
    /// let layer = LoadBalanceLayer::new(set, strategy);
    /// assert!(ConsistentHash::client_ip().with_balance_factor(0.5).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_balance_factor(mut self, factor: f64) -> Result<Self, ConfigError> {
        self.balance = Some(BalanceFactor::new(factor)?);
        Ok(self)
    }

    /// The balance factor, if loads are bounded.
    pub fn balance_factor(&self) -> Option<f64> {
        self.balance.map(BalanceFactor::get)
    }

    fn key_hash(&self, candidates: &Candidates<'_>) -> Option<u64> {
        let request = candidates.request();
        self.key
            .hash(request, &self.trusted)
            .or_else(|| match self.key {
                HashKey::ClientIp => None,
                _ => HashKey::ClientIp.hash(request, &self.trusted),
            })
    }
}

/// Consistent hashing's table: the Maglev lookup table.
#[derive(Debug)]
pub struct HashTable {
    maglev: Maglev,
    bounded: Option<BoundedLoad>,
}

impl Strategy for ConsistentHash {
    type Table = HashTable;

    fn build(&self, backends: &[Backend]) -> HashTable {
        HashTable {
            maglev: Maglev::build(backends),
            bounded: self
                .balance
                .map(|factor| BoundedLoad::build(backends, factor)),
        }
    }

    fn pick(&self, table: &HashTable, candidates: &Candidates<'_>) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        let Some(hash) = self.key_hash(candidates) else {
            return candidates.scan_from(fastrand::usize(..candidates.len()));
        };
        // The ramp draw comes from the key, so a ramping backend keeps the
        // same keys as its share grows.
        let draw = (hash >> 48) as u32;
        let first = table.maglev.lookup(hash)?;
        let admits = |i: usize| candidates.admits_with(i, draw);
        let preferred = match &table.bounded {
            None => table.prefer(hash, first, admits),
            Some(bounded) => {
                let bound = bounded.bound();
                table
                    .prefer(hash, first, |i| admits(i) && !bound.is_full(i))
                    // Every admitting backend is at its bound (only when
                    // this request already tried the others): over the
                    // bound beats a 503.
                    .or_else(|| table.prefer(hash, first, admits))
            }
        };
        preferred.or_else(|| {
            table
                .maglev
                .walk_after(first)
                .find(|&i| candidates.is_available(i))
        })
    }
}

impl HashTable {
    /// The first backend of the key's preference order that `accept`s:
    /// its own slot, then up to [`REHASHES`] other slots, then every backend
    /// in address order after the first.
    #[inline]
    fn prefer(&self, hash: u64, first: usize, accept: impl Fn(usize) -> bool) -> Option<usize> {
        if accept(first) {
            return Some(first);
        }
        let mut rehash = hash;
        for round in 1..=REHASHES {
            rehash = mix(rehash ^ round);
            let index = self.maglev.lookup(rehash)?;
            if accept(index) {
                return Some(index);
            }
        }
        self.maglev.walk_after(first).find(|&i| accept(i))
    }
}

/// SplitMix64's finalizer: a fixed bijection that scatters nearby values.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use http::Request;

    use super::*;
    use crate::backend::InFlight;
    use crate::balance::test_support::{Fixture, backends};
    use crate::client_addr::ClientAddr;

    fn from(ip: u32) -> Request<()> {
        let mut request = Request::new(());
        let addr = SocketAddr::from((ip.to_be_bytes(), 40_000));
        request.extensions_mut().insert(ClientAddr::new(addr));
        request
    }

    /// Where each of 10,000 client IPs goes, as backend addresses.
    fn mapping(fixture: &Fixture<ConsistentHash>) -> Vec<String> {
        (0..10_000u32)
            .map(|k| {
                let index = fixture
                    .pick_request(&from(0x0a00_0000 + k * 7919), &[])
                    .unwrap();
                fixture.backends[index].address().as_str().to_owned()
            })
            .collect()
    }

    fn remap_fraction(n: usize) -> f64 {
        let all = backends(&vec![1; n]);
        let before = mapping(&Fixture::with_backends(
            ConsistentHash::client_ip(),
            all.clone(),
        ));
        let mut fewer = all;
        let gone = fewer.remove(n / 2);
        let after = mapping(&Fixture::with_backends(ConsistentHash::client_ip(), fewer));
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let had = before
            .iter()
            .filter(|b| **b == gone.address().as_str())
            .count();
        assert!(moved >= had, "every key of the removed backend moves");
        // Maglev moves a few keys besides the removed backend's: at most 2 %.
        assert!(
            moved - had < before.len() / 50,
            "moved {moved}, of which {had} had to"
        );
        moved as f64 / before.len() as f64
    }

    #[test]
    fn removing_one_of_four_moves_about_a_quarter() {
        let fraction = remap_fraction(4);
        assert!(fraction < 0.25 * 1.1 + 0.01, "moved {fraction}");
    }

    #[test]
    fn removing_one_of_ten_moves_about_a_tenth() {
        let fraction = remap_fraction(10);
        assert!(fraction < 0.10 * 1.1 + 0.01, "moved {fraction}");
    }

    #[test]
    fn independently_built_sets_agree() {
        let forward = backends(&[1, 1, 1, 1, 1]);
        let mut reversed = backends(&[1, 1, 1, 1, 1]);
        reversed.reverse();
        let a = mapping(&Fixture::with_backends(
            ConsistentHash::client_ip(),
            forward,
        ));
        let b = mapping(&Fixture::with_backends(
            ConsistentHash::client_ip(),
            reversed,
        ));
        assert_eq!(a, b);
    }

    #[test]
    fn spread_is_even() {
        let fixture = Fixture::new(ConsistentHash::client_ip(), &[1, 1, 1, 1]);
        let map = mapping(&fixture);
        for backend in &fixture.backends {
            let share = map
                .iter()
                .filter(|a| *a == backend.address().as_str())
                .count();
            assert!((2200..=2800).contains(&share), "{share}");
        }
    }

    #[test]
    fn an_unavailable_backends_keys_move_and_come_back() {
        let fixture = Fixture::new(ConsistentHash::client_ip(), &[1, 1, 1]);
        let before = mapping(&fixture);
        fixture.eject(1);
        let during = mapping(&fixture);
        let ejected = fixture.backends[1].address().as_str();
        assert!(during.iter().all(|a| a != ejected));
        let others_kept = before
            .iter()
            .zip(&during)
            .filter(|(b, _)| *b != ejected)
            .all(|(b, d)| b == d);
        assert!(others_kept, "keys of healthy backends stay put");
        fixture.backends[1].state().readmit(1, 0);
        assert_eq!(mapping(&fixture), before);
    }

    #[test]
    fn retries_go_elsewhere_deterministically() {
        let fixture = Fixture::new(ConsistentHash::client_ip(), &[1, 1, 1]);
        let request = from(0x0a01_0203);
        let first = fixture.pick_request(&request, &[]).unwrap();
        let second = fixture.pick_request(&request, &[first]).unwrap();
        assert_ne!(first, second);
        assert_eq!(fixture.pick_request(&request, &[first]), Some(second));
        assert_eq!(fixture.pick_request(&request, &[0, 1, 2]), None);
    }

    /// The bound as the paper states it, from the backends' own counts.
    fn capacity(fixture: &Fixture<ConsistentHash>, index: usize, factor: f64) -> u32 {
        let total: u32 = fixture.backends.iter().map(|b| b.state().in_flight()).sum();
        let weight: u32 = fixture.backends.iter().map(|b| b.weight()).sum();
        let share = f64::from(fixture.backends[index].weight()) / f64::from(weight);
        (factor * f64::from(total + 1) * share - 1e-9).ceil() as u32
    }

    #[test]
    fn bounded_loads_hold_the_bound_and_spill_only_from_full_backends() {
        let (spilled, picks) = bounded_run(false);
        eprintln!("no hot key: spilled {spilled} of {picks} picks");
        assert!(spilled > 0 && spilled < picks / 10, "{spilled} of {picks}");
        let (spilled, picks) = bounded_run(true);
        eprintln!("a hot key with a fifth of the requests: spilled {spilled} of {picks} picks");
        // The hot key is above any backend's bound (about 1.25 / 8 of the
        // load) and fills its home, whose other keys then spill too.
        assert!(
            spilled > picks / 10 && spilled < picks / 3,
            "{spilled} of {picks}"
        );
    }

    /// Random loads under the bound; returns (spilled, picks).
    fn bounded_run(hot: bool) -> (usize, usize) {
        let factor = 1.25;
        let weights = [1, 1, 2, 1, 1, 3, 1, 1];
        let bounded = Fixture::new(
            ConsistentHash::client_ip()
                .with_balance_factor(factor)
                .unwrap(),
            &weights,
        );
        // The same backends without the bound: each key's first choice.
        let plain = Fixture::with_backends(ConsistentHash::client_ip(), bounded.backends.clone());
        let mut rng = fastrand::Rng::with_seed(14);
        let mut held = Vec::new();
        let (mut picks, mut spilled, mut forced) = (0, 0, 0);
        for step in 0..20_000u32 {
            // Random loads: the number held drifts between none and a few
            // hundred; a fifth of the requests share one hot key.
            if !held.is_empty() && rng.u32(..100) < 40 + (held.len() as u32 / 40).min(20) {
                held.swap_remove(rng.usize(..held.len()));
                continue;
            }
            let key = if hot && rng.u32(..5) == 0 {
                7
            } else {
                rng.u32(..5000)
            };
            let request = from(0x0a00_0000 + key * 7919);
            let home = plain.pick_request(&request, &[]).unwrap();
            let home_full =
                bounded.backends[home].state().in_flight() >= capacity(&bounded, home, factor);
            let index = bounded.pick_request(&request, &[]).unwrap();
            let load = bounded.backends[index].state().in_flight();
            let cap = capacity(&bounded, index, factor);
            assert!(
                load < cap,
                "step {step}: backend {index} holds {load}, bound {cap}"
            );
            picks += 1;
            if index != home {
                spilled += 1;
                assert!(home_full, "step {step}: a key left a backend with room");
            } else {
                assert!(!home_full);
            }
            if home_full {
                forced += 1;
            }
            held.push(InFlight::begin(bounded.backends[index].clone()));
        }
        // Spill is minimal: exactly the picks whose backend was full moved.
        assert_eq!(spilled, forced);
        (spilled, picks)
    }

    #[test]
    fn a_hot_key_spreads_to_the_bound_and_returns_when_the_load_falls() {
        let fixture = Fixture::new(
            ConsistentHash::client_ip()
                .with_balance_factor(1.25)
                .unwrap(),
            &[1, 1, 1, 1],
        );
        let request = from(0x0a01_0203);
        let home = fixture.pick_request(&request, &[]).unwrap();
        let held: Vec<InFlight> = (0..40)
            .map(|_| {
                let index = fixture.pick_request(&request, &[]).unwrap();
                InFlight::begin(fixture.backends[index].clone())
            })
            .collect();
        let loads: Vec<u32> = fixture
            .backends
            .iter()
            .map(|b| b.state().in_flight())
            .collect();
        // ⌈1.25 × 40 / 4⌉ = 13 at most each, and the home is filled first.
        assert!(loads.iter().all(|&l| l <= 13), "{loads:?}");
        assert!(loads[home] >= 12, "{loads:?}");
        drop(held);
        assert_eq!(fixture.pick_request(&request, &[]), Some(home));
    }

    #[test]
    fn a_missing_header_falls_back_to_the_client_ip() {
        let fixture = Fixture::new(
            ConsistentHash::new("header:x-user".parse().unwrap()),
            &[1, 1, 1, 1],
        );
        let request = from(0x0a01_0203);
        let first = fixture.pick_request(&request, &[]);
        for _ in 0..20 {
            assert_eq!(fixture.pick_request(&request, &[]), first);
        }
    }
}
