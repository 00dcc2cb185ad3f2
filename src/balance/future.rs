//! The load-balancing service's response future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use pin_project_lite::pin_project;

use super::{ResponseBody, Target};
use crate::Error;
use crate::backend::InFlight;
use crate::clock::{self, Nanos};

pin_project! {
    /// Resolves to the inner service's response with its body wrapped to
    /// hold the in-flight count, or to a 503 when no backend was available.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called {
            #[pin]
            future: F,
            in_flight: Option<InFlight>,
            started: Nanos,
            span: tracing::Span,
        },
        Failed {
            error: Option<Error>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(future: F, in_flight: InFlight, started: Nanos, span: tracing::Span) -> Self {
        Self {
            state: State::Called {
                future,
                in_flight: Some(in_flight),
                started,
                span,
            },
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    RB: http_body::Body<Data = Bytes>,
{
    type Output = Result<Response<ResponseBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called {
                future,
                in_flight,
                started,
                span,
            } => {
                let response = {
                    let _entered = span.enter();
                    ready!(future.poll(cx))?
                };
                let Some(in_flight) = in_flight.take() else {
                    // Polled after completion: a contract breach by the caller.
                    panic!("ResponseFuture polled after completion");
                };
                let backend = in_flight.backend();
                let now = clock::now();
                backend
                    .state()
                    .observe_latency(now.saturating_sub(*started), now);
                let target = Target::new(backend.clone());
                let mut response = response.map(|body| ResponseBody::new(body, in_flight));
                // A response that carries the request's extensions (as
                // `Forward`'s do) has the request's `Target` already:
                // overwritten in place, no allocation.
                match response.extensions_mut().get_mut::<Target>() {
                    Some(slot) => *slot = target,
                    None => {
                        response.extensions_mut().insert(target);
                    }
                }
                Poll::Ready(Ok(response))
            }
            StateProj::Failed { error } => {
                let Some(error) = error.take() else {
                    panic!("ResponseFuture polled after completion");
                };
                Poll::Ready(Ok(error.to_response::<ResponseBody<RB>>()))
            }
        }
    }
}
