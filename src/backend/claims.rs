//! Which discovery sources list which backends: the union of several
//! sources over one set.
//!
//! Each source that [`follow`](super::BackendSet::follow_source)s into a set
//! *claims* the addresses it lists. An address stays a member while at
//! least one source claims it, and drains when the last claim goes, so a
//! backend that DNS and etcd both list survives either of them dropping it.
//! When sources disagree on a backend's settings (weight, protocol), the
//! source that started following first wins: the rule depends only on the
//! configuration, so two proxies configured alike pick the same weights
//! (consistent hashing needs that to agree).
//!
//! Direct writes to the set (`insert`, `apply`, `replace`) make no claim; a
//! direct `remove` also drops the address's claims (the operator's word
//! wins until a source lists the address again).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rustc_hash::FxHashMap;

use super::{Address, Backend, Update};

/// One following source; ids grow in the order sources start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SourceId(u64);

impl SourceId {
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Relaxed))
    }
}

/// A source's name and identity.
#[derive(Clone, Debug)]
pub(crate) struct Source {
    pub(crate) id: SourceId,
    pub(crate) label: Arc<str>,
}

/// What one source says about one address.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The source lists the address with these settings.
    Insert(Backend),
    /// The source no longer lists it.
    Remove(Address),
}

struct Holder {
    source: SourceId,
    label: Arc<str>,
    backend: Backend,
}

/// The claims on every claimed address. Addresses that no source lists
/// have no entry, so the map is as large as the discovered membership.
#[derive(Default)]
pub(crate) struct Claims {
    by_address: FxHashMap<Address, Vec<Holder>>,
}

impl Claims {
    /// Records `source`'s claims and returns what the membership must do:
    /// insert (or reconfigure to the winning settings) or remove.
    pub(crate) fn resolve(&mut self, source: &Source, claims: Vec<Claim>) -> Vec<Update> {
        let mut updates = Vec::with_capacity(claims.len());
        for claim in claims {
            match claim {
                Claim::Insert(backend) => {
                    let holders = self
                        .by_address
                        .entry(backend.address().clone())
                        .or_default();
                    match holders.iter_mut().find(|h| h.source == source.id) {
                        Some(holder) => holder.backend = backend,
                        None => {
                            holders.push(Holder {
                                source: source.id,
                                label: Arc::clone(&source.label),
                                backend,
                            });
                            holders.sort_by_key(|h| h.source);
                        }
                    }
                    updates.push(Update::Insert(holders[0].backend.clone()));
                }
                Claim::Remove(address) => {
                    let Some(holders) = self.by_address.get_mut(&address) else {
                        continue;
                    };
                    holders.retain(|h| h.source != source.id);
                    match holders.first() {
                        Some(winner) => updates.push(Update::Insert(winner.backend.clone())),
                        None => {
                            self.by_address.remove(&address);
                            updates.push(Update::Remove(address));
                        }
                    }
                }
            }
        }
        updates
    }

    /// Drops every claim on `address` (a direct removal).
    pub(crate) fn forget(&mut self, address: &Address) {
        self.by_address.remove(address);
    }

    /// The labels of the sources that list `address`, first-started first.
    pub(crate) fn sources(&self, address: &Address) -> Vec<Arc<str>> {
        self.by_address
            .get(address)
            .map(|holders| holders.iter().map(|h| Arc::clone(&h.label)).collect())
            .unwrap_or_default()
    }

    /// How many addresses are claimed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_address.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(label: &str) -> Source {
        Source {
            id: SourceId::next(),
            label: Arc::from(label),
        }
    }

    fn backend(text: &str) -> Backend {
        text.parse().unwrap()
    }

    fn describe(updates: &[Update]) -> Vec<String> {
        updates
            .iter()
            .map(|u| match u {
                Update::Insert(b) => format!("+{} w{}", b.address().as_str(), b.weight()),
                Update::Remove(a) => format!("-{}", a.as_str()),
            })
            .collect()
    }

    #[test]
    fn an_address_stays_while_any_source_lists_it() {
        let (dns, etcd) = (source("dns"), source("etcd"));
        let mut claims = Claims::default();
        let a = backend("http://10.0.0.1:80,weight=2");
        let same_a_heavier = backend("http://10.0.0.1:80,weight=9");
        assert_eq!(
            describe(&claims.resolve(&dns, vec![Claim::Insert(a.clone())])),
            ["+http://10.0.0.1:80 w2"]
        );
        // The later source's weight loses to the first-started source's.
        assert_eq!(
            describe(&claims.resolve(&etcd, vec![Claim::Insert(same_a_heavier)])),
            ["+http://10.0.0.1:80 w2"]
        );
        assert_eq!(claims.sources(a.address()).len(), 2);
        // dns drops it: etcd still lists it, so it stays, with etcd's weight.
        assert_eq!(
            describe(&claims.resolve(&dns, vec![Claim::Remove(a.address().clone())])),
            ["+http://10.0.0.1:80 w9"]
        );
        assert_eq!(
            describe(&claims.resolve(&etcd, vec![Claim::Remove(a.address().clone())])),
            ["-http://10.0.0.1:80"]
        );
        assert_eq!(claims.len(), 0, "nothing kept for an address no one lists");
        // A removal by a source that never listed it changes nothing.
        assert!(
            claims
                .resolve(&dns, vec![Claim::Remove(a.address().clone())])
                .is_empty()
        );
    }
}
