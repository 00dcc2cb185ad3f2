//! Where a request went before: the backends its earlier tries reached.

use crate::backend::BackendId;

/// The backends a request already tried, as a request extension: a retry
/// carries it so that the balancer picks a different backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tried {
    ids: Vec<BackendId>,
}

impl Tried {
    /// Nothing tried yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `backend` was tried.
    pub fn push(&mut self, backend: BackendId) {
        if !self.ids.contains(&backend) {
            self.ids.push(backend);
        }
    }

    /// Whether `backend` was tried.
    pub fn contains(&self, backend: BackendId) -> bool {
        self.ids.contains(&backend)
    }

    /// The tried backends, first first.
    pub fn as_slice(&self) -> &[BackendId] {
        &self.ids
    }

    /// How many backends were tried.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}
