//! The failover service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_service::Service;

use super::layer::Settings;
use super::policy::Verdict;
use super::{Attempts, ReplayBody};
use crate::balance::{Target, Tried};
use crate::{BoxError, Error, ErrorKind};

/// The service of [`FailoverLayer`](super::FailoverLayer): sends a request
/// again, to another backend, when the answer says that is safe and useful.
pub struct Failover<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> Failover<S> {
    pub(crate) fn new(inner: S, settings: Arc<Settings>) -> Self {
        Self { inner, settings }
    }
}

impl<S: Clone> Clone for Failover<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Failover<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failover")
            .field("inner", &self.inner)
            .field("settings", &self.settings)
            .finish()
    }
}

impl<S, B, RB> Service<Request<B>> for Failover<S>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
    RB: From<Bytes> + Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<RB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Keep the service that was polled ready for the first try.
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        ResponseFuture {
            inner: Box::pin(run(ready, Arc::clone(&self.settings), request)),
        }
    }
}

/// The response future of [`Failover`]: all tries of one request.
pub struct ResponseFuture<RB, E> {
    inner: Pin<Box<dyn Future<Output = Result<Response<RB>, E>> + Send>>,
}

impl<RB, E> Future for ResponseFuture<RB, E> {
    type Output = Result<Response<RB>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<RB, E> fmt::Debug for ResponseFuture<RB, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// How one try ended.
enum Try<RB> {
    Answered(Response<RB>),
    /// The per-try timeout passed: a timeout, retryable when idempotent.
    TimedOut,
    /// The overall deadline passed: answer 504 now.
    PastDeadline,
}

async fn run<S, B, RB>(
    mut service: S,
    settings: Arc<Settings>,
    request: Request<B>,
) -> Result<Response<RB>, S::Error>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>>,
    B: http_body::Body,
    RB: From<Bytes>,
{
    let started = Instant::now();
    settings.budget.deposit();
    let deadline = settings.deadline.map(|d| started + d);
    let (parts, body) = request.into_parts();
    let idempotent = settings.policy.is_idempotent(&parts);
    let body = ReplayBody::new(body, settings.replay_limit);
    let mut tried = Tried::new();
    let mut attempts = Attempts {
        answered_by: 1,
        retries: 0,
        budget_exhausted: false,
    };
    // The last failure, kept while the next try runs: if no backend is left,
    // it is the answer.
    let mut previous: Option<Response<RB>> = None;
    let mut attempt = 1;
    loop {
        let mut request = Request::from_parts(parts.clone(), body.clone());
        if !tried.is_empty() {
            request.extensions_mut().insert(tried.clone());
        }
        if attempt > 1 {
            service.ready().await?;
        }
        let call = service.call(request);
        let per_try = settings.per_try_timeout.map(|t| Instant::now() + t);
        let response = match (per_try, deadline) {
            (None, None) => Try::Answered(call.await?),
            (per_try, deadline) => {
                let until = per_try.into_iter().chain(deadline).min().unwrap_or(started);
                match tokio::time::timeout_at(until, call).await {
                    Ok(response) => Try::Answered(response?),
                    Err(_) if Some(until) == deadline => Try::PastDeadline,
                    Err(_) => Try::TimedOut,
                }
            }
        };
        let response = match response {
            Try::Answered(response) => response,
            Try::TimedOut => Error::new(ErrorKind::Timeout).to_response(),
            Try::PastDeadline => {
                attempts.answered_by = attempt;
                return Ok(finish(
                    Error::new(ErrorKind::Timeout).to_response(),
                    attempts,
                ));
            }
        };
        if let Some(target) = response.extensions().get::<Target>() {
            tried.push(target.backend().id());
        }
        match settings.policy.judge(&response, idempotent) {
            Verdict::Exhausted => {
                if let Some(previous) = previous {
                    return Ok(finish(previous, attempts));
                }
                attempts.answered_by = attempt;
                return Ok(finish(response, attempts));
            }
            Verdict::Done => {
                attempts.answered_by = attempt;
                return Ok(finish(response, attempts));
            }
            Verdict::Retry => {}
        }
        attempts.answered_by = attempt;
        let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
        if attempts.retries >= settings.max_retries || !body.is_replayable() || out_of_time {
            return Ok(finish(response, attempts));
        }
        if !settings.budget.withdraw() {
            attempts.budget_exhausted = true;
            return Ok(finish(response, attempts));
        }
        if let Some(pause) = backoff(&settings, attempts.retries + 1) {
            let until = Instant::now() + pause;
            tokio::time::sleep_until(deadline.map_or(until, |d| d.min(until))).await;
        }
        previous = Some(response);
        attempts.retries += 1;
        attempt += 1;
    }
}

/// Full jitter: a random pause up to base × 2^(retry-1), at most max.
fn backoff(settings: &Settings, retry: u32) -> Option<Duration> {
    let (base, max) = settings.backoff?;
    let ceiling = base.saturating_mul(1 << (retry - 1).min(20)).min(max);
    Some(ceiling.mul_f64(fastrand::f64()))
}

fn finish<RB>(mut response: Response<RB>, attempts: Attempts) -> Response<RB> {
    response.extensions_mut().insert(attempts);
    response
}
