//! The active health checker's verdict on a backend.

/// The active health checker's verdict on a backend.
///
/// Set by [`ActiveHealthCheck`](crate::health::ActiveHealthCheck), or by a
/// health system of your own through
/// [`BackendState::set_verdict`](super::BackendState::set_verdict).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verdict {
    /// Not probed yet (or no prober runs). Eligible: an unprobed backend is
    /// given the benefit of the doubt, as nginx and Envoy do.
    Unknown,
    /// The last `healthy-after` probes passed.
    Healthy,
    /// The last `unhealthy-after` probes failed. Not eligible.
    Unhealthy,
}
