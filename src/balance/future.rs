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
                let mut response = {
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
                // A response that carries the request's extensions (as
                // `Forward`'s do) has the request's `Target` already: kept
                // when it names this backend, else overwritten in place;
                // no allocation either way.
                match response.extensions_mut().get_mut::<Target>() {
                    Some(slot) if slot.backend().id() == backend.id() => {}
                    Some(slot) => *slot = Target::new(backend.clone()),
                    None => {
                        response
                            .extensions_mut()
                            .insert(Target::new(backend.clone()));
                    }
                }
                Poll::Ready(Ok(response.map(|body| ResponseBody::new(body, in_flight))))
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::Empty;
    use tower::{Layer, ServiceExt, service_fn};

    use crate::balance::{LoadBalanceLayer, RoundRobin};
    use crate::{BackendSet, Target};

    /// The response's `Target` names the backend the request went to: the
    /// request's own, handed back (kept as it is), or none or another one
    /// (set to the picked backend).
    #[tokio::test]
    async fn the_response_names_the_backend_the_request_went_to() {
        let set = BackendSet::new(["http://127.0.0.1:1".parse().unwrap()]);
        let other = BackendSet::new(["http://127.0.0.1:2".parse().unwrap()])
            .snapshot()
            .backends()[0]
            .clone();
        for hands_back in ["own", "none", "other"] {
            let other = other.clone();
            let inner = service_fn(move |request: Request<Empty<Bytes>>| {
                let other = other.clone();
                async move {
                    let (mut parts, _) = request.into_parts();
                    let mut response = Response::new(Empty::<Bytes>::new());
                    match hands_back {
                        "own" => *response.extensions_mut() = parts.extensions,
                        "other" => {
                            parts.extensions.insert(Target::new(other));
                            *response.extensions_mut() = parts.extensions;
                        }
                        _ => {}
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let service = LoadBalanceLayer::new(&set, RoundRobin::new()).layer(inner);
            let response = service.oneshot(Request::new(Empty::new())).await.unwrap();
            let target = response.extensions().get::<Target>().expect("a target");
            assert_eq!(
                target.backend().address().as_str(),
                "http://127.0.0.1:1",
                "{hands_back}"
            );
        }
    }
    /// A request that already carries a `Target` (a map reused from an
    /// earlier request, its target parked) reaches the inner service with
    /// the picked backend's, set in place: one entry, never the old one.
    #[tokio::test]
    async fn a_target_the_request_carries_is_replaced_by_the_pick() {
        let set = BackendSet::new(["http://127.0.0.1:1".parse().unwrap()]);
        let parked = BackendSet::new(["http://127.0.0.1:2".parse().unwrap()])
            .snapshot()
            .backends()[0]
            .clone();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let inner = service_fn({
            let seen = std::sync::Arc::clone(&seen);
            move |request: Request<Empty<Bytes>>| {
                let extensions = request.extensions();
                *seen.lock().unwrap() = Some((
                    extensions
                        .get::<Target>()
                        .map(|target| target.backend().address().as_str().to_owned()),
                    extensions.len(),
                ));
                std::future::ready(Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())))
            }
        });
        let service = LoadBalanceLayer::new(&set, RoundRobin::new()).layer(inner);
        let mut request = Request::new(Empty::new());
        request.extensions_mut().insert(Target::new(parked));
        service.oneshot(request).await.unwrap();
        let (target, entries) = seen.lock().unwrap().take().expect("called");
        assert_eq!(target.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(entries, 1);
    }
}
