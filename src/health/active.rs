//! Active health checking: periodic probes with rise and fall thresholds.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{AbortHandle, JoinHandle, JoinSet};

use super::probe::{Probe, ProbeClient};
use super::{HealthEventKind, Verdict};
use crate::backend::{Backend, BackendId, BackendSet};
use crate::clock;
use crate::error::ConfigError;
use crate::forward::Connect;

/// Probes every backend of a set in the background and sets its health
/// [`Verdict`]: unhealthy after `unhealthy_after` failed probes in a row,
/// healthy again after `healthy_after` passing ones. An unhealthy backend
/// gets no requests; one that recovers gets slow start (when the set has
/// one), and an ejection by outlier detection ends when the probes saw the
/// backend go down and come back (a probe that merely keeps passing while
/// real requests fail does not end it).
///
/// Probes run beside the request path and never block it: one small task
/// per backend, spread over the interval with jitter so that a thousand
/// backends are not probed in the same millisecond. Backends that join the
/// set later (by [`BackendSet::insert`], a reload or discovery) are probed
/// from when they join; removed ones stop being probed. The first probe of a
/// backend decides its first verdict at once (so a backend that is down at
/// start is known to be down after one probe, not after `unhealthy_after`).
///
/// Every verdict change is a [`HealthEvent`](super::HealthEvent) on
/// [`BackendSet::events`], and the last probe error is kept in the
/// backend's state ([`BackendState::last_probe_error`](crate::backend::BackendState::last_probe_error)).
///
/// ```
/// use std::time::Duration;
/// use tower_lb::BackendSet;
/// use tower_lb::health::{ActiveHealthCheck, Probe};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_lb::ConfigError> {
/// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?]);
/// let checks = ActiveHealthCheck::new(Probe::http("/healthz")?)
///     .interval(Duration::from_secs(2))
///     .timeout(Duration::from_secs(1))
///     .unhealthy_after(3)
///     .healthy_after(2)
///     .spawn(&set)?;
/// // ... serve; dropping `checks` stops probing and forgets the verdicts.
/// # drop(checks);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ActiveHealthCheck {
    probe: Probe,
    interval: Duration,
    jitter: f64,
    timeout: Duration,
    unhealthy_after: u32,
    healthy_after: u32,
    connect: Connect,
}

impl ActiveHealthCheck {
    /// Checks with `probe` every 5 s (timeout 2 s), unhealthy after 3
    /// failures, healthy after 2 passes, with 10 % jitter: HAProxy's
    /// thresholds at a pace that finds a dead backend in about 15 s.
    pub fn new(probe: Probe) -> Self {
        Self {
            probe,
            interval: Duration::from_secs(5),
            jitter: 0.1,
            timeout: Duration::from_secs(2),
            unhealthy_after: 3,
            healthy_after: 2,
            connect: Connect::default(),
        }
    }

    /// Time between probes of one backend.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Spread of each interval, as a fraction of it (0.1: ±5 %).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// How long one probe may take before it counts as failed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Failed probes in a row that make a healthy backend unhealthy (fall).
    pub fn unhealthy_after(mut self, probes: u32) -> Self {
        self.unhealthy_after = probes;
        self
    }

    /// Passing probes in a row that make an unhealthy backend healthy (rise).
    pub fn healthy_after(mut self, probes: u32) -> Self {
        self.healthy_after = probes;
        self
    }

    /// The TLS settings for probing `https://` backends (feature `tls`):
    /// give it the [`BackendTls`](crate::forward::BackendTls) the
    /// forwarder has, so a probe passes only where a request would get
    /// through. Default: the system's roots and each backend's own name.
    /// An HTTP probe of an `https://` backend goes over TLS; so does a TCP
    /// probe, which then passes only when the handshake does.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::forward::BackendTls) -> Self {
        self.connect.tls = Some(tls);
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.interval.is_zero() {
            return Err(ConfigError::new("health interval: must be above zero"));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("health timeout: must be above zero"));
        }
        if self.unhealthy_after == 0 {
            return Err(ConfigError::new("unhealthy-after: must be at least 1"));
        }
        if self.healthy_after == 0 {
            return Err(ConfigError::new("healthy-after: must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ConfigError::new("health jitter: must be between 0 and 1"));
        }
        Ok(())
    }

    /// Starts probing `set` (the set itself or a reference to it) on the
    /// current tokio runtime.
    ///
    /// # Errors
    ///
    /// A zero interval or timeout, a zero threshold, or a jitter outside 0 to 1.
    pub fn spawn(self, set: impl AsRef<BackendSet>) -> Result<HealthChecks, ConfigError> {
        self.validate()?;
        let task = tokio::spawn(supervise(Arc::new(self), set.as_ref().clone()));
        Ok(HealthChecks { task })
    }

    /// The time until the next probe, with jitter.
    fn next_delay(&self) -> Duration {
        let spread = self.jitter * (fastrand::f64() - 0.5);
        self.interval.mul_f64(1.0 + spread)
    }
}

/// The running health checks. Dropping it stops them and sets every probed
/// backend's verdict back to unknown (a verdict nobody updates must not keep
/// a backend out of rotation).
#[derive(Debug)]
pub struct HealthChecks {
    task: JoinHandle<()>,
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follows the set's membership: one probing task per member.
async fn supervise(check: Arc<ActiveHealthCheck>, set: BackendSet) {
    let client = ProbeClient::new(check.connect.clone(), check.timeout);
    let mut members = set.subscribe();
    let mut tasks = JoinSet::new();
    let mut probing: HashMap<BackendId, (Backend, AbortHandle)> = HashMap::new();
    let mut forget = ForgetVerdicts {
        probing: Vec::new(),
    };
    loop {
        let snapshot = members.borrow_and_update().clone();
        probing.retain(|id, (backend, handle)| {
            let kept = snapshot.backends().iter().any(|b| b.id() == *id);
            if !kept {
                handle.abort();
                backend.state().set_verdict(Verdict::Unknown, None);
            }
            kept
        });
        for backend in snapshot.backends() {
            if let Entry::Vacant(slot) = probing.entry(backend.id()) {
                let handle = tasks.spawn(probe_loop(
                    Arc::clone(&check),
                    backend.clone(),
                    set.clone(),
                    client.clone(),
                ));
                slot.insert((backend.clone(), handle));
            }
        }
        forget.probing = probing.values().map(|(b, _)| b.clone()).collect();
        // Reap finished tasks (they only end when aborted).
        while tasks.try_join_next().is_some() {}
        if members.changed().await.is_err() {
            return;
        }
    }
}

/// Resets verdicts when the supervisor stops (its future is dropped).
struct ForgetVerdicts {
    probing: Vec<Backend>,
}

impl Drop for ForgetVerdicts {
    fn drop(&mut self) {
        for backend in &self.probing {
            backend.state().set_verdict(Verdict::Unknown, None);
        }
    }
}

/// Probes one backend forever.
async fn probe_loop(
    check: Arc<ActiveHealthCheck>,
    backend: Backend,
    set: BackendSet,
    client: ProbeClient,
) {
    // Start somewhere in the first interval so probes spread out.
    let first = check
        .interval
        .mul_f64(fastrand::f64() * check.jitter.max(0.05));
    tokio::time::sleep(first).await;
    let mut passes = 0u32;
    let mut failures = 0u32;
    loop {
        let result =
            match tokio::time::timeout(check.timeout, check.probe.check(&backend, &client)).await {
                Ok(result) => result,
                Err(_) => Err(format!("timed out after {:?}", check.timeout)),
            };
        match &result {
            Ok(()) => {
                passes = passes.saturating_add(1);
                failures = 0;
            }
            Err(_) => {
                failures = failures.saturating_add(1);
                passes = 0;
            }
        }
        let state = backend.state();
        let current = state.verdict();
        let next = match (current, &result) {
            (Verdict::Unknown, Ok(())) => Verdict::Healthy,
            (Verdict::Unknown, Err(_)) => Verdict::Unhealthy,
            (Verdict::Healthy, Err(_)) if failures >= check.unhealthy_after => Verdict::Unhealthy,
            (Verdict::Unhealthy, Ok(())) if passes >= check.healthy_after => Verdict::Healthy,
            (verdict, _) => verdict,
        };
        let error: Option<Arc<str>> = result.err().map(Arc::from);
        state.set_verdict(next, error.clone());
        if next != current {
            let recovered = current == Verdict::Unhealthy && next == Verdict::Healthy;
            if recovered {
                set.begin_slow_start(&backend, clock::now());
            }
            set.emit(
                &backend,
                HealthEventKind::Verdict {
                    from: current,
                    to: next,
                    error,
                },
            );
            if recovered {
                // The probes watched it fail and come back: that outweighs an
                // ejection's guess, so end one now (as Envoy does).
                set.let_back(&backend);
            }
        }
        tokio::time::sleep(check.next_delay()).await;
    }
}
