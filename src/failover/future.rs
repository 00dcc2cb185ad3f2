//! The failover service's response future: every try of one request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::ReplayBody;
use super::layer::Settings;
use super::policy::Verdict;
use super::service::Shared;
use crate::clock;
use crate::extensions::{Attempts, RequestHead, ReturnHead, Target, Tried};

use crate::warn_once::warn_once;
use crate::{Error, ErrorKind};

pin_project! {
    /// Resolves to the answer of the try that ended the request: the first
    /// good one, the last failure when no retry is allowed, or a 504 when
    /// the deadline passed. Carries an [`Attempts`] extension unless the
    /// first try answered and no retry was withheld.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        // The try in flight.
        #[pin]
        call: Option<S::Future>,
        // The per-try or overall deadline while calling; the pause while
        // backing off. Boxed, and only with a deadline, a per-try timeout
        // or a back-off configured: none is by default, and inline its
        // 112 bytes were in every request's future, which every layer
        // above moves.
        timer: Option<Pin<Box<Sleep>>>,
        backing_off: bool,
        shared: Arc<Shared<S>>,
        // The tries are asked for their heads back (`ReturnHead`).
        asked: bool,
        body: ReplayBody<B>,
        idempotent: bool,
        deadline: Option<Instant>,
        attempts: Attempts,
        // What only a retry needs; `None` until one is planned (or a head
        // is copied in advance).
        retry: Option<Box<Retry<S, S::Response, S::Error>>>,
    }
}

/// What only a retry needs, made when one is planned.
///
/// Boxed: inline, these 780 bytes made every request's future that much
/// larger, and every layer above moves the future it wraps (the example's
/// chain was 1.8 KB, of which this was the largest part), while few
/// requests are ever retried.
struct Retry<S, R, E> {
    // The service the retries are sent through, cloned when the first is
    // (see `Shared::spare`).
    service: Option<S>,
    // A copy of the client's head, made in advance for a retry when the
    // inner service is not known to hand heads back.
    parts: Option<Parts>,
    // The next retry's head and extensions, from the try that failed.
    returned: Option<(RequestHead, http::Extensions)>,
    tried: Tried,
    // The last failure (a response or the inner service's error), kept
    // while the next try runs: if no backend is left to try, it is the
    // answer.
    previous: Option<Result<R, E>>,
}

impl<S, R, E> Retry<S, R, E> {
    fn new(parts: Option<Parts>) -> Box<Self> {
        Box::new(Self {
            service: None,
            parts,
            returned: None,
            tried: Tried::new(),
            previous: None,
        })
    }
}

impl<S, B, RB> ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>>,
    B: http_body::Body,
{
    pub(crate) fn new(service: &mut S, shared: Arc<Shared<S>>, request: Request<B>) -> Self {
        let settings = &shared.settings;
        settings.budget.deposit();
        let now = (settings.deadline.is_some() || settings.per_try_timeout.is_some())
            .then(clock::call_instant_or_now);
        let deadline = now.zip(settings.deadline).map(|(now, d)| now + d);
        let (mut parts, body) = request.into_parts();
        let idempotent = settings.policy.is_idempotent(&parts);
        let retries = settings.max_retries > 0;
        let body = if retries {
            ReplayBody::new(body, settings.replay_limit)
        } else {
            ReplayBody::direct(body)
        };
        // The first try gets the client's own head. A retry is built from
        // the head the failed try hands back (`ReturnHead`), or, while the
        // inner service is not known to do that, from a copy made now. A
        // per-try timeout drops the try, head and all, so it needs the
        // copy; so does an upgrade, whose try becomes a tunnel.
        let asked = retries
            && settings.per_try_timeout.is_none()
            && !parts.headers.contains_key(http::header::UPGRADE)
            && shared.head_back.worth_asking();
        let copy = retries && !(asked && shared.head_back.returned());
        let kept = copy.then(|| parts.clone());
        if asked {
            shared.return_head.ask(&mut parts.extensions);
        } else {
            // A marker from an earlier request on a reused map must not
            // ask for a head this request's tries will not hand back.
            parts.extensions.remove::<ReturnHead>();
        }
        let call = service.call(Request::from_parts(parts, body.clone()));
        let mut timer = None;
        arm(
            &mut timer,
            now.and_then(|now| try_deadline(settings, now, deadline)),
        );
        Self {
            call: Some(call),
            timer,
            backing_off: false,
            shared,
            asked,
            body,
            idempotent,
            deadline,
            attempts: Attempts::FIRST_TRY,
            retry: kept.map(|parts| Retry::new(Some(parts))),
        }
    }
}

/// When the try starting at `now` must have answered: the per-try timeout
/// or the overall deadline, whichever is first.
fn try_deadline(settings: &Settings, now: Instant, deadline: Option<Instant>) -> Option<Instant> {
    let per_try = settings.per_try_timeout.map(|t| now + t);
    match (per_try, deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl<S, B, RB> Future for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>> + Clone,
    B: http_body::Body,
    RB: From<Bytes>,
{
    type Output = Result<Response<RB>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            if *this.backing_off {
                if let Some(timer) = this.timer.as_mut() {
                    ready!(timer.as_mut().poll(cx));
                }
                *this.backing_off = false;
            }
            if let Some(call) = this.call.as_mut().as_pin_mut() {
                let mut outcome = match call.poll(cx) {
                    Poll::Ready(outcome) => outcome,
                    Poll::Pending => {
                        let Some(timer) = this.timer.as_mut() else {
                            return Poll::Pending;
                        };
                        ready!(timer.as_mut().poll(cx));
                        this.call.set(None);
                        if this.deadline.is_some_and(|d| Instant::now() >= d) {
                            let response = Error::new(ErrorKind::Timeout).to_response();
                            return Poll::Ready(Ok(finish(response, *this.attempts)));
                        }
                        // The per-try timeout: a timeout like any other.
                        Ok(Error::new(ErrorKind::Timeout).to_response())
                    }
                };
                this.call.set(None);
                // The head this try hands back, taken out of every answer
                // so that none leaves with it.
                let head = match &mut outcome {
                    Ok(response) if *this.asked => {
                        match ReturnHead::take_answer(response.extensions_mut()) {
                            Some(head) => {
                                this.shared.head_back.saw_returned();
                                head
                            }
                            None => None,
                        }
                    }
                    _ => None,
                };
                // Judge the try. An `Err` from the inner service (a service
                // of the application's, say: tower-lb's own layers answer
                // failures as responses) is a failed exchange whose cause is
                // unknown: retried on the terms of a broken one, idempotent
                // requests only.
                let verdict = match &outcome {
                    Ok(response) => this
                        .shared
                        .settings
                        .policy
                        .judge(response, *this.idempotent),
                    Err(_) if *this.idempotent => Verdict::Retry,
                    Err(_) => Verdict::Done,
                };
                match verdict {
                    Verdict::Exhausted => {
                        let previous = this.retry.as_mut().and_then(|r| r.previous.take());
                        let answer = previous.unwrap_or(outcome);
                        return Poll::Ready(answer.map(|r| finish(r, *this.attempts)));
                    }
                    Verdict::Done => {
                        this.attempts.answered_by = this.attempts.retries + 1;
                        return Poll::Ready(outcome.map(|r| finish(r, *this.attempts)));
                    }
                    Verdict::Retry => {}
                }
                this.attempts.answered_by = this.attempts.retries + 1;
                let out_of_time = this.deadline.is_some_and(|d| Instant::now() >= d);
                if this.attempts.retries >= this.shared.settings.max_retries
                    || !this.body.is_replayable()
                    || out_of_time
                {
                    return Poll::Ready(outcome.map(|r| finish(r, *this.attempts)));
                }
                let copied = this.retry.as_ref().is_some_and(|r| r.parts.is_some());
                if !copied && head.is_none() {
                    // Counted on a head that did not come back.
                    this.shared.head_back.saw_missing();
                    warn_once!(
                        "failover: a failed try did not hand its request head back (an inner \
                         layer answered Err or rebuilt the response), so it is not retried; \
                         this service copies each request's head in advance from now on"
                    );
                    return Poll::Ready(outcome.map(|r| finish(r, *this.attempts)));
                }
                if !this.shared.settings.budget.withdraw() {
                    this.attempts.budget_exhausted = true;
                    return Poll::Ready(outcome.map(|r| finish(r, *this.attempts)));
                }
                let retry = this.retry.get_or_insert_with(|| Retry::new(None));
                // Only a retry needs to know where this try went.
                if let Ok(response) = &outcome {
                    match response.extensions().get::<Target>() {
                        Some(target) => retry.tried.push(target.backend().id()),
                        None => warn_once!(
                            "failover: a failed try's response carries no Target, so its \
                             retry may go to the same backend; put FailoverLayer above \
                             LoadBalanceLayer"
                        ),
                    }
                }
                // The retry's extensions are the request's own, which the
                // failed try handed back on its answer (the answer keeps
                // them: it may still be what the client gets).
                if let (Some(head), Ok(response)) = (head, &outcome) {
                    let mut extensions = response.extensions().clone();
                    extensions.remove::<Error>();
                    extensions.remove::<Target>();
                    retry.returned = Some((head, extensions));
                }
                retry.previous = Some(outcome);
                this.attempts.retries += 1;
                match backoff(&this.shared.settings, this.attempts.retries) {
                    Some(pause) => {
                        let until = Instant::now() + pause;
                        let until = this.deadline.map_or(until, |d| d.min(until));
                        arm(this.timer, Some(until));
                        *this.backing_off = true;
                        continue;
                    }
                    None => arm(this.timer, None),
                }
            }
            // The next try: on a backend this request has not tried.
            let Some(retry) = this.retry.as_deref_mut() else {
                unreachable!("a retry is only planned with its state made")
            };
            let service = retry
                .service
                .get_or_insert_with(|| this.shared.retry_service());
            ready!(service.poll_ready(cx))?;
            let mut request = match (retry.returned.take(), retry.parts.as_ref()) {
                (Some((head, extensions)), _) => head.into_request(this.body.clone(), extensions),
                (None, Some(parts)) => Request::from_parts(parts.clone(), this.body.clone()),
                (None, None) => unreachable!("a retry is only planned with a head to send"),
            };
            request.extensions_mut().insert(retry.tried.clone());
            if *this.asked {
                this.shared.return_head.ask(request.extensions_mut());
            }
            this.call.set(Some(service.call(request)));
            let now = Instant::now();
            arm(
                this.timer,
                try_deadline(&this.shared.settings, now, *this.deadline),
            );
        }
    }
}

/// Sets `timer` to go off at `until` (reusing its box), or clears it.
fn arm(timer: &mut Option<Pin<Box<Sleep>>>, until: Option<Instant>) {
    match (timer.as_mut(), until) {
        (Some(sleep), Some(until)) => sleep.as_mut().reset(until),
        (None, Some(until)) => *timer = Some(Box::pin(tokio::time::sleep_until(until))),
        (_, None) => *timer = None,
    }
}

/// Full jitter: a random pause up to base × 2^(retry-1), at most max.
fn backoff(settings: &Settings, retry: u32) -> Option<Duration> {
    let (base, max) = settings.backoff?;
    let ceiling = base.saturating_mul(1 << (retry - 1).min(20)).min(max);
    Some(ceiling.mul_f64(fastrand::f64()))
}

/// The answer, with its [`Attempts`] when there is something to tell: a
/// response the first try answered with no retry withheld carries none, so
/// the common case costs no extension (a boxed value per request).
fn finish<RB>(mut response: Response<RB>, attempts: Attempts) -> Response<RB> {
    if attempts != Attempts::FIRST_TRY {
        response.extensions_mut().insert(attempts);
    }
    response
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use http_body_util::Empty;
    use tower::{Layer, ServiceExt, service_fn};

    use super::*;
    use crate::balance::RoundRobin;
    use crate::failover::FailoverLayer;
    use crate::{BackendSet, LoadBalanceLayer};

    /// The "forwarding" answers by backend port: 1 never answers, any other
    /// answers 200 after 100 ms.
    async fn answer(
        request: Request<ReplayBody<Empty<Bytes>>>,
    ) -> Result<Response<Empty<Bytes>>, Infallible> {
        if request.uri().port_u16() == Some(1) {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(Response::new(Empty::new()))
    }

    /// Sends one request through `failover` over backends on `ports`;
    /// the response and how long it took.
    async fn through(failover: FailoverLayer, ports: &[u16]) -> (Response<impl Sized>, Duration) {
        let set = BackendSet::new(
            ports
                .iter()
                .map(|port| format!("http://127.0.0.1:{port}").parse().unwrap()),
        );
        let stack =
            failover.layer(LoadBalanceLayer::new(set, RoundRobin::new()).layer(service_fn(answer)));
        let started = Instant::now();
        let response = stack
            .oneshot(Request::new(Empty::<Bytes>::new()))
            .await
            .unwrap();
        (response, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_try_past_its_timeout_is_retried_elsewhere() {
        let failover = FailoverLayer::new().per_try_timeout(Duration::from_secs(1));
        let (response, took) = through(failover, &[1, 2]).await;
        assert_eq!(response.status(), 200);
        let attempts = response.extensions().get::<Attempts>().unwrap();
        assert_eq!((attempts.answered_by(), attempts.retries()), (2, 1));
        assert!(
            took >= Duration::from_millis(1100) && took < Duration::from_millis(1200),
            "{took:?}"
        );
    }

    /// An inner service that fails with an `Err` on port 1.
    async fn erring(
        request: Request<ReplayBody<Empty<Bytes>>>,
    ) -> Result<Response<Empty<Bytes>>, &'static str> {
        if request.uri().port_u16() == Some(1) {
            return Err("the application's own failure");
        }
        Ok(Response::new(Empty::new()))
    }

    #[tokio::test(start_paused = true)]
    async fn an_inner_err_is_retried_when_idempotent_and_returned_otherwise() {
        let stack = |ports: &[u16]| {
            let set = BackendSet::new(
                ports
                    .iter()
                    .map(|port| format!("http://127.0.0.1:{port}").parse().unwrap()),
            );
            FailoverLayer::new()
                .layer(LoadBalanceLayer::new(set, RoundRobin::new()).layer(service_fn(erring)))
        };
        // Round-robin starts at the first backend, the erring one.
        let get = Request::new(Empty::<Bytes>::new());
        let response = stack(&[1, 2]).oneshot(get).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(Attempts::of(&response).retries(), 1);

        let mut post = Request::new(Empty::<Bytes>::new());
        *post.method_mut() = http::Method::POST;
        let error = stack(&[1, 2]).oneshot(post).await.unwrap_err();
        assert_eq!(error, "the application's own failure");

        // Nowhere else to go: the inner error is the answer.
        let get = Request::new(Empty::<Bytes>::new());
        assert!(stack(&[1]).oneshot(get).await.is_err());
    }

    /// What the sender found of failover's marker: `None` when there was
    /// none, else whether it was unanswered.
    async fn marker_seen(
        request: Request<ReplayBody<Empty<Bytes>>>,
    ) -> Result<Response<Empty<Bytes>>, Infallible> {
        let (mut parts, _) = request.into_parts();
        let seen = if parts.extensions.get::<ReturnHead>().is_none() {
            "none"
        } else if ReturnHead::take_answer(&mut parts.extensions).is_none() {
            "fresh"
        } else {
            "stale"
        };
        let mut response = Response::new(Empty::new());
        response
            .headers_mut()
            .insert("x-seen", seen.parse().unwrap());
        Ok(response)
    }

    #[tokio::test]
    async fn a_marker_left_in_a_reused_map_is_set_again_or_taken_away() {
        let set = BackendSet::new(["http://127.0.0.1:2".parse().unwrap()]);
        let stack = FailoverLayer::new()
            .layer(LoadBalanceLayer::new(set, RoundRobin::new()).layer(service_fn(marker_seen)));
        // A map a server reuses from its last request, the marker in it
        // still answered.
        let stale = || {
            let mut request = Request::new(Empty::<Bytes>::new());
            let marker = ReturnHead::new(&[502]);
            marker.reply(None, request.extensions_mut());
            request
        };
        let response = stack.clone().oneshot(stale()).await.unwrap();
        assert_eq!(
            response.headers()["x-seen"],
            "fresh",
            "asked again, in place"
        );

        // An upgrade is not asked for its head: the old marker goes.
        let mut upgrade = stale();
        upgrade
            .headers_mut()
            .insert(http::header::UPGRADE, "websocket".parse().unwrap());
        let response = stack.oneshot(upgrade).await.unwrap();
        assert_eq!(response.headers()["x-seen"], "none");
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_try_answer_carries_no_attempts_extension() {
        let (response, _) = through(FailoverLayer::new(), &[2]).await;
        assert_eq!(response.status(), 200);
        assert!(response.extensions().get::<Attempts>().is_none());
        assert_eq!(Attempts::of(&response), Attempts::FIRST_TRY);
        assert_eq!(Attempts::of(&response).answered_by(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_ends_every_try() {
        let failover = FailoverLayer::new().deadline(Duration::from_secs(3));
        let (response, took) = through(failover, &[1]).await;
        assert_eq!(response.status(), 504);
        assert_eq!(took, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn back_off_waits_between_tries() {
        let failover = FailoverLayer::new()
            .per_try_timeout(Duration::from_secs(1))
            .backoff(Duration::from_secs(10), Duration::from_secs(10))
            .unwrap();
        let (response, took) = through(failover, &[1, 2]).await;
        assert_eq!(response.status(), 200);
        // 1 s timed out, up to 10 s of jittered pause, 100 ms answer.
        assert!(
            took >= Duration::from_millis(1100) && took <= Duration::from_millis(11_100),
            "{took:?}"
        );
    }
    /// An inner service that answers 502 from port 1 and 200 elsewhere, and
    /// counts how often it is cloned.
    struct Cloned {
        clones: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Clone for Cloned {
        fn clone(&self) -> Self {
            self.clones
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Self {
                clones: Arc::clone(&self.clones),
            }
        }
    }

    impl Service<Request<ReplayBody<Empty<Bytes>>>> for Cloned {
        type Response = Response<Empty<Bytes>>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<ReplayBody<Empty<Bytes>>>) -> Self::Future {
            let mut response = Response::new(Empty::new());
            if request.uri().port_u16() == Some(1) {
                *response.status_mut() = http::StatusCode::BAD_GATEWAY;
            }
            std::future::ready(Ok(response))
        }
    }

    #[tokio::test]
    async fn the_inner_service_is_cloned_for_retries_only() {
        let clones = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = || clones.load(std::sync::atomic::Ordering::Relaxed);
        let set = BackendSet::new([
            "http://127.0.0.1:1".parse().unwrap(),
            "http://127.0.0.1:2".parse().unwrap(),
            "http://127.0.0.1:3".parse().unwrap(),
        ]);
        let mut stack = FailoverLayer::new().layer(
            LoadBalanceLayer::new(set, RoundRobin::new()).layer(Cloned {
                clones: Arc::clone(&clones),
            }),
        );
        let mut send = async || {
            let request = Request::new(Empty::<Bytes>::new());
            let response = stack.ready().await.unwrap().call(request).await.unwrap();
            response
                .extensions()
                .get::<Attempts>()
                .map_or(0, Attempts::retries)
        };
        // Round-robin: the first request goes to port 1 and is retried on
        // port 2; later ones go to port 3 (answered at once) or port 1.
        assert_eq!(send().await, 1);
        assert_eq!(
            count(),
            2,
            "the spare, made by the first request, and the retry's own clone of it"
        );
        let mut retries = 1;
        for _ in 0..20 {
            retries += send().await;
        }
        assert!(
            retries > 1 && retries < 21,
            "some answered at once: {retries}"
        );
        assert_eq!(
            count(),
            1 + retries as usize,
            "one clone a retry, none for a request answered at once"
        );
    }
}
