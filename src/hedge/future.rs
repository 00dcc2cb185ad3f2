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
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<RequestBody<B>>>,
    {
        #[pin]
        first: Option<S::Future>,
        #[pin]
        second: Option<S::Future>,
        // Until the hedge is due.
        #[pin]
        timer: Option<Sleep>,
        plan: Option<Plan<S>>,
        // Hedged requests only.
        layer: Option<HedgeLayer>,
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
            second: None,
            timer: None,
            plan: None,
            layer: None,
            held: None,
            _body: PhantomData,
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
            second: None,
            timer: Some(tokio::time::sleep(layer.settings.after)),
            plan: Some(Plan {
                service,
                parts,
                first,
                due: false,
            }),
            layer: Some(layer),
            held: None,
            _body: PhantomData,
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
                // The first attempt answered: no hedge is due any more.
                *this.plan = None;
                this.timer.set(None);
                let Some(layer) = this.layer.as_ref() else {
                    // Not hedged: the answer as it is.
                    return Poll::Ready(outcome);
                };
                if this.second.is_none() || is_good(layer, &outcome) {
                    // The hedge lost: dropped now, not when the caller
                    // drops this future, so its backend is free at once.
                    this.second.set(None);
                    *this.held = None;
                    if let Ok(response) = &outcome {
                        check_place(response);
                    }
                    return Poll::Ready(outcome);
                }
                *this.held = Some(outcome);
            }
            if let Some(call) = this.second.as_mut().as_pin_mut()
                && let Poll::Ready(outcome) = call.poll(cx)
            {
                this.second.set(None);
                let Some(layer) = this.layer.as_ref() else {
                    unreachable!("only a hedged request sends a hedge");
                };
                let good = is_good(layer, &outcome);
                if this.first.is_none() || good {
                    this.first.set(None);
                    *this.held = None;
                    if good {
                        layer.counters.won.fetch_add(1, Relaxed);
                    }
                    return Poll::Ready(outcome);
                }
                *this.held = Some(outcome);
            }
            if this.first.is_none() && this.second.is_none() {
                // Both failed, the later answer was returned above; this is
                // only reached when polled after completion.
                match this.held.take() {
                    Some(outcome) => return Poll::Ready(outcome),
                    None => panic!("hedge::ResponseFuture polled after completion"),
                }
            }
            let (Some(plan), Some(layer)) = (this.plan.as_mut(), this.layer.as_ref()) else {
                return Poll::Pending;
            };
            if !plan.due {
                if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                    ready!(timer.poll(cx));
                }
                this.timer.set(None);
                if !plan.allowed(layer) {
                    *this.plan = None;
                    return Poll::Pending;
                }
                plan.due = true;
            }
            match plan.service.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => {
                    // The first attempt goes on alone.
                    *this.plan = None;
                    return Poll::Pending;
                }
                Poll::Ready(Ok(())) => {}
            }
            let Some(plan) = this.plan.take() else {
                unreachable!("the plan was just read");
            };
            let Plan {
                mut service,
                parts,
                first,
                ..
            } = plan;
            let request = hedge_request(parts, &first);
            this.second.set(Some(service.call(request)));
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
            .field("hedged", &self.layer.is_some())
            .field("hedge_sent", &self.second.is_some())
            .finish_non_exhaustive()
    }
}
