//! Where a request went: the backend the balancer chose.

use crate::backend::Backend;

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
