//! The guard that owns one request's in-flight count.

use super::Backend;

/// One request in flight to a backend.
///
/// Creating it counts the request; dropping it uncounts it, whatever path
/// the request took (response body ended, body dropped half-read, future
/// cancelled, error). Nothing decrements by hand.
#[derive(Debug)]
pub struct InFlight {
    backend: Backend,
}

impl InFlight {
    /// Counts a request to `backend` as in flight until the guard drops.
    pub fn begin(backend: Backend) -> Self {
        backend.state().begin();
        Self { backend }
    }

    /// The backend the request went to.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.state().end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_guard_uncounts() {
        let backend = Backend::new("http://127.0.0.1:1".parse().unwrap());
        let first = InFlight::begin(backend.clone());
        let second = InFlight::begin(backend.clone());
        assert_eq!(backend.state().in_flight(), 2);
        drop(first);
        assert_eq!(backend.state().in_flight(), 1);
        drop(second);
        assert_eq!(backend.state().in_flight(), 0);
    }
}
