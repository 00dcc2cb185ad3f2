//! The hedging service's response future: the first attempt, its hedge,
//! and the race between them.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, ready};

use http::request::Parts;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::record::FirstTry;
use super::{HedgeLayer, RequestBody};
use crate::Error;
use crate::extensions::{Attempts, Target, Tried};
use crate::failover::Verdict;
use crate::warn_once::warn_once;

/// The hedge of a request, until it is sent or no longer wanted.
struct Plan<S> {
    /// A clone of the inner service, to be polled ready.
    service: S,
    /// The copy of the client's head the hedge is sent with.
    parts: Parts,
    first: FirstTry,
    /// The delay passed, the budget paid: only readiness is awaited.
    due: bool,
}

pin_project! {
    /// Resolves to the first good answer of the first attempt or its hedge
    /// (the other attempt is dropped at once, which ends its exchange and
    /// its in-flight count), or to the later failure when both failed.
    ///
    /// Everything a hedge needs is boxed (`Race`), made only for a request
    /// that may be hedged: a request that is not (and every request through
    /// a stack whose hedging is off, where this future is one side of an
    /// `Either`) carries the inner future and a pointer, not the room of a
    /// second attempt, a timer, a copied head and a held answer, which
    /// every layer above would otherwise move.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<RequestBody<B>>>,
    {
        #[pin]
        first: Option<S::Future>,
        race: Option<Pin<Box<Race<S, B>>>>,
    }
}

pin_project! {
    /// A hedged request's second attempt and what it takes.
    struct Race<S, B>
    where
        S: Service<Request<RequestBody<B>>>,
    {
        #[pin]
        second: Option<S::Future>,
        // Until the hedge is due.
        #[pin]
        timer: Option<Sleep>,
        plan: Option<Plan<S>>,
        layer: HedgeLayer,
        // An attempt's failure, kept while the other one runs.
        held: Option<Result<S::Response, S::Error>>,
        _body: PhantomData<fn(B)>,
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<RequestBody<B>>>,
{
    /// A request that is not hedged: the inner call alone.
    pub(super) fn single(call: S::Future) -> Self {
        Self {
            first: Some(call),
            race: None,
        }
    }

    pub(super) fn hedged(
        call: S::Future,
        service: S,
        parts: Parts,
        first: FirstTry,
        layer: HedgeLayer,
    ) -> Self {
        Self {
            first: Some(call),
            race: Some(Box::pin(Race {
                second: None,
                timer: Some(tokio::time::sleep(layer.settings.after)),
                plan: Some(Plan {
                    service,
                    parts,
                    first,
                    due: false,
                }),
                layer,
                held: None,
                _body: PhantomData,
            })),
        }
    }
}

/// Whether an answer ends the race: a good one does; a failure that
/// failover would retry elsewhere does not while the other attempt may
/// still answer well.
fn is_good<RB, E>(layer: &HedgeLayer, outcome: &Result<Response<RB>, E>) -> bool {
    match outcome {
        Ok(response) => layer.settings.policy.judge(response, true) == Verdict::Done,
        Err(_) => false,
    }
}

/// Says once in the log when the answer shows the layer in a place where
/// hedging cannot work as meant.
fn check_place<RB>(response: &Response<RB>) {
    let extensions = response.extensions();
    if extensions.get::<Attempts>().is_some() {
        warn_once!(
            "hedging: a response carries failover's Attempts, so FailoverLayer is below \
             HedgeLayer: each hedge then counts as a client request in the retry budget \
             and its retries forget the backend it avoided; put HedgeLayer below \
             FailoverLayer"
        );
    }
    if extensions.get::<Target>().is_none() && extensions.get::<Error>().is_none() {
        warn_once!(
            "hedging: a response carries no Target, so hedges cannot be sent elsewhere; \
             put HedgeLayer above LoadBalanceLayer"
        );
    }
}

impl<S> Plan<S> {
    /// Whether the hedge may be sent now that it is due: the first
    /// attempt's backend is known (to avoid it) and the budget allows one.
    fn allowed(&self, layer: &HedgeLayer) -> bool {
        if self.first.get().is_none() {
            // Not yet picked (waiting in a queue below), or not recorded.
            if !layer.counters.recorder.load(Relaxed) {
                warn_once!(
                    "hedging: no request is hedged because no RecordTargetLayer tells \
                     HedgeLayer where first attempts go; put HedgeLayer::recorder() below \
                     LoadBalanceLayer"
                );
            }
            return false;
        }
        if !layer.settings.budget.withdraw() {
            layer.counters.budget_exhausted.fetch_add(1, Relaxed);
            return false;
        }
        true
    }
}

/// The hedge's request: the copied head, no body, and the first attempt's
/// backend among those tried (after any that failover's earlier tries
/// reached).
fn hedge_request<B>(mut parts: Parts, first: &FirstTry) -> Request<RequestBody<B>> {
    if let Some(backend) = first.get() {
        match parts.extensions.get_mut::<Tried>() {
            Some(tried) => tried.push(backend),
            None => {
                let mut tried = Tried::new();
                tried.push(backend);
                parts.extensions.insert(tried);
            }
        }
    }
    Request::from_parts(parts, RequestBody::empty())
}

impl<S, B, RB> Future for ResponseFuture<S, B>
where
    S: Service<Request<RequestBody<B>>, Response = Response<RB>>,
{
    type Output = Result<Response<RB>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            if let Some(call) = this.first.as_mut().as_pin_mut()
                && let Poll::Ready(outcome) = call.poll(cx)
            {
                this.first.set(None);
                let Some(race) = this.race.as_mut() else {
                    // Not hedged: the answer as it is.
                    return Poll::Ready(outcome);
                };
                let mut race = race.as_mut().project();
                // The first attempt answered: no hedge is due any more.
                *race.plan = None;
                race.timer.set(None);
                if race.second.is_none() || is_good(race.layer, &outcome) {
                    // The hedge lost: dropped now, not when the caller
                    // drops this future, so its backend is free at once.
                    race.second.set(None);
                    *race.held = None;
                    if let Ok(response) = &outcome {
                        check_place(response);
                    }
                    return Poll::Ready(outcome);
                }
                *race.held = Some(outcome);
            }
            let Some(race) = this.race.as_mut() else {
                return Poll::Pending;
            };
            let mut race = race.as_mut().project();
            if let Some(call) = race.second.as_mut().as_pin_mut()
                && let Poll::Ready(outcome) = call.poll(cx)
            {
                race.second.set(None);
                let good = is_good(race.layer, &outcome);
                if this.first.is_none() || good {
                    this.first.set(None);
                    *race.held = None;
                    if good {
                        race.layer.counters.won.fetch_add(1, Relaxed);
                    }
                    return Poll::Ready(outcome);
                }
                *race.held = Some(outcome);
            }
            if this.first.is_none() && race.second.is_none() {
                // Both failed, the later answer was returned above; this is
                // only reached when polled after completion.
                match race.held.take() {
                    Some(outcome) => return Poll::Ready(outcome),
                    None => panic!("hedge::ResponseFuture polled after completion"),
                }
            }
            let layer = &*race.layer;
            let Some(plan) = race.plan.as_mut() else {
                return Poll::Pending;
            };
            if !plan.due {
                if let Some(timer) = race.timer.as_mut().as_pin_mut() {
                    ready!(timer.poll(cx));
                }
                race.timer.set(None);
                if !plan.allowed(layer) {
                    *race.plan = None;
                    return Poll::Pending;
                }
                plan.due = true;
            }
            match plan.service.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => {
                    // The first attempt goes on alone.
                    *race.plan = None;
                    return Poll::Pending;
                }
                Poll::Ready(Ok(())) => {}
            }
            let Some(plan) = race.plan.take() else {
                unreachable!("the plan was just read");
            };
            let Plan {
                mut service,
                parts,
                first,
                ..
            } = plan;
            let request = hedge_request(parts, &first);
            race.second.set(Some(service.call(request)));
            layer.counters.sent.fetch_add(1, Relaxed);
            // Around the loop: the hedge is polled once, to be woken.
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<RequestBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("hedged", &self.race.is_some())
            .field(
                "hedge_sent",
                &self.race.as_ref().is_some_and(|race| race.second.is_some()),
            )
            .finish_non_exhaustive()
    }
}
