//! Thread per core: the workers that serve client connections.
//!
//! Each worker is an OS thread running a tokio current-thread runtime with
//! its own listener (see `listeners.rs`) and its own service stack. Why:
//!
//! - a current-thread runtime has no work-stealing scheduler to pay for:
//!   a connection, its requests and its backend exchanges stay on one
//!   thread, in one run queue, with no cross-thread wake-ups;
//! - each worker builds its own `Forward`, so its backend connections are
//!   pooled per thread: a connection's task runs on the runtime that uses
//!   it, and a backend connection never crosses threads;
//! - the layers above `Forward` are clones of one set of layers, sharing
//!   their state through `Arc`: the backend set, the balancer's position,
//!   passive health, the retry budget and the one metrics registry, so
//!   what an operator sees and what health decides stay process-wide.
//!
//! What exists once per process (demo backends, health checks, the event
//! log, reloads, the admin listener, signals) runs on the control runtime
//! of the main thread, not here: N copies of a probe would probe each
//! backend N times, and N reloads would race to publish the same set.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Body;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tower::Service;

use crate::client_body::ClientBody;
use crate::server::{self, Drained, Limits};
use crate::tls::Terminator;

/// The number of workers when none is configured: one per core this
/// process may run on (its CPU affinity and cgroup quota count, so
/// `taskset -c 1` gives one).
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// What each worker serves with; the same for all of them.
#[derive(Clone, Debug)]
pub struct Serving {
    pub limits: Limits,
    /// Connections served at once across all workers: one semaphore, which
    /// works across runtimes, so the limit stays one process-wide limit.
    pub permits: Arc<Semaphore>,
    /// How long open connections get after a stop.
    pub grace: Duration,
    /// HTTPS for clients, shared by every worker.
    pub tls: Option<Terminator>,
}

/// The running workers.
#[derive(Debug)]
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: watch::Sender<bool>,
    reports: mpsc::UnboundedReceiver<Result<Drained, String>>,
}

impl Workers {
    /// Starts one worker per listener. Each calls `stack` once, on its own
    /// thread, for its own service stack.
    pub fn start<F, S, B>(
        listeners: Vec<std::net::TcpListener>,
        stack: F,
        serving: Serving,
    ) -> io::Result<Self>
    where
        F: Fn() -> S + Clone + Send + 'static,
        S: Service<Request<ClientBody>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
    {
        let (stop, stopped) = watch::channel(false);
        let (report, reports) = mpsc::unbounded_channel();
        let mut threads = Vec::with_capacity(listeners.len());
        for (index, listener) in listeners.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stack, serving) = (stack.clone(), serving.clone());
            let (mut stopped, report) = (stopped.clone(), report.clone());
            let thread = std::thread::Builder::new()
                .name(format!("proxy-worker-{index}"))
                .spawn(move || {
                    let run = || {
                        runtime.block_on(async move {
                            let listener = TcpListener::from_std(listener)
                                .map_err(|e| format!("worker {index}: {e}"))?;
                            let stop = async move {
                                // A closed channel means the control side is
                                // gone: stop too.
                                let _ = stopped.wait_for(|&stop| stop).await;
                            };
                            let Serving {
                                limits,
                                permits,
                                grace,
                                tls,
                            } = serving;
                            Ok(server::serve_sharing(
                                listener,
                                stack(),
                                permits,
                                limits,
                                tls,
                                stop,
                                grace,
                            )
                            .await)
                        })
                    };
                    let outcome = catch_unwind(AssertUnwindSafe(run))
                        .unwrap_or_else(|_| Err(format!("worker {index} panicked")));
                    // Connections left after the grace period, tunnels and
                    // pooled backend connections end with the runtime.
                    runtime.shutdown_timeout(Duration::from_millis(100));
                    let _ = report.send(outcome);
                })?;
            threads.push(thread);
        }
        Ok(Self {
            threads,
            stop,
            reports,
        })
    }

    /// Serves until `stop` resolves (or a worker fails), then stops every
    /// worker and waits for all of them: all closed only if every worker's
    /// connections closed within the grace period.
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) -> Result<Drained, String> {
        let mut outcome = Ok(Drained::AllClosed);
        let mut pending = self.threads.len();
        tokio::select! {
            () = pin!(stop) => {}
            // Only a failure ends a worker before it is told to stop.
            Some(report) = self.reports.recv() => {
                pending -= 1;
                outcome = merge(outcome, report);
            }
        }
        let _ = self.stop.send(true);
        // Awaited, not joined: this thread's runtime still runs what the
        // workers' last requests may need (the demo backends).
        while pending > 0 {
            let Some(report) = self.reports.recv().await else {
                break;
            };
            pending -= 1;
            outcome = merge(outcome, report);
        }
        for thread in self.threads {
            let _ = thread.join();
        }
        outcome
    }
}

/// A failure wins over a drain; a grace period run out over all closed.
fn merge(
    so_far: Result<Drained, String>,
    next: Result<Drained, String>,
) -> Result<Drained, String> {
    match (so_far, next) {
        (Err(error), _) | (_, Err(error)) => Err(error),
        (Ok(Drained::GraceOver), _) | (_, Ok(Drained::GraceOver)) => Ok(Drained::GraceOver),
        _ => Ok(Drained::AllClosed),
    }
}
