//! What one source lists now, and the changes that take the set from the
//! last listing to the next.

use std::collections::HashMap;
use std::hash::Hash;

use tower::discover::Change;

use crate::Backend;

/// The backends one source lists, by the source's keys.
#[derive(Debug)]
pub(crate) struct Listing<K> {
    current: HashMap<K, Backend>,
}

impl<K> Default for Listing<K> {
    fn default() -> Self {
        Self {
            current: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Listing<K> {
    /// Makes `next` the listing; the changes are what differs: inserts of
    /// new keys and of keys whose backend's address or settings changed,
    /// removals of keys no longer listed. Keys listed again as they were
    /// cause no change, so re-reading a source applies nothing twice.
    pub(crate) fn replace(&mut self, next: HashMap<K, Backend>) -> Vec<Change<K, Backend>> {
        let mut changes: Vec<Change<K, Backend>> = self
            .current
            .keys()
            .filter(|key| !next.contains_key(*key))
            .map(|key| Change::Remove(key.clone()))
            .collect();
        for (key, backend) in &next {
            if !self.current.get(key).is_some_and(|old| same(old, backend)) {
                changes.push(Change::Insert(key.clone(), backend.clone()));
            }
        }
        self.current = next;
        changes
    }

    /// One key now lists `backend` (an etcd put).
    #[cfg(feature = "etcd")]
    pub(crate) fn put(&mut self, key: K, backend: Backend) -> Option<Change<K, Backend>> {
        if self
            .current
            .get(&key)
            .is_some_and(|old| same(old, &backend))
        {
            return None;
        }
        self.current.insert(key.clone(), backend.clone());
        Some(Change::Insert(key, backend))
    }

    /// One key lists nothing any more (an etcd delete, or a bad value).
    #[cfg(feature = "etcd")]
    pub(crate) fn delete(&mut self, key: &K) -> Option<Change<K, Backend>> {
        self.current
            .remove(key)
            .map(|_| Change::Remove(key.clone()))
    }

    /// How many keys are listed.
    pub(crate) fn len(&self) -> usize {
        self.current.len()
    }
}

fn same(a: &Backend, b: &Backend) -> bool {
    a.address() == b.address() && a.weight() == b.weight() && a.protocol() == b.protocol()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(entries: &[(&'static str, &str)]) -> HashMap<&'static str, Backend> {
        entries
            .iter()
            .map(|(k, v)| (*k, v.parse().unwrap()))
            .collect()
    }

    fn describe(mut changes: Vec<Change<&'static str, Backend>>) -> Vec<String> {
        let mut out: Vec<String> = changes
            .drain(..)
            .map(|c| match c {
                Change::Insert(k, b) => format!("+{k} {} w{}", b.address().as_str(), b.weight()),
                Change::Remove(k) => format!("-{k}"),
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn replace_sends_only_the_difference() {
        let mut current = Listing::default();
        let first = listing(&[("a", "http://10.0.0.1:80"), ("b", "http://10.0.0.2:80")]);
        assert_eq!(current.replace(first.clone()).len(), 2);
        assert!(
            current.replace(first).is_empty(),
            "the same answer again: nothing"
        );
        let next = listing(&[
            ("b", "http://10.0.0.2:80,weight=3"),
            ("c", "http://10.0.0.3:80"),
        ]);
        assert_eq!(
            describe(current.replace(next)),
            ["+b http://10.0.0.2:80 w3", "+c http://10.0.0.3:80 w1", "-a"]
        );
        assert_eq!(describe(current.replace(HashMap::new())), ["-b", "-c"]);
        assert_eq!(current.len(), 0);
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn put_and_delete_skip_what_is_already_so() {
        let mut current = Listing::default();
        let backend: Backend = "http://10.0.0.1:80".parse().unwrap();
        assert!(current.put("k", backend.clone()).is_some());
        assert!(current.put("k", backend).is_none());
        assert!(current.delete(&"k").is_some());
        assert!(current.delete(&"k").is_none());
    }
}
