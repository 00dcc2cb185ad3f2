//! The queue's service and its response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::QueueLayer;
use super::waiters::Place;
use crate::balance::balancer::Room;
use crate::balance::{RequestRef, Strategy, Tried};
use crate::error::{Error, ErrorKind};

/// Holds requests that find every backend at its limit until one has room;
/// see [`QueueLayer`].
pub struct Queue<S, St: Strategy> {
    inner: S,
    layer: QueueLayer<St>,
}

impl<S, St: Strategy> Queue<S, St> {
    pub(super) fn new(inner: S, layer: QueueLayer<St>) -> Self {
        Self { inner, layer }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// This service's inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn room<B>(&self, request: &Request<B>) -> Room {
        let tried = request
            .extensions()
            .get::<Tried>()
            .map_or(&[][..], Tried::as_slice);
        self.layer.balancer.room(RequestRef::from(request), tried)
    }
}

impl<S, St, B, RB> Service<Request<B>> for Queue<S, St>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    St: Strategy,
    RB: From<Bytes>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<S, St, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let shared = &self.layer.shared;
        // Behind others waiting, a request waits too (first come, first
        // served); otherwise it goes down unless every backend is full.
        if self.layer.balancer.max_in_flight() == 0
            || (shared.pending() == 0 && self.room(&request) != Room::Full)
        {
            return ResponseFuture::direct(self.inner.call(request));
        }
        let Some((place, head)) = shared.enter() else {
            return ResponseFuture::refused(self.refusal("queue full"));
        };
        // The clone waits with the request; this service stays ready for
        // the next (tower's rule for services that defer their call).
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        ResponseFuture {
            state: State::Waiting {
                wait: Box::pin(Queued {
                    notified: Arc::clone(&shared.notify).notified_owned(),
                    deadline: tokio::time::sleep(self.layer.timeout),
                    waiting: Some(Waiting {
                        request,
                        inner,
                        place,
                        started: Instant::now(),
                        layer: self.layer.clone(),
                    }),
                    look: head,
                }),
            },
        }
    }
}

impl<S, St: Strategy> Queue<S, St> {
    fn refusal(&self, why: &str) -> Error {
        Error::new(ErrorKind::Overloaded)
            .with_message(why)
            .with_retry_after(self.layer.retry_after)
    }
}

impl<S: Clone, St: Strategy> Clone for Queue<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, St: Strategy> fmt::Debug for Queue<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

/// What a queued request holds while it waits.
struct Waiting<S, B, St: Strategy> {
    request: Request<B>,
    inner: S,
    place: Place,
    started: Instant,
    layer: QueueLayer<St>,
}

pin_project! {
    /// A request waiting in the queue.
    #[project = QueuedProj]
    struct Queued<S, B, St: Strategy> {
        #[pin]
        notified: OwnedNotified,
        #[pin]
        deadline: Sleep,
        waiting: Option<Waiting<S, B, St>>,
        // Look for room at the next poll without being woken: the first
        // poll of a request that found the queue empty (a slot may have
        // freed before it was listening).
        look: bool,
    }
}

pin_project! {
    /// The inner service's response, after a wait in the queue if every
    /// backend was full; or a 503 with `Retry-After`.
    pub struct ResponseFuture<S, St, B>
    where
        S: Service<Request<B>>,
        St: Strategy,
    {
        #[pin]
        state: State<S, St, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, St, B>
    where
        S: Service<Request<B>>,
        St: Strategy,
    {
        Direct {
            #[pin]
            future: S::Future,
        },
        // The two states of a queued request are boxed: they are the rare
        // path (every backend full), and inline their 550 bytes would make
        // every request's future that much larger, and every layer above
        // moves the future it wraps.
        Waiting {
            wait: Pin<Box<Queued<S, B, St>>>,
        },
        Readying {
            ready: Option<Box<(S, Request<B>)>>,
        },
        Refused {
            error: Option<Error>,
        },
    }
}

impl<S, St, B> ResponseFuture<S, St, B>
where
    S: Service<Request<B>>,
    St: Strategy,
{
    fn direct(future: S::Future) -> Self {
        Self {
            state: State::Direct { future },
        }
    }

    fn refused(error: Error) -> Self {
        Self {
            state: State::Refused { error: Some(error) },
        }
    }
}

impl<S, St, B> fmt::Debug for ResponseFuture<S, St, B>
where
    S: Service<Request<B>>,
    St: Strategy,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, St, B, RB> Future for ResponseFuture<S, St, B>
where
    S: Service<Request<B>, Response = Response<RB>>,
    St: Strategy,
    RB: From<Bytes>,
{
    type Output = Result<Response<RB>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Direct { future } => return future.poll(cx),
                StateProj::Refused { error } => {
                    let Some(error) = error.take() else {
                        panic!("queue::ResponseFuture polled after completion");
                    };
                    return Poll::Ready(Ok(error.to_response()));
                }
                StateProj::Readying { ready } => {
                    let Some((inner, _)) = ready.as_deref_mut() else {
                        panic!("queue::ResponseFuture polled after completion");
                    };
                    if let Err(error) = ready!(inner.poll_ready(cx)) {
                        return Poll::Ready(Err(error));
                    }
                    let Some((mut inner, request)) = ready.take().map(|ready| *ready) else {
                        panic!("queue::ResponseFuture polled after completion");
                    };
                    let future = inner.call(request);
                    this.state.set(State::Direct { future });
                }
                StateProj::Waiting { wait } => {
                    let QueuedProj {
                        mut notified,
                        deadline,
                        waiting,
                        look,
                    } = wait.as_mut().project();
                    let Some(wait) = waiting.as_ref() else {
                        panic!("queue::ResponseFuture polled after completion");
                    };
                    // Registers as a waiter at the first poll; ready when
                    // woken (a slot freed) or a stray permit was left.
                    let woken = notified.as_mut().poll(cx).is_ready();
                    if woken || std::mem::take(look) {
                        if wait.room() != Room::Full {
                            let Some(wait) = waiting.take() else {
                                panic!("queue::ResponseFuture polled after completion");
                            };
                            let shared = &wait.layer.shared;
                            shared.record_wait(wait.started.elapsed().as_nanos() as u64);
                            drop(wait.place);
                            this.state.set(State::Readying {
                                ready: Some(Box::new((wait.inner, wait.request))),
                            });
                            continue;
                        }
                        if woken {
                            // Woken for a slot someone else took: listen
                            // again (behind those already waiting).
                            let notify = Arc::clone(&wait.layer.shared.notify);
                            notified.set(notify.notified_owned());
                            continue;
                        }
                    }
                    if deadline.poll(cx).is_ready() {
                        let Some(wait) = waiting.take() else {
                            panic!("queue::ResponseFuture polled after completion");
                        };
                        wait.layer.shared.count_timeout();
                        let error = Error::new(ErrorKind::Overloaded)
                            .with_message("timed out in the queue")
                            .with_retry_after(wait.layer.retry_after);
                        drop(wait);
                        this.state.set(State::Refused { error: Some(error) });
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<S, B, St: Strategy> Waiting<S, B, St> {
    fn room(&self) -> Room {
        let tried = self
            .request
            .extensions()
            .get::<Tried>()
            .map_or(&[][..], Tried::as_slice);
        self.layer
            .balancer
            .room(RequestRef::from(&self.request), tried)
    }
}
