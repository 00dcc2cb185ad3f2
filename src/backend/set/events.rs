//! The set's events, and the two things members' health asks of it: a
//! home that announces an ejection ended on read, and a lock under which
//! ejection decisions see an exact count.

use std::sync::{Arc, PoisonError, Weak};

use tokio::sync::broadcast;

use super::super::home::Home;
use super::super::{Backend, BackendId, HealthEvent, HealthEventKind};
use super::{BackendSet, Shared};
use crate::clock::Nanos;

impl BackendSet {
    /// A receiver of every [`HealthEvent`] from now on: backends joining and
    /// leaving, health verdicts, ejections, returns and share changes.
    ///
    /// A subscriber that falls more than 4096 events behind misses the
    /// oldest (and is told so by `recv`); events are never held back for a
    /// slow subscriber.
    pub fn events(&self) -> broadcast::Receiver<HealthEvent> {
        self.shared.events.subscribe()
    }

    /// Sends an event to the subscribers, if any.
    pub(crate) fn emit(&self, backend: &Backend, kind: HealthEventKind) {
        self.shared.emit(backend, kind);
    }

    /// Runs `decide` with ejection decisions serialized, given how many
    /// members are ejected now and how many there are: what an ejection
    /// cap needs to be exact. Counting only reads the deadlines, so a
    /// backend whose ejection ran out never counts.
    pub(crate) fn deciding_ejection<R>(
        &self,
        now: Nanos,
        decide: impl FnOnce(usize, usize) -> R,
    ) -> R {
        let _decision = self
            .shared
            .ejecting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let snapshot = self.snapshot();
        let ejected = snapshot
            .backends()
            .iter()
            .filter(|b| b.state().is_ejected_at(now))
            .count();
        decide(ejected, snapshot.len())
    }

    /// Makes this set one of `backend`'s homes: told when its ejection ends
    /// on read, so that it can announce the return.
    pub(super) fn adopt(&self, backend: &Backend) {
        let home: Weak<dyn Home> = Arc::downgrade(&self.shared) as Weak<dyn Home>;
        backend.state().add_home(home);
    }
}

impl Shared {
    fn emit(&self, backend: &Backend, kind: HealthEventKind) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(HealthEvent::new(backend.clone(), kind));
        }
    }
}

impl Home for Shared {
    /// Announces the return of a member whose ejection ran out (a removed
    /// one has left: nothing to announce).
    fn returned(&self, id: BackendId) {
        let snapshot = self.current.load();
        if let Some(backend) = snapshot.backends().iter().find(|b| b.id() == id) {
            self.emit(backend, HealthEventKind::Returned);
        }
    }
}
