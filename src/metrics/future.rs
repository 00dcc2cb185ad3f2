//! The metrics service's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use super::ResponseBody;
use super::recorder::Recorder;
use crate::balance::Target;
use crate::clock::Nanos;
use crate::error::Error;
use crate::failover::Attempts;
use crate::replica::Replica;

pin_project! {
    /// Counts the response when its headers arrive and hands its body a
    /// timer that stops when the body ends.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        recorder: Option<Replica<Recorder>>,
        started: Nanos,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(future: F, recorder: Replica<Recorder>, started: Nanos) -> Self {
        Self {
            future,
            recorder: Some(recorder),
            started,
        }
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<ResponseBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.future.poll(cx))?;
        let Some(recorder) = this.recorder.take() else {
            panic!("metrics ResponseFuture polled after completion");
        };
        let extensions = response.extensions();
        let backend = extensions.get::<Target>().map(|target| {
            let metrics = recorder.backend(target.backend());
            metrics.count(response.status().as_u16());
            metrics
        });
        if let Some(attempts) = extensions.get::<Attempts>() {
            if attempts.retries() > 0 {
                recorder.retries.inc_by(u64::from(attempts.retries()));
            }
            if attempts.budget_exhausted() {
                recorder.budget_exhausted.inc();
            }
        }
        if extensions.get::<Error>().is_some_and(Error::is_no_backend) {
            recorder.no_backend.inc();
        }
        let started = *this.started;
        Poll::Ready(Ok(
            response.map(|body| ResponseBody::new(body, recorder, backend, started))
        ))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
