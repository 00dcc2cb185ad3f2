//! Overload signals: a backend that answers `429 Too Many Requests`, or
//! `503 Service Unavailable` with `Retry-After`, is telling the proxy to
//! stop sending for a while. It gets no new requests for that long.
//!
//! Such a backend is not failing (its answer is deliberate and cheap), so
//! this is not outlier detection's back-off: the pause is exactly what the
//! backend asked for, capped at [`max_retry_after`](OutlierDetection::max_retry_after)
//! (60 s by default: a backend that asks for an hour is more likely
//! misconfigured than right), and it shares the ejection cap, so at most
//! half the set (by default) is out at once, whatever its backends say. A
//! 429 without a usable `Retry-After` pauses the backend for one second; a
//! 503 without one is an ordinary failure. `Retry-After` as an HTTP date
//! is not read (backends behind a proxy send seconds; a date depends on
//! clocks agreeing).
//!
//! Whether the client sees the answer is failover's choice: with
//! [`retry_statuses`](crate::failover::FailoverLayer::retry_statuses)
//! listing the status, an idempotent request goes to another backend; else
//! the backend's answer, `Retry-After` included, goes to the client.

use std::time::Duration;

use http::{Response, StatusCode, header::RETRY_AFTER};

use super::OutlierDetection;
use crate::backend::{Backend, BackendSet, HealthEventKind};
use crate::clock::{self, Nanos};

/// The pause of a 429 that does not say how long.
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);

impl OutlierDetection {
    /// How long `response` asks its backend to be left alone, if it does.
    pub(super) fn overload<B>(&self, response: &Response<B>) -> Option<Duration> {
        if self.max_retry_after.is_zero() {
            return None;
        }
        let status = response.status();
        if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
            return None;
        }
        let asked = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let pause = match (status, asked) {
            (_, Some(asked)) => asked,
            (StatusCode::TOO_MANY_REQUESTS, None) => DEFAULT_PAUSE,
            _ => return None,
        };
        (!pause.is_zero()).then(|| pause.min(self.max_retry_after))
    }

    /// Takes `backend` out of rotation for `pause` from `now`, within the
    /// ejection cap; returns whether it did. A backend already out stays
    /// out until its own deadline.
    pub(super) fn pause(
        &self,
        set: &BackendSet,
        backend: &Backend,
        now: Nanos,
        pause: Duration,
    ) -> bool {
        let state = backend.state();
        if state.is_ejected_at(now) {
            return false;
        }
        let paused = set.deciding_ejection(now, |ejected, members| {
            if ejected >= self.ejection_cap(members) {
                return None;
            }
            let until = now.saturating_add(clock::nanos(pause));
            let ejected = state.eject(now, until, set.slow_start_nanos());
            if ejected {
                state.mark_overloaded(until);
            }
            ejected.then_some(())
        });
        if paused.is_some() {
            set.emit(backend, HealthEventKind::Overloaded { duration: pause });
        }
        paused.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::super::recorder::Recorder;
    use super::*;

    fn answer(status: u16, retry_after: Option<&str>) -> Response<()> {
        let mut builder = Response::builder().status(status);
        if let Some(value) = retry_after {
            builder = builder.header(RETRY_AFTER, value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn which_answers_ask_for_a_pause() {
        let detection = OutlierDetection::new();
        let secs = |r: &Response<()>| detection.overload(r).map(|d| d.as_secs());
        assert_eq!(secs(&answer(429, Some("2"))), Some(2));
        assert_eq!(secs(&answer(429, None)), Some(1));
        assert_eq!(
            secs(&answer(429, Some("Wed, 21 Oct 2015 07:28:00 GMT"))),
            Some(1)
        );
        assert_eq!(secs(&answer(503, Some("5"))), Some(5));
        assert_eq!(secs(&answer(503, None)), None, "an ordinary failure");
        assert_eq!(secs(&answer(503, Some("3600"))), Some(60), "capped");
        assert_eq!(secs(&answer(200, Some("5"))), None);
        assert_eq!(secs(&answer(502, Some("5"))), None);
        let off = OutlierDetection::new().max_retry_after(Duration::ZERO);
        assert_eq!(off.overload(&answer(429, Some("2"))), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_lasts_as_asked_and_at_most_half_the_set_pauses() {
        let set = BackendSet::new(
            (0..4).map(|i| format!("http://127.0.0.1:{}", 1000 + i).parse().unwrap()),
        );
        let backends = set.snapshot().backends().to_vec();
        let recorder = Recorder::new(set.clone(), OutlierDetection::new());
        let mut events = set.events();
        let pause = Duration::from_secs(2);
        let paused: Vec<bool> = backends.iter().map(|b| recorder.pause(b, pause)).collect();
        assert_eq!(paused, [true, true, false, false], "half of four");
        assert_eq!(
            events.try_recv().unwrap().kind(),
            &HealthEventKind::Overloaded { duration: pause }
        );
        assert!(!backends[0].state().is_eligible());
        assert_eq!(backends[0].state().overload_remaining(), Some(pause));
        assert_eq!(backends[2].state().overload_remaining(), None);
        tokio::time::advance(Duration::from_millis(1900)).await;
        assert!(!backends[0].state().is_eligible());
        assert_eq!(
            backends[0].state().overload_remaining(),
            Some(Duration::from_millis(100))
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(backends[0].state().is_eligible(), "back after 2 s");
        assert_eq!(backends[0].state().overload_remaining(), None);
    }
}
