//! An operator's changes to a running set: drain, weight, eject, readmit,
//! slow start.
//!
//! Each is an explicit method that says what it changes and sends its
//! [`HealthEvent`](super::HealthEvent), so that an admin API, a reload and
//! a test all change a set the same way. None of them blocks the request
//! path: drains and ejections are flags in the member's state (the
//! snapshots' eligibility bits follow them), and a new weight publishes a
//! snapshot like any membership change.
//!
//! The `*_by` forms, for the crate's admin service, name who made the
//! change in the event ([`HealthEvent::actor`]).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::super::member::check_weight;
use super::super::{Address, Backend, HealthEvent, HealthEventKind};
use super::BackendSet;
use crate::clock;
use crate::error::ConfigError;

impl BackendSet {
    /// Changes the slow-start window of the running set, for backends that
    /// join, recover or return from now on (ramps under way keep theirs).
    /// Zero turns slow start off.
    pub fn set_slow_start(&self, window: Duration) {
        self.shared.slow_start.store(clock::nanos(window), Relaxed);
    }

    /// Drains the member at `address`: it stays in the set (and keeps its
    /// state and place in hash tables) but gets no new requests, not even
    /// from panic routing, while its requests in flight finish. Returns
    /// whether that changed anything (`false`: no such member, or drained
    /// already). Sends [`HealthEventKind::Drained`].
    ///
    /// ```
    /// use tower_lb::BackendSet;
    ///
    /// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002".parse()?]);
    /// let address = "http://127.0.0.1:9001".parse()?;
    /// assert!(set.drain(&address));
    /// assert!(!set.snapshot().get(&address).unwrap().state().is_eligible());
    /// assert!(set.undrain(&address));
    /// # Ok::<(), tower_lb::ConfigError>(())
    /// ```
    pub fn drain(&self, address: &Address) -> bool {
        self.drain_by(address, None)
    }

    pub(crate) fn drain_by(&self, address: &Address, actor: Option<&Arc<str>>) -> bool {
        let Some(backend) = self.member(address) else {
            return false;
        };
        let changed = backend.state().set_draining(true);
        if changed {
            self.announce(&backend, HealthEventKind::Drained, actor);
        }
        changed
    }

    /// Ends a [`drain`](Self::drain): the member takes new requests again,
    /// through slow start when the set has one. Returns whether that changed
    /// anything. Sends [`HealthEventKind::Undrained`].
    pub fn undrain(&self, address: &Address) -> bool {
        self.undrain_by(address, None)
    }

    pub(crate) fn undrain_by(&self, address: &Address, actor: Option<&Arc<str>>) -> bool {
        let Some(backend) = self.member(address) else {
            return false;
        };
        let changed = backend.state().set_draining(false);
        if changed {
            self.begin_slow_start(&backend, clock::now());
            self.announce(&backend, HealthEventKind::Undrained, actor);
        }
        changed
    }

    /// Sets the weight of the member at `address`, keeping its runtime
    /// state, and rebuilds the balancers' tables before it returns. Returns
    /// whether that changed anything (`false`: no such member, or that
    /// weight already). Sends [`HealthEventKind::Reweighted`].
    ///
    /// # Errors
    ///
    /// A weight of 0 or above [`MAX_WEIGHT`](crate::backend::MAX_WEIGHT)
    /// (to take a backend out of rotation, [`drain`](Self::drain) it).
    pub fn set_weight(&self, address: &Address, weight: u32) -> Result<bool, ConfigError> {
        self.set_weight_by(address, weight, None)
    }

    pub(crate) fn set_weight_by(
        &self,
        address: &Address,
        weight: u32,
        actor: Option<&Arc<str>>,
    ) -> Result<bool, ConfigError> {
        check_weight(weight, address)?;
        let mut writer = self.lock();
        let Some(&position) = writer.index.get(address) else {
            return Ok(false);
        };
        let member = writer.members[position].clone();
        let from = member.weight();
        if from == weight {
            return Ok(false);
        }
        member.store_weight(weight);
        self.publish(&mut writer);
        drop(writer);
        let kind = HealthEventKind::Reweighted { from, to: weight };
        self.announce(&member, kind, actor);
        Ok(true)
    }

    /// Ejects the member at `address` for `duration` from now, whatever
    /// outlier detection thinks and whatever its ejection cap (an operator
    /// knows something it does not); an ejection in force gets this
    /// deadline instead. It comes back by itself at the deadline, through
    /// slow start. Returns whether `address` is a member. Sends
    /// [`HealthEventKind::Ejected`] with a `count` of 0.
    pub fn eject(&self, address: &Address, duration: Duration) -> bool {
        self.eject_by(address, duration, None)
    }

    pub(crate) fn eject_by(
        &self,
        address: &Address,
        duration: Duration,
        actor: Option<&Arc<str>>,
    ) -> bool {
        let Some(backend) = self.member(address) else {
            return false;
        };
        let now = clock::now();
        let until = now.saturating_add(clock::nanos(duration));
        let window = self.slow_start_nanos();
        self.deciding_ejection(now, |_, _| {
            let state = backend.state();
            if !state.eject(now, until, window) {
                state.reschedule_ejection(until, window);
            }
        });
        let kind = HealthEventKind::Ejected { duration, count: 0 };
        self.announce(&backend, kind, actor);
        true
    }

    /// Ends the ejection of the member at `address` now, before its
    /// deadline; it returns through slow start. Returns whether an ejection
    /// was in force. Sends [`HealthEventKind::Returned`].
    pub fn readmit(&self, address: &Address) -> bool {
        self.readmit_by(address, None)
    }

    pub(crate) fn readmit_by(&self, address: &Address, actor: Option<&Arc<str>>) -> bool {
        self.member(address)
            .is_some_and(|backend| self.let_back_by(&backend, actor))
    }

    /// Ends `backend`'s ejection now and announces it; returns whether one
    /// was in force.
    pub(crate) fn let_back(&self, backend: &Backend) -> bool {
        self.let_back_by(backend, None)
    }

    fn let_back_by(&self, backend: &Backend, actor: Option<&Arc<str>>) -> bool {
        let returned = backend
            .state()
            .readmit(clock::now(), self.slow_start_nanos());
        if returned {
            self.announce(backend, HealthEventKind::Returned, actor);
        }
        returned
    }

    /// Sends the event of an operator's change, naming `actor` when known.
    fn announce(&self, backend: &Backend, kind: HealthEventKind, actor: Option<&Arc<str>>) {
        let Some(actor) = actor else {
            return self.emit(backend, kind);
        };
        if self.shared.events.receiver_count() > 0 {
            let event = HealthEvent::new(backend.clone(), kind).by(Arc::clone(actor));
            let _ = self.shared.events.send(event);
        }
    }

    /// The member at `address`, if any.
    fn member(&self, address: &Address) -> Option<Backend> {
        self.snapshot().get(address).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_of(n: u16) -> BackendSet {
        BackendSet::new((1..=n).map(|port| format!("http://127.0.0.1:{port}").parse().unwrap()))
    }

    fn address(port: u16) -> Address {
        format!("http://127.0.0.1:{port}").parse().unwrap()
    }

    fn kinds(events: &mut tokio::sync::broadcast::Receiver<HealthEvent>) -> Vec<HealthEventKind> {
        std::iter::from_fn(|| events.try_recv().ok())
            .map(|event| event.kind().clone())
            .collect()
    }

    #[test]
    fn draining_keeps_the_member_out_of_rotation_until_undrained() {
        let set = set_of(2).with_slow_start(Duration::from_secs(10));
        let mut events = set.events();
        let member = set.snapshot().get(&address(1)).unwrap().clone();
        assert!(set.drain(&address(1)));
        assert!(!set.drain(&address(1)), "drained already");
        assert!(!set.drain(&address(9)), "not a member");
        assert!(!member.state().is_eligible() && member.state().is_draining());
        assert_eq!(set.snapshot().len(), 2, "still a member");
        assert!(set.undrain(&address(1)));
        assert!(member.state().is_eligible());
        assert!(member.state().share() < 0.2, "back through slow start");
        assert_eq!(
            kinds(&mut events),
            [HealthEventKind::Drained, HealthEventKind::Undrained]
        );
    }

    #[test]
    fn a_new_weight_keeps_the_state_and_publishes() {
        let set = set_of(2);
        let mut events = set.events();
        let member = set.snapshot().get(&address(2)).unwrap().clone();
        let version = set.snapshot().version();
        assert!(set.set_weight(&address(2), 5).unwrap());
        assert!(!set.set_weight(&address(2), 5).unwrap(), "same weight");
        assert!(!set.set_weight(&address(9), 5).unwrap(), "not a member");
        let refused = set.set_weight(&address(2), 0).unwrap_err();
        assert!(
            refused.message().contains("weight must be 1 to"),
            "{refused}"
        );
        let now = set.snapshot().get(&address(2)).unwrap().clone();
        assert_eq!(now.weight(), 5);
        assert!(now.same_state(&member));
        assert_eq!(set.snapshot().version(), version + 1);
        assert_eq!(
            kinds(&mut events),
            [HealthEventKind::Reweighted { from: 1, to: 5 }]
        );
    }

    #[test]
    fn an_operator_named_in_the_change_is_named_in_its_event() {
        let set = set_of(2);
        let mut events = set.events();
        let alice: Arc<str> = Arc::from("alice");
        assert!(set.drain_by(&address(1), Some(&alice)));
        assert!(set.set_weight_by(&address(2), 3, Some(&alice)).unwrap());
        assert!(set.eject_by(&address(2), Duration::from_secs(1), Some(&alice)));
        assert!(set.readmit_by(&address(2), Some(&alice)));
        assert!(set.undrain(&address(1)));
        let actors: Vec<Option<String>> = std::iter::from_fn(|| events.try_recv().ok())
            .map(|event| event.actor().map(str::to_owned))
            .collect();
        let alice = Some("alice".to_owned());
        assert_eq!(
            actors,
            [alice.clone(), alice.clone(), alice.clone(), alice, None]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_operator_ejection_lasts_its_duration_and_may_end_early() {
        let set = set_of(2);
        let mut events = set.events();
        let member = set.snapshot().get(&address(1)).unwrap().clone();
        assert!(set.eject(&address(1), Duration::from_secs(60)));
        assert!(!member.state().is_eligible());
        assert!(set.readmit(&address(1)));
        assert!(!set.readmit(&address(1)), "nothing left to end");
        assert!(member.state().is_eligible());
        assert!(set.eject(&address(1), Duration::from_secs(60)));
        assert!(
            set.eject(&address(1), Duration::from_secs(5)),
            "a new deadline"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(member.state().is_eligible(), "out at the new deadline");
        let duration = Duration::from_secs(60);
        assert_eq!(
            kinds(&mut events),
            [
                HealthEventKind::Ejected { duration, count: 0 },
                HealthEventKind::Returned,
                HealthEventKind::Ejected { duration, count: 0 },
                HealthEventKind::Ejected {
                    duration: Duration::from_secs(5),
                    count: 0
                },
                HealthEventKind::Returned,
            ]
        );
    }

    #[test]
    fn a_drain_ends_with_the_membership() {
        let set = set_of(1);
        let member = set.snapshot().get(&address(1)).unwrap().clone();
        let _busy = crate::backend::InFlight::begin(member.clone());
        assert!(set.drain(&address(1)));
        set.remove(&address(1));
        // Listed again while its request still runs: the same state, not drained.
        set.insert("http://127.0.0.1:1".parse().unwrap());
        let again = set.snapshot().get(&address(1)).unwrap().clone();
        assert!(again.same_state(&member));
        assert!(again.state().is_eligible() && !again.state().is_draining());
    }

    #[test]
    fn the_slow_start_of_a_running_set_changes_for_later_joins() {
        let set = set_of(1);
        set.set_slow_start(Duration::from_secs(30));
        assert_eq!(set.slow_start(), Duration::from_secs(30));
        set.insert("http://127.0.0.1:7".parse().unwrap());
        assert!(set.snapshot().get(&address(7)).unwrap().state().share() < 0.2);
    }
}
