//! What the admin service watches over time: the traffic history and the
//! event timeline, and the task that keeps both.
//!
//! Created inside a tokio runtime, the monitor spawns one task there that
//! samples the counters every [`SLOT`] and timestamps each event as it is
//! sent; the task holds the monitor weakly and ends within a slot of the
//! last admin service's drop. Created outside a runtime (a service built
//! in a plain `fn`), it samples and collects when the service is asked
//! instead: the history then has the average of each gap, and events the
//! time they were collected.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use arc_swap::ArcSwapOption;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::time::Instant;

use super::history::{History, SLOT};
use super::recorder::Recorder;
use super::timeline::Timeline;
use crate::backend::{Backend, BackendSet, HealthEvent};
use crate::clock;

pub(crate) struct Monitor {
    set: BackendSet,
    /// The metrics layer's recorder, for 5xx counts and latency; attached
    /// after creation by `AdminService::with_metrics`.
    recorder: ArcSwapOption<Recorder>,
    inner: Mutex<Inner>,
}

pub(crate) struct Inner {
    pub(crate) history: History,
    pub(crate) timeline: Timeline,
    /// The events, while no task has taken them (no runtime at creation).
    events: Option<broadcast::Receiver<HealthEvent>>,
}

impl Monitor {
    /// Starts watching `set` now.
    pub(crate) fn start(set: BackendSet) -> Arc<Self> {
        let events = set.events();
        let monitor = Arc::new(Self {
            set,
            recorder: ArcSwapOption::empty(),
            inner: Mutex::new(Inner {
                history: History::default(),
                timeline: Timeline::default(),
                events: Some(events),
            }),
        });
        monitor.sample();
        if let Ok(runtime) = tokio::runtime::Handle::try_current()
            && let Some(events) = monitor.lock().events.take()
        {
            runtime.spawn(watch(Arc::downgrade(&monitor), events));
        }
        monitor
    }

    pub(crate) fn attach(&self, recorder: Arc<Recorder>) {
        let backends = self.backends();
        let mut inner = self.lock();
        inner.history.baseline_metrics(&backends, &recorder);
        self.recorder.store(Some(recorder));
    }

    /// The history and timeline, brought up to date when no task keeps
    /// them. Hold the guard briefly: the task waits for it.
    pub(crate) fn read(&self) -> MutexGuard<'_, Inner> {
        let mut inner = self.lock();
        if let Some(mut events) = inner.events.take() {
            loop {
                match events.try_recv() {
                    Ok(event) => inner.timeline.push(&event, clock::now()),
                    Err(TryRecvError::Lagged(missed)) => {
                        inner.timeline.missed(missed, clock::now());
                    }
                    Err(_) => break,
                }
            }
            inner.events = Some(events);
            let backends = self.backends();
            let recorder = self.recorder.load();
            inner.history.sample_now(&backends, recorder.as_deref());
        }
        inner
    }

    fn sample(&self) {
        let backends = self.backends();
        let recorder = self.recorder.load();
        self.lock()
            .history
            .sample_now(&backends, recorder.as_deref());
    }

    /// Members and the removed backends still draining (their in-flight
    /// count going down is what an operator waits for).
    pub(crate) fn backends(&self) -> Vec<Backend> {
        let mut backends = self.set.snapshot().backends().to_vec();
        backends.extend(self.set.draining());
        backends
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Samples every slot and keeps every event until the monitor is gone.
async fn watch(monitor: Weak<Monitor>, mut events: broadcast::Receiver<HealthEvent>) {
    let mut next = Instant::now() + SLOT;
    loop {
        match tokio::time::timeout_at(next, events.recv()).await {
            Err(_slot_over) => {
                let Some(monitor) = monitor.upgrade() else {
                    return;
                };
                monitor.sample();
                // Behind (a stalled runtime): the next slot starts now; the
                // sample spreads the gap over the slots it spanned.
                next = (next + SLOT).max(Instant::now());
            }
            Ok(event) => {
                let Some(monitor) = monitor.upgrade() else {
                    return;
                };
                let mut inner = monitor.lock();
                match event {
                    Ok(event) => inner.timeline.push(&event, clock::now()),
                    Err(RecvError::Lagged(missed)) => inner.timeline.missed(missed, clock::now()),
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::InFlight;

    #[tokio::test(start_paused = true)]
    async fn the_task_samples_every_slot_and_times_events() {
        let set = BackendSet::new(["http://127.0.0.1:1".parse().unwrap()]);
        let monitor = Monitor::start(set.clone());
        let member = set.snapshot().backends()[0].clone();
        for _ in 0..8 {
            drop(InFlight::begin(member.clone()));
        }
        tokio::time::sleep(SLOT + Duration::from_millis(10)).await;
        set.drain(member.address());
        tokio::task::yield_now().await;
        {
            let inner = monitor.read();
            let series = inner.history.of(member.id()).unwrap();
            assert_eq!(series.rate.values().collect::<Vec<_>>(), [4.0]);
            let entry = inner.timeline.newest_first().next().unwrap();
            assert_eq!(entry.event, "drained");
        }
        let weak = Arc::downgrade(&monitor);
        drop(monitor);
        tokio::time::sleep(SLOT * 2).await;
        assert!(weak.upgrade().is_none(), "the task let it go");
    }

    #[test]
    fn without_a_runtime_reads_catch_up() {
        let set = BackendSet::new(["http://127.0.0.1:1".parse().unwrap()]);
        let monitor = Monitor::start(set.clone());
        set.drain(&"http://127.0.0.1:1".parse().unwrap());
        let inner = monitor.read();
        let events: Vec<&str> = inner.timeline.newest_first().map(|e| e.event).collect();
        assert_eq!(events, ["drained"]);
    }
}
