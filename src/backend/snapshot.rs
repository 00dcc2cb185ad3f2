//! An immutable view of the backend set.

use std::sync::Arc;

use super::eligibility::Eligibility;
use super::{Address, Backend, BackendId};

/// The backend set as it was when published: what the request path reads.
///
/// A snapshot never changes membership. The set publishes a new one on
/// every change (copy on write), and readers holding the old one finish with
/// it. Beside the members it keeps, packed by index, what picks read of
/// every backend they look at (eligibility bits, identifiers), so that a
/// pick among 10,000 backends touches the one backend it returns only when
/// the request clones its handle.
#[derive(Debug)]
pub struct Snapshot {
    backends: Vec<Backend>,
    /// Bit `i` set while backend `i` is plainly available; kept current by
    /// the backends' states (see `eligibility`).
    bits: Arc<Eligibility>,
    /// `backends[i].id()`, for the already-tried test of retries.
    ids: Box<[BackendId]>,
    version: u64,
}

impl Snapshot {
    pub(crate) fn new(backends: Vec<Backend>, version: u64) -> Arc<Self> {
        let bits = Eligibility::new(backends.len());
        for (index, backend) in backends.iter().enumerate() {
            backend.state().mirror(&bits, index);
        }
        let ids = backends.iter().map(Backend::id).collect();
        Arc::new(Self {
            backends,
            bits,
            ids,
            version,
        })
    }

    /// The members, in the order they joined.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Increases by one with every published change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The member at `address`, if any.
    pub fn get(&self, address: &Address) -> Option<&Backend> {
        self.backends.iter().find(|b| b.address() == address)
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// Whether backend `index` is plainly available: eligible at full share.
    /// `false` means "ask the backend's state" (it may still be available).
    #[inline]
    pub(crate) fn is_plain(&self, index: usize) -> bool {
        self.bits.is_plain(index)
    }

    /// The identifier of backend `index`.
    #[inline]
    pub(crate) fn id(&self, index: usize) -> BackendId {
        self.ids[index]
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            backends: Vec::new(),
            bits: Eligibility::new(0),
            ids: Box::default(),
            version: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::Verdict;
    use crate::clock;

    fn snapshot(n: usize) -> Arc<Snapshot> {
        let backends = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 1000 + i).parse().unwrap())
            .collect();
        Snapshot::new(backends, 0)
    }

    #[test]
    fn bits_follow_every_change_of_eligibility_and_share() {
        let snapshot = snapshot(70);
        let state = |i: usize| snapshot.backends()[i].state();
        assert!((0..70).all(|i| snapshot.is_plain(i)));
        state(65).eject(0, u64::MAX, 0);
        state(3).set_verdict(Verdict::Unhealthy, None);
        state(4).start_slow_start(clock::now(), clock::nanos(Duration::from_secs(60)));
        state(5).set_ramp_down(crate::backend::FULL_SHARE / 2);
        state(6).mark_removed();
        let not_plain: Vec<usize> = (0..70).filter(|&i| !snapshot.is_plain(i)).collect();
        assert_eq!(not_plain, [3, 4, 5, 6, 65]);
        state(65).readmit(1, 0);
        state(3).set_verdict(Verdict::Healthy, None);
        state(5).set_ramp_down(crate::backend::FULL_SHARE);
        state(6).mark_restored();
        let not_plain: Vec<usize> = (0..70).filter(|&i| !snapshot.is_plain(i)).collect();
        assert_eq!(not_plain, [4], "only the slow start is still on");
    }

    #[test]
    fn a_new_snapshot_starts_from_the_flags_as_they_are() {
        let first = snapshot(3);
        first.backends()[1].state().eject(0, u64::MAX, 0);
        let second = Snapshot::new(first.backends().to_vec(), 1);
        assert!(second.is_plain(0) && !second.is_plain(1) && second.is_plain(2));
        assert_eq!(second.id(1), first.backends()[1].id());
    }
}
