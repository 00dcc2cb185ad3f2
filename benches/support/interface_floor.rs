//! The interface floor of the stack bench: four pass-through layers that do
//! only what tower's and http's request type make the four layers of the
//! full stack do, with no logic of their own.
//!
//! Why it exists: the stack target (the full stack at most 2× the bare
//! service) counts, besides what the layers decide, what handing a request
//! and its answer through four layers costs at all. Each layer of the full
//! stack receives the request by value and returns a future that returns the
//! response by value (both moved at every step); the balancer points the
//! request's URI at the backend and leaves its pick in the request's
//! extensions (a boxed entry in a map the server made fresh); failover
//! leaves its marker there and reads it back from the response; passive
//! health reads the pick, metrics the pick, the attempts and the error; the
//! balancer, passive health and metrics wrap the response's body. These
//! layers do exactly that and nothing else (no pick, no clock, no
//! counters), so `bare` against this row is what the interface costs, and
//! this row against `full` is what the layers' own work costs.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use tower::Service;

/// What the balancer leaves in the extensions (8 bytes, as its `Target`).
#[derive(Clone, Copy)]
struct Pick(u64);

/// What failover leaves there (20 bytes, as its `ReturnHead`).
#[derive(Clone, Copy)]
struct Marker {
    statuses: [u16; 8],
    len: u8,
    answered: u8,
}

/// What metrics reads besides the pick (failover's `Attempts`).
#[derive(Clone, Copy)]
struct Tries(u32);

/// A response body wrapped by a layer, with one word of the layer's state.
pub struct Wrapped<B> {
    _body: B,
    _state: u64,
}

/// The four layers, outermost first, around `inner`: metrics' reads,
/// failover's marker, the balancer's URI and pick, passive health's read.
pub fn stack<S, B, RB>(inner: S) -> impl Service<Request<B>, Error = Infallible>
where
    S: Service<Request<B>, Response = Response<RB>, Error = Infallible>,
    S::Future: Unpin,
{
    let backend: Uri = "http://127.0.0.1:9001".parse().unwrap();
    let backend = backend.into_parts();
    Reads {
        inner: Ask {
            inner: Route {
                inner: Reads {
                    inner,
                    read: read_pick,
                },
                scheme: backend.scheme.unwrap(),
                authority: backend.authority.unwrap(),
            },
        },
        read: read_three,
    }
}

/// The balancer's part: points the URI at the backend, leaves the pick.
struct Route<S> {
    inner: S,
    scheme: Scheme,
    authority: Authority,
}

/// Failover's part: leaves its marker, reads it back from the response.
struct Ask<S> {
    inner: S,
}

/// Passive health's part (`read_pick`) and metrics' (`read_three`):
/// reads from the response, wraps the body.
struct Reads<S> {
    inner: S,
    read: fn(&mut http::Extensions) -> u64,
}

/// The future of a layer that reads the response with `read` and wraps
/// its body (`wrap`) or hands it on as it is.
struct Answer<F> {
    future: F,
    read: fn(&mut http::Extensions) -> u64,
}

impl<F, RB> Future for Answer<F>
where
    F: Future<Output = Result<Response<RB>, Infallible>> + Unpin,
{
    type Output = Result<Response<Wrapped<RB>>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = ready!(Pin::new(&mut self.future).poll(cx))?;
        let state = (self.read)(response.extensions_mut());
        Poll::Ready(Ok(response.map(|body| Wrapped {
            _body: body,
            _state: state,
        })))
    }
}

/// Failover's future: reads its marker back (whether the status is one
/// it retries) and hands the response on unwrapped, as failover does.
struct Unwrapped<F> {
    future: F,
}

impl<F, RB> Future for Unwrapped<F>
where
    F: Future<Output = Result<Response<RB>, Infallible>> + Unpin,
{
    type Output = Result<Response<RB>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = ready!(Pin::new(&mut self.future).poll(cx))?;
        let status = response.status().as_u16();
        if let Some(marker) = response.extensions_mut().get_mut::<Marker>() {
            let retried = &marker.statuses[..usize::from(marker.len)];
            marker.answered = u8::from(retried.contains(&status));
        }
        Poll::Ready(Ok(response))
    }
}

fn read_pick(extensions: &mut http::Extensions) -> u64 {
    extensions.get::<Pick>().map_or(0, |pick| pick.0)
}

fn read_three(extensions: &mut http::Extensions) -> u64 {
    let pick = read_pick(extensions);
    let tries = extensions.get::<Tries>().map_or(0, |tries| tries.0);
    let error = extensions.get::<tower_lb::Error>().is_some();
    pick + u64::from(tries) + u64::from(error)
}

fn nothing(_: &mut http::Extensions) -> u64 {
    0
}

impl<S, B, RB> Service<Request<B>> for Route<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response<Wrapped<RB>>;
    type Error = Infallible;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        *request.uri_mut() = Uri::from_parts(parts).expect("an absolute URI");
        request.extensions_mut().insert(Pick(black_box(1)));
        Answer {
            future: self.inner.call(request),
            read: nothing,
        }
    }
}

impl<S, B, RB> Service<Request<B>> for Ask<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response<RB>;
    type Error = Infallible;
    type Future = Unwrapped<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        request.extensions_mut().insert(Marker {
            statuses: [502, 503, 504, 0, 0, 0, 0, 0],
            len: 3,
            answered: 0,
        });
        Unwrapped {
            future: self.inner.call(request),
        }
    }
}

impl<S, B, RB> Service<Request<B>> for Reads<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response<Wrapped<RB>>;
    type Error = Infallible;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Answer {
            future: self.inner.call(request),
            read: self.read,
        }
    }
}
