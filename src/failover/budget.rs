//! The retry budget: retries may add only a bounded share of load.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tower::retry::budget::Budget;

use crate::clock::{self, Nanos};
use crate::thread_slot::{SLOTS, thread_slot};

/// One second of the window: its second number (high 24 bits) and a count
/// (low 40 bits), in one atomic so a new second resets it in one step.
#[derive(Debug, Default)]
struct Second(AtomicU64);

const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const EPOCH_MASK: u64 = (1 << (64 - COUNT_BITS)) - 1;

impl Second {
    /// Adds one to the count of second `epoch`, starting it over if the slot
    /// held an older second.
    fn add(&self, epoch: u64) {
        let tag = (epoch & EPOCH_MASK) << COUNT_BITS;
        let mut current = self.0.load(Relaxed);
        loop {
            let next = if current & !COUNT_MASK == tag {
                current + 1
            } else {
                tag | 1
            };
            match self
                .0
                .compare_exchange_weak(current, next, Relaxed, Relaxed)
            {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// The count, if the slot holds second `epoch`.
    fn count(&self, epoch: u64) -> u64 {
        let value = self.0.load(Relaxed);
        if value >> COUNT_BITS == epoch & EPOCH_MASK {
            value & COUNT_MASK
        } else {
            0
        }
    }
}

/// The requests' seconds, one row of them per thread slot: every request
/// deposits, on every thread, and one row for all would be a cache line
/// that every request takes from the other cores. A row starts on a
/// 128-byte block of its own; a withdrawal (a retry, rare) adds the rows
/// up.
struct Deposits {
    /// Seconds in the window.
    seconds: usize,
    /// Blocks per row.
    row: usize,
    blocks: Box<[Block]>,
}

/// Sixteen seconds: two cache lines, which the prefetcher fetches as a
/// pair, so no other row shares them.
#[derive(Default)]
#[repr(align(128))]
struct Block([Second; 16]);

impl Deposits {
    fn new(seconds: usize) -> Self {
        let row = seconds.div_ceil(16);
        Self {
            seconds,
            row,
            blocks: (0..row * SLOTS).map(|_| Block::default()).collect(),
        }
    }

    /// Row `row`'s slot for second `epoch`.
    #[inline]
    fn slot(&self, row: usize, epoch: u64) -> &Second {
        let i = (epoch % self.seconds as u64) as usize;
        &self.blocks[row * self.row + i / 16].0[i % 16]
    }

    /// Counts one request in second `epoch`, in this thread's row.
    #[inline]
    fn add(&self, epoch: u64) {
        self.slot(thread_slot(), epoch).add(epoch);
    }

    /// The requests of the window ending with second `epoch`, every row.
    fn sum(&self, epoch: u64) -> u64 {
        (0..SLOTS)
            .map(|row| window(self.seconds, epoch, |second| self.slot(row, second)))
            .sum()
    }
}

/// The counts of the `seconds` seconds up to `epoch`, each slot read
/// through `slot` (seconds before the first are not there to count).
fn window<'a>(seconds: usize, epoch: u64, slot: impl Fn(u64) -> &'a Second) -> u64 {
    (0..(seconds as u64).min(epoch + 1))
        .map(|back| {
            let second = epoch - back;
            slot(second).count(second)
        })
        .sum()
}

/// How many retries may be sent: a share of the requests of the last `ttl`
/// seconds plus a small floor per second, as in tower's and Finagle's
/// budgets. Retries never multiply load during an outage: when every
/// backend fails, at most `retry_ratio` more requests reach them.
///
/// tower's `TpsBudget` has the same rule but takes a mutex on every
/// deposit; this one keeps per-second counters in atomics, so recording a
/// request takes no lock. It implements tower's [`Budget`] trait, so either
/// fits [`FailoverLayer::budget`](super::FailoverLayer::budget).
///
/// ```
/// use std::time::Duration;
/// use tower::retry::budget::Budget;
/// use tower_lb::failover::RetryBudget;
///
/// let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.2);
/// for _ in 0..10 {
///     budget.deposit();
/// }
/// assert!(budget.withdraw() && budget.withdraw());
/// assert!(!budget.withdraw(), "20 % of 10 requests is 2 retries");
/// ```
pub struct RetryBudget {
    /// When the budget was made: its seconds count from here, so that they
    /// fall at the same points of a timeline in every run (a simulation in
    /// tokio's paused time gives the same retries for the same seed), not
    /// wherever the process's clock base happens to put them.
    origin: Nanos,
    requests: Deposits,
    retries: Box<[Second]>,
    min_per_second: u64,
    ratio: f64,
}

impl RetryBudget {
    /// Retries may be `ratio` of the requests of the last `ttl` (1 to 60 s)
    /// plus `min_per_second` × `ttl`.
    pub fn new(ttl: Duration, min_per_second: u32, ratio: f64) -> Self {
        let seconds = ttl.as_secs().clamp(1, 60) as usize;
        Self {
            origin: clock::now(),
            requests: Deposits::new(seconds),
            retries: (0..seconds).map(|_| Second::default()).collect(),
            min_per_second: u64::from(min_per_second),
            ratio: ratio.max(0.0),
        }
    }

    fn epoch(&self) -> u64 {
        self.epoch_at(clock::now())
    }

    fn epoch_at(&self, now: Nanos) -> u64 {
        now.saturating_sub(self.origin) / 1_000_000_000
    }

    /// Retries allowed in the window now, and retries already sent.
    fn balance(&self, epoch: u64) -> (f64, u64) {
        let n = self.retries.len();
        let requests = self.requests.sum(epoch);
        let retries = window(n, epoch, |second| {
            &self.retries[(second % n as u64) as usize]
        });
        let allowed = self.ratio * requests as f64 + (self.min_per_second * n as u64) as f64;
        (allowed, retries)
    }
}

impl Default for RetryBudget {
    /// 20 % of the last 10 s of requests plus 10 per second: tower's and
    /// linkerd's defaults.
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 10, 0.2)
    }
}

impl Budget for RetryBudget {
    fn deposit(&self) {
        // Called as a request enters: the call chain's reading, if open.
        let epoch = self.epoch_at(clock::call_or_now());
        self.requests.add(epoch);
    }

    fn withdraw(&self) -> bool {
        let epoch = self.epoch();
        let (allowed, spent) = self.balance(epoch);
        if (spent + 1) as f64 > allowed {
            return false;
        }
        self.retries[(epoch % self.retries.len() as u64) as usize].add(epoch);
        true
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (allowed, spent) = self.balance(self.epoch());
        f.debug_struct("RetryBudget")
            .field("ttl_seconds", &self.retries.len())
            .field("ratio", &self.ratio)
            .field("min_per_second", &self.min_per_second)
            .field("allowed", &allowed)
            .field("spent", &spent)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_floor_and_the_ratio_add_up() {
        let budget = RetryBudget::new(Duration::from_secs(2), 1, 0.5);
        for _ in 0..4 {
            budget.deposit();
        }
        // 2 from the ratio, 2 from the floor (1 per second over 2 s).
        let granted = (0..10).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn seconds_count_from_the_budget_s_creation() {
        // Wherever the process's clock base put whole seconds, the budget's
        // first second ends one second after it was made.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let budget = RetryBudget::new(Duration::from_secs(1), 0, 1.0);
        budget.deposit();
        tokio::time::sleep(Duration::from_millis(998)).await;
        assert!(budget.withdraw(), "still the first second");
        budget.deposit();
        tokio::time::sleep(Duration::from_millis(3)).await;
        assert!(!budget.withdraw(), "the first second left the window");
    }

    /// Deposits made on several threads (each in its own row) all count.
    #[test]
    fn every_thread_s_deposits_count() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 1.0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| (0..5).for_each(|_| budget.deposit()));
            }
        });
        budget.deposit();
        let granted = (0..30).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 21);
    }

    #[tokio::test(start_paused = true)]
    async fn old_seconds_leave_the_window() {
        let budget = RetryBudget::new(Duration::from_secs(2), 0, 1.0);
        for _ in 0..5 {
            budget.deposit();
        }
        assert!(budget.withdraw());
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!budget.withdraw(), "the deposits expired");
        budget.deposit();
        assert!(budget.withdraw());
    }
}
