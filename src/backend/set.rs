//! The backend set: members, draining backends, and published snapshots.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use tokio::sync::{broadcast, watch};

use super::claims::{Claim, Claims, Source};
use super::{Address, Backend, HealthEvent, HealthEventKind, Snapshot};
use crate::clock::{self, Nanos};

mod events;
mod operations;

/// How many events a slow subscriber may fall behind before it misses some.
const EVENT_BACKLOG: usize = 4096;

/// Something rebuilt synchronously whenever the set publishes a snapshot
/// (a balancer's precomputed tables).
pub(crate) trait SnapshotListener: Send + Sync {
    fn published(&self, snapshot: &Arc<Snapshot>);
}

/// A change to the set's membership.
#[derive(Clone, Debug)]
pub enum Update {
    /// Adds `backend`, or changes the weight of the member at its address
    /// (which keeps its runtime state).
    Insert(Backend),
    /// Removes the member at this address; it drains.
    Remove(Address),
}

/// The dynamic set of backends requests are balanced over.
///
/// Cheap to clone; clones share one set. Readers take a [`Snapshot`] without
/// a lock. Writers ([`insert`](Self::insert), [`remove`](Self::remove),
/// [`apply`](Self::apply), [`replace`](Self::replace), or a
/// [`Discover`](tower::discover::Discover) stream via
/// [`follow`](Self::follow)) serialize on a mutex that the request path never
/// takes, publish a new snapshot, and rebuild every balancer's tables before
/// they return.
///
/// A member that stays across a change keeps its runtime state, even when its
/// weight changes. A removed member *drains*: it gets no new requests, and the
/// requests it has finish; [`draining`](Self::draining) lists those still busy.
/// A backend added to a running set gets [slow start](Self::with_slow_start).
///
/// An operator's changes are explicit methods too, each with its event:
/// [`drain`](Self::drain) / [`undrain`](Self::undrain),
/// [`set_weight`](Self::set_weight), [`eject`](Self::eject) /
/// [`readmit`](Self::readmit) and [`set_slow_start`](Self::set_slow_start).
/// Builders ([`with_slow_start`](Self::with_slow_start)) never change a set
/// that other handles see.
///
/// ```
/// use tower_lb::{Backend, BackendSet};
///
/// let set = BackendSet::new([
///     "http://127.0.0.1:9001".parse::<Backend>()?,
///     "http://127.0.0.1:9002,weight=2".parse()?,
/// ]);
/// set.insert("http://127.0.0.1:9003".parse()?);
/// set.remove(&"http://127.0.0.1:9001".parse()?);
/// assert_eq!(set.snapshot().len(), 2);
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct BackendSet {
    shared: Arc<Shared>,
}

struct Shared {
    current: ArcSwap<Snapshot>,
    sender: watch::Sender<Arc<Snapshot>>,
    events: broadcast::Sender<HealthEvent>,
    slow_start: AtomicU64,
    writer: Mutex<Writer>,
    /// Serializes ejection decisions, so that the ejection cap is exact.
    /// Only failures past outlier detection's threshold and operators take
    /// it; never a plain request.
    ejecting: Mutex<()>,
}

struct Writer {
    members: Vec<Backend>,
    /// Where each member is in `members`: inserts stay O(1) at 10,000.
    index: FxHashMap<Address, usize>,
    draining: Vec<Backend>,
    version: u64,
    listeners: Vec<Weak<dyn SnapshotListener>>,
    /// Which following sources list which addresses (see `claims`).
    claims: Claims,
}

impl BackendSet {
    /// A set of these backends. A later duplicate address replaces an earlier
    /// one's weight.
    pub fn new(backends: impl IntoIterator<Item = Backend>) -> Self {
        let mut writer = Writer {
            members: Vec::new(),
            index: FxHashMap::default(),
            draining: Vec::new(),
            version: 0,
            listeners: Vec::new(),
            claims: Claims::default(),
        };
        for backend in backends {
            writer.insert(backend, None);
        }
        let snapshot = Snapshot::new(writer.members.clone(), 0);
        let (sender, _) = watch::channel(Arc::clone(&snapshot));
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let members = snapshot.backends().to_vec();
        let set = Self {
            shared: Arc::new(Shared {
                current: ArcSwap::new(snapshot),
                sender,
                events,
                slow_start: AtomicU64::new(0),
                writer: Mutex::new(writer),
                ejecting: Mutex::new(()),
            }),
        };
        for backend in &members {
            set.adopt(backend);
        }
        set
    }

    /// This set with slow start: backends added to the running set (and,
    /// through the health layers, backends that recover or are let back
    /// after an ejection) ramp their share of traffic from 10 % to full over
    /// `window`, so a cold cache or a just-started JIT is not flooded.
    /// Members present at construction start at full share. Zero (the
    /// default) turns it off.
    ///
    /// A builder: it never changes a set that other handles see. On the
    /// only handle it sets the window; on a shared one (a clone) it returns
    /// a new set of the same members, which keep their runtime state, and
    /// leaves the original as it was. To change a running set, call
    /// [`set_slow_start`](Self::set_slow_start).
    #[must_use]
    pub fn with_slow_start(self, window: Duration) -> Self {
        let set = if Arc::strong_count(&self.shared) == 1 {
            self
        } else {
            BackendSet::new(self.snapshot().backends().iter().cloned())
        };
        set.shared.slow_start.store(clock::nanos(window), Relaxed);
        set
    }

    /// The slow-start window (zero: off).
    pub fn slow_start(&self) -> Duration {
        Duration::from_nanos(self.slow_start_nanos())
    }

    pub(crate) fn slow_start_nanos(&self) -> Nanos {
        self.shared.slow_start.load(Relaxed)
    }

    /// Starts `backend`'s slow start at `now`, if the set has one.
    pub(crate) fn begin_slow_start(&self, backend: &Backend, now: Nanos) {
        backend
            .state()
            .start_slow_start(now, self.slow_start_nanos());
    }

    /// The current snapshot. Lock-free.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }

    /// A receiver that sees every published snapshot, for tasks that follow
    /// membership (health probing, status views).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.shared.sender.subscribe()
    }

    /// Adds a backend, or reweights the member at its address.
    pub fn insert(&self, backend: Backend) {
        self.apply([Update::Insert(backend)]);
    }

    /// Removes the member at `address`; returns it if it was a member. It
    /// drains: in-flight requests finish, no new ones arrive.
    pub fn remove(&self, address: &Address) -> Option<Backend> {
        let found = self.snapshot().get(address).cloned();
        self.apply([Update::Remove(address.clone())]);
        found
    }

    /// Applies several changes and publishes once.
    pub fn apply(&self, updates: impl IntoIterator<Item = Update>) {
        self.write(|_| updates.into_iter().collect());
    }

    /// Applies what `source` now lists or no longer lists: the union of
    /// all sources decides membership (see `claims`). Publishes once.
    pub(crate) fn apply_claims(&self, source: &Source, claims: Vec<Claim>) {
        self.write(|writer| writer.claims.resolve(source, claims));
    }

    /// The labels of the discovery sources that list the member at
    /// `address` (first-started first); empty for a member only written
    /// directly, or not a member.
    ///
    /// ```
    /// use tower::discover::Change;
    /// use tower_lb::{Backend, BackendSet};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_lb::ConfigError> {
    /// let set = BackendSet::default();
    /// let backend: Backend = "http://127.0.0.1:9001".parse()?;
    /// let listed = futures_util::stream::iter([
    ///     Ok::<_, std::convert::Infallible>(Change::Insert(1, backend.clone())),
    /// ]);
    /// set.follow_source("static", listed).await.unwrap();
    /// assert_eq!(&*set.sources(backend.address())[0], "static");
    /// # Ok(())
    /// # }
    /// ```
    pub fn sources(&self, address: &Address) -> Vec<Arc<str>> {
        self.lock().claims.sources(address)
    }

    /// The sources of each of `addresses`, under one lock (status views).
    #[cfg(feature = "metrics")]
    pub(crate) fn sources_of<'a>(
        &self,
        addresses: impl IntoIterator<Item = &'a Address>,
    ) -> Vec<Vec<Arc<str>>> {
        let writer = self.lock();
        addresses
            .into_iter()
            .map(|address| writer.claims.sources(address))
            .collect()
    }

    /// How many addresses discovery sources claim (tests of bounded memory).
    #[cfg(test)]
    pub(crate) fn claimed(&self) -> usize {
        self.lock().claims.len()
    }

    /// Runs the updates `make` returns under the writer lock, publishes
    /// once if anything changed, then sends the events.
    fn write(&self, make: impl FnOnce(&mut Writer) -> Vec<Update>) {
        let mut writer = self.lock();
        let updates = make(&mut writer);
        let slow_start = Some((clock::now(), self.shared.slow_start.load(Relaxed)));
        let mut changed = false;
        let mut events = Vec::new();
        for update in updates {
            match update {
                Update::Insert(backend) => match writer.insert(backend, slow_start) {
                    Inserted::New(backend) => events.push((backend, HealthEventKind::Joined)),
                    Inserted::Reweighted => changed = true,
                    Inserted::Same => {}
                },
                Update::Remove(address) => {
                    if let Some(backend) = writer.remove(&address) {
                        events.push((backend, HealthEventKind::Left));
                    }
                }
            }
        }
        if changed || !events.is_empty() {
            self.publish(&mut writer);
        }
        drop(writer);
        for (backend, kind) in events {
            if kind == HealthEventKind::Joined {
                self.adopt(&backend);
            }
            self.emit(&backend, kind);
        }
    }

    /// Makes the membership exactly `backends` (a reloaded configuration):
    /// members not listed drain, new ones join, the rest keep their state and
    /// take the listed weight. Publishes once.
    pub fn replace(&self, backends: impl IntoIterator<Item = Backend>) {
        let wanted: Vec<Backend> = backends.into_iter().collect();
        let listed: std::collections::HashSet<&Address> =
            wanted.iter().map(Backend::address).collect();
        let current = self.snapshot();
        let mut updates: Vec<Update> = current
            .backends()
            .iter()
            .filter(|member| !listed.contains(member.address()))
            .map(|member| Update::Remove(member.address().clone()))
            .collect();
        updates.extend(wanted.into_iter().map(Update::Insert));
        self.apply(updates);
    }

    /// Removed members that still have requests in flight.
    pub fn draining(&self) -> Vec<Backend> {
        let mut writer = self.lock();
        writer.draining.retain(|b| b.state().in_flight() > 0);
        writer.draining.clone()
    }

    /// Registers a listener; it is called at once with the current snapshot,
    /// and then after each publication, under the writer lock so that no
    /// change is missed or seen out of order.
    pub(crate) fn listen(&self, listener: Weak<dyn SnapshotListener>) {
        let mut writer = self.lock();
        if let Some(strong) = listener.upgrade() {
            strong.published(&self.shared.current.load_full());
        }
        writer.listeners.push(listener);
    }

    fn publish(&self, writer: &mut MutexGuard<'_, Writer>) {
        writer.version += 1;
        writer.draining.retain(|b| b.state().in_flight() > 0);
        let snapshot = Snapshot::new(writer.members.clone(), writer.version);
        self.shared.current.store(Arc::clone(&snapshot));
        writer
            .listeners
            .retain(|listener| match listener.upgrade() {
                Some(listener) => {
                    listener.published(&snapshot);
                    true
                }
                None => false,
            });
        self.shared.sender.send_replace(snapshot);
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.shared
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What an insert did.
enum Inserted {
    New(Backend),
    Reweighted,
    Same,
}

impl Writer {
    /// Inserts or reweights; a new member gets slow start when `slow_start`
    /// (now, window) is given, that is, when the set is already running.
    fn insert(&mut self, backend: Backend, slow_start: Option<(Nanos, Nanos)>) -> Inserted {
        if let Some(&position) = self.index.get(backend.address()) {
            let slot = &self.members[position];
            if slot.same_settings(&backend) {
                return Inserted::Same;
            }
            slot.reconfigure(&backend);
            return Inserted::Reweighted;
        }
        // A backend removed and listed again before it drained keeps its
        // state, so its in-flight count stays right.
        let backend = match self
            .draining
            .iter()
            .position(|d| d.address() == backend.address())
        {
            Some(index) => {
                let old = self.draining.swap_remove(index);
                old.state().mark_restored();
                old.reconfigure(&backend);
                old
            }
            None => {
                // The very backend removed earlier (it drained), inserted
                // again: it is a member again, not left out forever.
                if backend.state().is_removed() {
                    backend.state().mark_restored();
                }
                backend
            }
        };
        if let Some((now, window)) = slow_start {
            backend.state().start_slow_start(now, window);
        }
        self.index
            .insert(backend.address().clone(), self.members.len());
        self.members.push(backend.clone());
        Inserted::New(backend)
    }

    fn remove(&mut self, address: &Address) -> Option<Backend> {
        self.claims.forget(address);
        let position = self.index.remove(address)?;
        let backend = self.members.remove(position);
        for (offset, member) in self.members[position..].iter().enumerate() {
            self.index
                .insert(member.address().clone(), position + offset);
        }
        backend.state().mark_removed();
        self.draining.push(backend.clone());
        Some(backend)
    }
}

impl fmt::Debug for BackendSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.snapshot();
        f.debug_struct("BackendSet")
            .field("version", &snapshot.version())
            .field("backends", &snapshot.backends())
            .finish()
    }
}

/// Every constructor that reads a set takes `impl AsRef<BackendSet>`, so a
/// set is passed the same way everywhere, by value or by reference.
impl AsRef<BackendSet> for BackendSet {
    fn as_ref(&self) -> &BackendSet {
        self
    }
}

impl Default for BackendSet {
    fn default() -> Self {
        Self::new([])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::InFlight;

    fn backend(text: &str) -> Backend {
        text.parse().unwrap()
    }

    #[test]
    fn state_survives_reweighting_and_rebuilds() {
        let set = BackendSet::new([backend("http://127.0.0.1:1"), backend("http://127.0.0.1:2")]);
        let first = set.snapshot().backends()[0].clone();
        let _guard = InFlight::begin(first.clone());
        set.insert(backend("http://127.0.0.1:1,weight=4"));
        set.insert(backend("http://127.0.0.1:3"));
        let again = set
            .snapshot()
            .get(&first.address().clone())
            .unwrap()
            .clone();
        assert_eq!(again.weight(), 4);
        assert!(again.same_state(&first));
        assert_eq!(again.state().in_flight(), 1);
        assert_eq!(set.snapshot().version(), 2);
    }

    #[test]
    fn removed_members_drain_until_idle() {
        let set = BackendSet::new([backend("http://127.0.0.1:1"), backend("http://127.0.0.1:2")]);
        let first = set.snapshot().backends()[0].clone();
        let guard = InFlight::begin(first.clone());
        assert!(set.remove(first.address()).is_some());
        assert!(first.state().is_removed());
        assert_eq!(set.snapshot().len(), 1);
        assert_eq!(set.draining().len(), 1);
        drop(guard);
        assert!(set.draining().is_empty());
    }

    #[test]
    fn relisting_a_draining_backend_restores_its_state() {
        let set = BackendSet::new([backend("http://127.0.0.1:1")]);
        let first = set.snapshot().backends()[0].clone();
        let _guard = InFlight::begin(first.clone());
        set.remove(first.address());
        set.insert(backend("http://127.0.0.1:1"));
        let back = set.snapshot().backends()[0].clone();
        assert!(back.same_state(&first));
        assert!(!back.state().is_removed());
        assert!(set.draining().is_empty());
    }

    #[test]
    fn replace_diffs_and_publishes_once() {
        let set = BackendSet::new([backend("http://127.0.0.1:1"), backend("http://127.0.0.1:2")]);
        let kept = set.snapshot().backends()[1].clone();
        set.replace([backend("http://127.0.0.1:2"), backend("http://127.0.0.1:3")]);
        let snapshot = set.snapshot();
        assert_eq!(snapshot.version(), 1);
        let addresses: Vec<_> = snapshot
            .backends()
            .iter()
            .map(|b| b.address().as_str().to_owned())
            .collect();
        assert_eq!(addresses, ["http://127.0.0.1:2", "http://127.0.0.1:3"]);
        assert!(snapshot.backends()[0].same_state(&kept));
    }

    #[tokio::test]
    async fn membership_changes_are_events() {
        let set = BackendSet::new([backend("http://127.0.0.1:1")]);
        let mut events = set.events();
        set.replace([backend("http://127.0.0.1:2")]);
        let mut seen = Vec::new();
        while let Ok(event) = events.try_recv() {
            seen.push((
                event.backend().address().as_str().to_owned(),
                event.kind().clone(),
            ));
        }
        assert_eq!(
            seen,
            [
                ("http://127.0.0.1:1".to_owned(), HealthEventKind::Left),
                ("http://127.0.0.1:2".to_owned(), HealthEventKind::Joined),
            ]
        );
    }

    #[test]
    fn backends_added_later_slow_start() {
        let set = BackendSet::new([backend("http://127.0.0.1:1")])
            .with_slow_start(Duration::from_secs(30));
        assert_eq!(set.snapshot().backends()[0].state().share(), 1.0);
        set.insert(backend("http://127.0.0.1:2"));
        let late = set.snapshot().backends()[1].clone();
        assert!(late.state().share() < 0.2);
    }

    #[test]
    fn building_never_changes_a_shared_set() {
        let set = BackendSet::new([backend("http://127.0.0.1:1")]);
        let other = set.clone().with_slow_start(Duration::from_secs(30));
        assert_eq!(
            set.slow_start(),
            Duration::ZERO,
            "the original is untouched"
        );
        assert_eq!(other.slow_start(), Duration::from_secs(30));
        assert!(other.snapshot().backends()[0].same_state(&set.snapshot().backends()[0]));
        let alone = BackendSet::default().with_slow_start(Duration::from_secs(5));
        assert_eq!(alone.slow_start(), Duration::from_secs(5));
    }

    #[test]
    fn ejections_that_ran_out_are_announced_by_the_read_that_ends_them() {
        let set = BackendSet::new([backend("http://127.0.0.1:1")]);
        let member = set.snapshot().backends()[0].clone();
        let mut events = set.events();
        let now = clock::now();
        assert!(member.state().eject(now, now + 1, 0));
        assert!(set.deciding_ejection(now, |ejected, of| (ejected, of)) == (1, 1));
        let later = now + 1;
        assert_eq!(set.deciding_ejection(later, |ejected, _| ejected), 0);
        assert!(member.state().eligible_at(|| later));
        assert_eq!(
            events.try_recv().unwrap().kind(),
            &HealthEventKind::Returned
        );
        assert!(events.try_recv().is_err(), "once");
    }
}
