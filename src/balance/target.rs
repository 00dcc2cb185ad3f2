//! The request and response extensions that say where a request went.

use crate::backend::{Backend, BackendId};

/// The backend a request was sent to.
///
/// [`LoadBalance`](crate::LoadBalance) inserts it into the request (for the
/// layers below it: passive health checking, the forwarding service) and
/// into the response (for the layers above it: failover, metrics).
#[derive(Clone, Debug)]
pub struct Target {
    backend: Backend,
}

impl Target {
    /// The target `backend`.
    pub fn new(backend: Backend) -> Self {
        Self { backend }
    }

    /// The backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }
}

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
