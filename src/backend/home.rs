//! The sets a backend belongs to, told when its ejection ends on read.
//!
//! An ejection ends by its deadline, checked by whoever next reads the
//! backend's eligibility (a pick, most often), not by a timer task: nothing
//! then depends on a runtime, and the ejection cap never counts a backend
//! whose time is up. The reader that ends it clears the flag, and the
//! backend's homes send the `Returned` event, since only a set knows its
//! subscribers. A set registers itself when the backend joins it, weakly,
//! so a dropped set is forgotten.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::BackendId;

/// A set that hears of its members' ejections ending on read.
pub(crate) trait Home: Send + Sync {
    /// The ejection of the backend whose state is `id` ran out.
    fn returned(&self, id: BackendId);
}

/// The homes of one backend. Locked only when a backend joins a set and
/// when an ejection ends: never by a plain request.
#[derive(Default)]
pub(super) struct Homes {
    list: Mutex<Vec<Weak<dyn Home>>>,
}

impl Homes {
    /// Adds `home`, unless it is there already; forgets dropped ones.
    pub(super) fn add(&self, home: Weak<dyn Home>) {
        let mut list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|h| h.strong_count() > 0);
        if !list.iter().any(|h| Weak::ptr_eq(h, &home)) {
            list.push(home);
        }
    }

    /// Tells every home that the ejection of `id` ran out. The homes are
    /// called outside the lock, so they may read the backend again.
    pub(super) fn returned(&self, id: BackendId) {
        let homes: Vec<Arc<dyn Home>> = self
            .list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for home in homes {
            home.returned(id);
        }
    }
}

impl fmt::Debug for Homes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Homes").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    use super::*;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Home for Count {
        fn returned(&self, _id: BackendId) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn each_live_home_hears_once() {
        let homes = Homes::default();
        let one = Arc::new(Count::default());
        let gone = Arc::new(Count::default());
        let weak: Weak<dyn Home> = Arc::downgrade(&one) as Weak<dyn Home>;
        homes.add(weak.clone());
        homes.add(weak);
        homes.add(Arc::downgrade(&gone) as Weak<dyn Home>);
        drop(gone);
        homes.returned(BackendId::next());
        assert_eq!(one.0.load(Relaxed), 1);
    }
}
