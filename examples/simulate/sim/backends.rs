//! The simulated backends as one tower service: what sits where `Forward`
//! sits in a real stack, answering in tokio's (paused) time.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::Service;
use tower_lb::Target;
use tower_lb::{Error, ErrorKind};

use super::model::{BackendModel, Job};

/// The first backend's port; backend `i` is `http://127.0.0.1:{BASE_PORT + i}`
/// (never connected to: the port only names the model).
pub const BASE_PORT: u16 = 20_000;

/// How long a refused connection takes to tell.
const REFUSED_AFTER: Duration = Duration::from_millis(1);

/// The address of backend `index`.
pub fn address(index: usize) -> String {
    format!("http://127.0.0.1:{}", usize::from(BASE_PORT) + index)
}

/// One backend while a run lasts: its model, its slots, what it did.
#[derive(Debug)]
struct Runtime {
    model: BackendModel,
    slots: Semaphore,
    tries: AtomicU64,
    /// Tries per second of the run, for time series (slow start's ramp).
    per_second: Mutex<Vec<u32>>,
}

/// All the backends of a run, serving requests the balancer pointed at one
/// of them, like `Forward` with a timeout would.
///
/// Per request: a backend that is down refuses (502, connect error, after
/// 1 ms); one that fails this request answers 503 at once; otherwise the
/// request waits for one of its slots, holds it for its service time (events
/// applied), and gets 200. A request that takes longer than `timeout` is
/// answered 504 (a timeout error, as `Forward` answers) and leaves its slot:
/// the model assumes a backend stops work on a connection the proxy closed,
/// which flatters a slow backend a little.
#[derive(Clone, Debug)]
pub struct Backends {
    backends: Arc<[Runtime]>,
    start: Instant,
    timeout: Duration,
}

impl Backends {
    /// Backends for these models, the run starting at `start`.
    pub fn new(models: &[BackendModel], start: Instant, timeout: Duration) -> Self {
        let backends = models
            .iter()
            .map(|model| Runtime {
                model: model.clone(),
                slots: Semaphore::new(model.concurrency.max(1)),
                tries: AtomicU64::new(0),
                per_second: Mutex::new(Vec::new()),
            })
            .collect();
        Self {
            backends,
            start,
            timeout,
        }
    }

    /// Tries each backend got.
    pub fn tries(&self) -> Vec<u64> {
        self.backends
            .iter()
            .map(|b| b.tries.load(Relaxed))
            .collect()
    }

    /// Tries each backend got in each second of the run.
    pub fn tries_per_second(&self) -> Vec<Vec<u32>> {
        self.backends
            .iter()
            .map(|b| {
                b.per_second
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            })
            .collect()
    }

    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

type Answer = Response<Full<Bytes>>;

impl<B> Service<Request<B>> for Backends {
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let index = request
            .extensions()
            .get::<Target>()
            .and_then(|t| t.backend().address().authority().port_u16())
            .and_then(|port| port.checked_sub(BASE_PORT))
            .map(usize::from)
            .filter(|&i| i < self.backends.len());
        let job = request.extensions().get::<Job>().copied();
        let this = self.clone();
        Box::pin(async move {
            let (Some(index), Some(job)) = (index, job) else {
                // The stack lost the balancer's target or the job: a bug
                // the simulator must show, not hide.
                let mut response = Response::new(Full::from("no target"));
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                return Ok(response);
            };
            let timeout = this.timeout;
            let answer = tokio::time::timeout(timeout, this.serve(index, job)).await;
            Ok(answer.unwrap_or_else(|_| failure(index, ErrorKind::Timeout)))
        })
    }
}

impl Backends {
    async fn serve(&self, index: usize, job: Job) -> Answer {
        let backend = &self.backends[index];
        backend.tries.fetch_add(1, Relaxed);
        let now = self.elapsed();
        {
            let mut per_second = backend
                .per_second
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let second = now as usize;
            if per_second.len() <= second {
                per_second.resize(second + 1, 0);
            }
            per_second[second] += 1;
        }
        let model = &backend.model;
        if model.is_down(now) {
            tokio::time::sleep(REFUSED_AFTER).await;
            return failure(index, ErrorKind::Connect);
        }
        if model.fails(&job) {
            tokio::time::sleep(REFUSED_AFTER).await;
            let mut response = Response::new(Full::from("failing"));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return response;
        }
        let Ok(_slot) = backend.slots.acquire().await else {
            return failure(index, ErrorKind::Upstream);
        };
        let start = self.elapsed();
        if model.is_down(start) {
            // It died while the request queued: the connection is reset.
            return failure(index, ErrorKind::Upstream);
        }
        let done = model.finish(start, &job);
        if let Some(death) = model.next_death(start).filter(|&death| death < done) {
            tokio::time::sleep_until(self.start + Duration::from_secs_f64(death)).await;
            return failure(index, ErrorKind::Upstream);
        }
        tokio::time::sleep_until(self.start + Duration::from_secs_f64(done)).await;
        Response::new(Full::from("ok"))
    }
}

/// The answer `Forward` gives for this kind of failure of backend `index`.
fn failure(index: usize, kind: ErrorKind) -> Answer {
    let address = address(index).parse::<tower_lb::backend::Address>().ok();
    let error = Error::new(kind);
    let error = match address {
        Some(address) => error.with_backend(address),
        None => error,
    };
    error.to_response()
}
