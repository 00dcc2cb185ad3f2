//! Where passive health checking's outcomes go: outlier detection applied
//! to the backends of one set.
//!
//! Both the layer's future (a failed head) and its body (an ended or broken
//! body) record through here, so neither needs the other.

use std::fmt;

use super::OutlierDetection;
use super::classify::Outcome;
use crate::backend::{Backend, BackendSet};
use crate::clock;
use crate::replica::Replica;

/// Outlier detection bound to the set it acts on (the set is where events
/// go and what the ejection cap counts).
#[derive(Debug)]
pub(crate) struct Recorder {
    set: BackendSet,
    detection: OutlierDetection,
}

impl Recorder {
    pub(crate) fn new(set: BackendSet, detection: OutlierDetection) -> Self {
        Self { set, detection }
    }

    pub(crate) fn detection(&self) -> &OutlierDetection {
        &self.detection
    }

    /// Pauses `backend` as its overload signal asked (see
    /// [`overload`](super::overload)); returns whether it did.
    pub(crate) fn pause(&self, backend: &Backend, pause: std::time::Duration) -> bool {
        self.detection
            .pause(&self.set, backend, clock::now(), pause)
    }

    /// Records one outcome of a request to `backend`.
    pub(crate) fn record(&self, backend: &Backend, outcome: Outcome) {
        let state = backend.state();
        // The common case, a success of a healthy backend, touches two
        // atomics and no clock.
        if outcome == Outcome::Success
            && state.ramp_down_share() == crate::backend::FULL_SHARE
            && state.outcomes().clean_success()
        {
            return;
        }
        let now = clock::now();
        if outcome == Outcome::Failure {
            state.count_failure();
        }
        // Requests that finish while their backend is out say nothing new:
        // its return starts from clean counters.
        if state.is_ejected_at(now) {
            return;
        }
        let detection = &self.detection;
        let window = clock::nanos(detection.ramp_down_window);
        let tally = if outcome == Outcome::Failure {
            let (consecutive, tally) = state.outcomes().failure(now, window);
            if consecutive >= detection.consecutive_failures
                && detection.eject(&self.set, backend, now).is_some()
            {
                return;
            }
            tally
        } else {
            state.outcomes().success(now, window)
        };
        if let (Some(tally), false) = (tally, window == 0) {
            detection.ramp(&self.set, backend, tally);
        }
    }
}

/// A deferred outcome: the backend a response came from, and where its
/// outcome goes once known.
pub(crate) struct Watch {
    backend: Backend,
    recorder: Replica<Recorder>,
}

impl Watch {
    pub(crate) fn new(backend: Backend, recorder: Replica<Recorder>) -> Self {
        Self { backend, recorder }
    }

    /// What the response's head says (see [`OutlierDetection::outcome`]).
    pub(crate) fn outcome<B>(&self, response: &http::Response<B>) -> Option<Outcome> {
        self.recorder.detection().outcome(response)
    }

    /// Pauses the backend when the response is an overload signal.
    pub(crate) fn heed<B>(&self, response: &http::Response<B>) {
        if let Some(pause) = self.recorder.detection().overload(response) {
            self.recorder.pause(&self.backend, pause);
        }
    }

    pub(crate) fn record(self, outcome: Outcome) {
        self.recorder.record(&self.backend, outcome);
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("backend", &format_args!("{}", self.backend))
            .finish_non_exhaustive()
    }
}
