//! An immutable view of the backend set.

use std::sync::Arc;

use super::{Address, Backend};

/// The backend set as it was when published: what the request path reads.
///
/// A snapshot never changes. The set publishes a new one on every change
/// (copy on write), and readers holding the old one finish with it.
#[derive(Debug, Default)]
pub struct Snapshot {
    backends: Vec<Backend>,
    version: u64,
}

impl Snapshot {
    pub(crate) fn new(backends: Vec<Backend>, version: u64) -> Arc<Self> {
        Arc::new(Self { backends, version })
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
}
