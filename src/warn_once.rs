//! A warning logged once per call site, for a stack whose layers are in an
//! order that silently does nothing (passive health below no balancer,
//! failover above none): loud enough to be found, never once per request.

/// Logs `message` at `warn` the first time this call site runs.
macro_rules! warn_once {
    ($message:expr) => {{
        static WARNED: ::std::sync::atomic::AtomicBool =
            ::std::sync::atomic::AtomicBool::new(false);
        if !WARNED.load(::std::sync::atomic::Ordering::Relaxed)
            && !WARNED.swap(true, ::std::sync::atomic::Ordering::Relaxed)
        {
            ::tracing::warn!("{}", $message);
        }
    }};
}

pub(crate) use warn_once;
