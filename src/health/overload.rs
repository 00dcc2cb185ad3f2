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
//! 503 without one is an ordinary failure.
//!
//! `Retry-After` is either seconds or an HTTP date (RFC 9110 §10.2.3; the
//! IMF-fixdate `Wed, 21 Oct 2015 07:28:00 GMT`, and the obsolete forms
//! recipients must accept). A date is read against this machine's wall
//! clock, so it is only as good as the two clocks agree: a date already
//! past on a 429 is taken for clock skew and pauses for the default second
//! (the 429 still says "too many"), where `Retry-After: 0` asks for none.
//!
//! Whether the client sees the answer is failover's choice: with
//! [`retry_statuses`](crate::failover::FailoverLayer::retry_statuses)
//! listing the status, an idempotent request goes to another backend; else
//! the backend's answer, `Retry-After` included, goes to the client.

use std::time::{Duration, SystemTime};

use http::{Response, StatusCode, header::RETRY_AFTER};

use super::OutlierDetection;
use crate::backend::{Backend, BackendSet, HealthEventKind};
use crate::clock::{self, Nanos};

/// The pause of a 429 that does not say how long.
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);

/// What a `Retry-After` value asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    /// `delay-seconds`.
    Seconds(Duration),
    /// An `HTTP-date`: the time from `now` until it, zero if it is past.
    Date(Duration),
}

/// Reads a `Retry-After` value (RFC 9110 §10.2.3) at wall-clock `now`.
fn retry_after(text: &str, now: SystemTime) -> Option<Asked> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Asked::Seconds(Duration::from_secs(seconds)));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(Asked::Date(
        date.duration_since(now).unwrap_or(Duration::ZERO),
    ))
}

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
            .and_then(|text| retry_after(text.trim(), SystemTime::now()));
        let pause = match (status, asked) {
            (StatusCode::TOO_MANY_REQUESTS, Some(Asked::Date(pause))) if pause.is_zero() => {
                DEFAULT_PAUSE
            }
            (_, Some(Asked::Seconds(pause) | Asked::Date(pause))) => pause,
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
            Some(1),
            "a date past: clock skew, the default pause"
        );
        assert_eq!(secs(&answer(429, Some("soon"))), Some(1), "unusable");
        assert_eq!(
            secs(&answer(503, Some("Wed, 21 Oct 2015 07:28:00 GMT"))),
            None,
            "a 503 asked for no wait"
        );
        assert_eq!(secs(&answer(503, Some("5"))), Some(5));
        assert_eq!(secs(&answer(503, None)), None, "an ordinary failure");
        assert_eq!(secs(&answer(503, Some("3600"))), Some(60), "capped");
        assert_eq!(secs(&answer(200, Some("5"))), None);
        assert_eq!(secs(&answer(502, Some("5"))), None);
        let off = OutlierDetection::new().max_retry_after(Duration::ZERO);
        assert_eq!(off.overload(&answer(429, Some("2"))), None);
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
        let read = |text| retry_after(text, now);
        assert_eq!(read("120"), Some(Asked::Seconds(Duration::from_secs(120))));
        // 1445412480 is Wed, 21 Oct 2015 07:28:00 GMT: 10 s after `now`,
        // in the IMF-fixdate and the two obsolete forms.
        let ten = Some(Asked::Date(Duration::from_secs(10)));
        assert_eq!(read("Wed, 21 Oct 2015 07:28:00 GMT"), ten);
        assert_eq!(read("Wednesday, 21-Oct-15 07:28:00 GMT"), ten);
        assert_eq!(read("Wed Oct 21 07:28:00 2015"), ten);
        let past = now + Duration::from_secs(3600);
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT", past),
            Some(Asked::Date(Duration::ZERO))
        );
        assert_eq!(read("Wed, 32 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(read("-5"), None);
        assert_eq!(read(""), None);
    }

    #[test]
    fn a_date_in_the_future_pauses_until_then() {
        let detection = OutlierDetection::new();
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(5));
        let pause = detection.overload(&answer(503, Some(&date))).unwrap();
        // Dates have whole seconds: 4 to 5 s from now.
        assert!(
            pause > Duration::from_secs(3) && pause <= Duration::from_secs(5),
            "{pause:?}"
        );
        let far = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(7200));
        let capped = detection.overload(&answer(429, Some(&far)));
        assert_eq!(capped, Some(Duration::from_secs(60)));
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
