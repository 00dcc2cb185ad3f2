//! tower-lb's example reverse proxy.
//!
//! ```text
//! cargo run --release --example proxy                      # three demo backends
//! cargo run --release --example proxy -- --config examples/proxy.toml
//! cargo run --release --example proxy -- \
//!     --backend http://10.0.0.1:8000 --backend http://10.0.0.2:8000,weight=2 \
//!     --strategy least-connections --health-path /healthz --admin 127.0.0.1:9090
//! cargo run --release --example proxy -- \
//!     --tls-cert proxy.pem --tls-key proxy.key \
//!     --backend https://10.0.0.1:8443 --backend-ca backends-ca.pem
//! ```
//!
//! Built only from the library's public API:
//!
//! ```text
//! [Trace] -> Metrics -> Failover -> Hedge -> LoadBalance -> PassiveHealth -> Forward
//!            (+ ActiveHealthCheck, the admin service, config reloads beside)
//! ```
//!
//! tower-http's `TraceLayer` (`[Trace]`) is there only when the log filter
//! records its `debug` events; failed responses are logged by the server
//! either way (see `failures.rs`).
//!
//! Clients are served thread per core: `--workers N` threads (one per core
//! by default), each with its own current-thread runtime, listener and
//! stack (see `workers.rs`). What exists once per process runs once, on the
//! main thread's runtime.

mod cli;
mod client_addr;
mod client_body;
mod demo;
mod discovery;
mod events;
mod failures;
mod inline;
mod listeners;
mod reload;
mod server;
mod settings;
mod supervisor;
mod tls;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;
use tower::{Layer, ServiceBuilder};
use tower_http::trace::TraceLayer;
use tower_lb::balance::{QueueLayer, Sticky, StickyCookieLayer, Tiered};
use tower_lb::failover::FailoverLayer;
use tower_lb::health::{ActiveHealthCheck, OutlierDetection, PassiveHealthLayer, Probe};
use tower_lb::hedge::HedgeLayer;
use tower_lb::metrics::{AdminService, MetricsLayer};
use tower_lb::{BackendSet, Forward, LoadBalanceLayer};
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, usage_error};
use crate::server::{Drained, Limits};
use crate::settings::{File, Settings};
use crate::workers::{Serving, Workers};

fn main() {
    let cli = Cli::parse_or_exit();
    let file = match &cli.config {
        Some(path) => File::read(path).unwrap_or_else(|e| usage_error(&e)),
        None => File::default(),
    };
    let config = cli.config.clone();
    let settings = Settings::resolve(cli, file).unwrap_or_else(|e| usage_error(&e));
    // Certificates and keys are read and checked before anything starts:
    // a bad one is a usage error naming its flag.
    let terminator = settings
        .tls
        .as_ref()
        .map(tls::Terminator::load)
        .transpose()
        .unwrap_or_else(|e| usage_error(&e));
    let backend_tls = tls::backend_tls(&settings.backend_tls).unwrap_or_else(|e| usage_error(&e));
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    // The control runtime: what runs once per process. The workers serving
    // clients have runtimes of their own (see `workers.rs`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        });
    if let Err(error) = runtime.block_on(run(settings, config, terminator, backend_tls)) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
    // Do not wait for background tasks (probes, reload) to notice.
    runtime.shutdown_timeout(Duration::from_millis(100));
}

async fn run(
    settings: Settings,
    config: Option<std::path::PathBuf>,
    terminator: Option<tls::Terminator>,
    backend_tls: Option<tower_lb::forward::BackendTls>,
) -> Result<(), Box<dyn std::error::Error>> {
    let probe = match &settings.health_path {
        Some(path) => Probe::http(path)?,
        None => Probe::tcp(),
    };
    let demo = settings.backends.is_empty() && settings.discover.is_empty();
    let backends = if demo {
        demo::start(3).await?
    } else {
        settings.backends.clone()
    };
    let workers = settings.workers.unwrap_or_else(workers::default_count);
    let listeners = listeners::bind(settings.listen, workers)
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let admin_listener = match settings.admin {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (admin): {e}"))?,
        ),
        None => None,
    };
    let scheme = if terminator.is_some() {
        "https"
    } else {
        "http"
    };
    let url = match listeners.first() {
        Some(listener) => format!("{scheme}://{}/", listener.local_addr()?),
        None => return Err("no listener".into()),
    };
    println!("tower-lb proxy on {url} ({})", settings.strategy);
    for backend in &backends {
        println!(
            "  backend {} (weight {})",
            backend.address(),
            backend.weight()
        );
    }
    if let Some(tls) = &backend_tls {
        println!("  https backends verified with {tls:?}");
    }
    for source in &settings.discover {
        println!("  discover {source}");
    }
    if let Some(resolver) = settings.resolver {
        println!("  DNS server {resolver}");
    }
    if let Some(after) = settings.hedge_after {
        println!("  hedging requests without headers after {after:?}");
    }
    if workers == 1 {
        println!("  1 worker thread");
    } else {
        println!("  {workers} worker threads, each with its own listener and backend connections");
    }
    if let Some(admin) = &admin_listener {
        let writes = if settings.admin_tokens.is_some() {
            ", POST /backends/..."
        } else {
            ""
        };
        println!(
            "  admin on http://{}/ (/metrics, /status{writes})",
            admin.local_addr()?
        );
        warn_if_exposed(admin.local_addr()?, settings.admin_tokens.is_some());
    }
    if demo {
        println!("no --backend given: started three demo backends in this process.");
        println!("try:   for i in 1 2 3 4 5 6; do curl -s {url}; done");
    }

    let set = BackendSet::new(backends.clone()).with_slow_start(settings.slow_start);
    tokio::spawn(events::log(set.clone()));
    reload::spawn(set.clone(), backends, config, settings.watch)?;
    discovery::spawn(&set, &settings.discover, settings.resolver)?;
    if let Some(terminator) = &terminator {
        terminator.spawn_reload(settings.watch)?;
    }
    let mut health = ActiveHealthCheck::new(probe);
    if let Some(tls) = &backend_tls {
        health = health.tls(tls.clone());
    }
    let _health = health
        .interval(settings.health_interval)
        .timeout(settings.health_timeout)
        .unhealthy_after(settings.unhealthy_after)
        .healthy_after(settings.healthy_after)
        .spawn(&set)?;
    let mut registry = Registry::default();
    let metrics = MetricsLayer::new(&set, &mut registry);
    // Sticky sessions: `Secure` cookies when clients come over TLS.
    let sticky = (settings.sticky.clone()).map(|cookie| cookie.secure(terminator.is_some()));
    let strategy = match sticky.clone() {
        Some(cookie) => Sticky::new(cookie, settings.strategy),
        None => Sticky::off(settings.strategy),
    };
    let sticky = sticky.map(|cookie| StickyCookieLayer::new(&set, cookie));
    // Priority tiers (`,priority=N`, `,backup`); with one tier, Tiered only
    // hands over to the strategy.
    let balance = LoadBalanceLayer::new(set.clone(), Tiered::new(strategy))
        .panic_routing(settings.panic_routing)
        .max_in_flight(settings.max_in_flight);
    // Requests wait for a backend slot only when backends have a limit.
    let queue = (settings.max_in_flight > 0 && settings.max_pending > 0)
        .then(|| QueueLayer::new(&balance, settings.max_pending, settings.queue_timeout));
    if let Some(queue) = &queue {
        queue.register_metrics(&mut registry);
    }
    if let Some(sticky) = &sticky {
        sticky.register_metrics(&mut registry);
    }
    let failover = (settings.retries > 0).then(|| {
        FailoverLayer::new()
            .max_retries(settings.retries)
            .retry_statuses(settings.retry_on.iter().copied())
    });
    // Hedging below failover, spending from its retry budget when there is
    // one; the recorder below the balancer tells it where first tries went.
    let hedge = match settings.hedge_after {
        Some(after) => {
            let hedge = HedgeLayer::new(after)?;
            let hedge = match &failover {
                Some(failover) => hedge.with_failover(failover),
                None => hedge,
            };
            hedge.register_metrics(&mut registry);
            Some(hedge)
        }
        None => None,
    };
    let record = hedge.as_ref().map(HedgeLayer::recorder);
    let limits = Limits {
        header_timeout: settings.header_timeout,
        max_header_size: settings.max_header_size,
        idle_timeout: settings.idle_timeout,
        max_connections: settings.max_connections,
    };
    if let Some(admin_listener) = admin_listener {
        let mut admin = AdminService::new(set.clone(), registry).with_metrics(&metrics);
        if let Some(tokens) = settings.admin_tokens.clone() {
            admin = admin.with_tokens(tokens);
        }
        if let Some(queue) = &queue {
            admin = admin.with_queue(queue);
        }
        tokio::spawn(server::serve(
            admin_listener,
            admin,
            limits,
            std::future::pending(),
            Duration::ZERO,
        ));
    }

    // The layers are made once and cloned into each worker's stack: the
    // clones share their state (balancer position, health, retry budget,
    // metrics). Only `Forward`, which owns the backend connections, is
    // built anew by each worker.
    let passive = PassiveHealthLayer::new(set.clone(), OutlierDetection::new());
    let mut forward = Forward::builder()
        .timeout(settings.timeout)
        .upgrades(&settings.upgrades);
    if terminator.is_some() {
        forward = forward.forwarded_proto("https");
    }
    if let Some(tls) = backend_tls {
        forward = forward.tls(tls);
    }
    let grace = settings.shutdown_grace;
    let serving = Serving {
        limits,
        permits: Arc::new(Semaphore::new(
            settings.max_connections.min(Semaphore::MAX_PERMITS),
        )),
        grace,
        tls: terminator,
    };
    // The usual shape (failover on, no sticky cookie, hedging or queue)
    // gets a stack of its own, built from the layers themselves: each
    // `option_layer` below is an `Either` that every request passes
    // through, off or on (a match, and a move of the whole future below
    // it, in `call` and again in `poll`).
    let plain = match (&failover, &sticky, &hedge, &queue, &record) {
        (Some(failover), None, None, None, None) => Some(failover.clone()),
        _ => None,
    };
    // Every other shape: a layer that is off is left out (`option_layer`),
    // not configured to do nothing.
    let (general_forward, general_balance) = (forward.clone(), balance.clone());
    let (general_metrics, general_passive) = (metrics.clone(), passive.clone());
    let stack = move || {
        ServiceBuilder::new()
            .layer(general_metrics.clone())
            .option_layer(sticky.clone())
            .option_layer(failover.clone())
            .option_layer(hedge.clone())
            .option_layer(queue.clone())
            .layer(general_balance.clone())
            .option_layer(record.clone())
            .layer(general_passive.clone())
            .service(general_forward.clone().build())
    };
    // Failures are logged by the server (`failures`). tower-http's request
    // tracing, all at `debug`, is in the stack only when the log filter
    // records it; a stack of its own, not an `option_layer`, because an
    // `Either` around the whole stack (its future and its body) costs
    // every request about 400 instructions.
    let workers = match plain {
        _ if failures::request_tracing() => {
            let traced = move || TraceLayer::new_for_http().on_failure(()).layer(stack());
            Workers::start(listeners, traced, serving)?
        }
        Some(failover) => {
            let plain = move || {
                ServiceBuilder::new()
                    .layer(metrics.clone())
                    .layer(failover.clone())
                    .layer(balance.clone())
                    .layer(passive.clone())
                    .service(forward.clone().build())
            };
            Workers::start(listeners, plain, serving)?
        }
        None => Workers::start(listeners, stack, serving)?,
    };
    match workers.run_until(shutdown_signal()).await? {
        Drained::AllClosed => tracing::info!("all connections closed"),
        Drained::GraceOver => tracing::warn!(?grace, "grace period over; dropping what is left"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// The admin listener's read routes are open to whoever reaches them: on
/// loopback that is this machine; elsewhere, say so unless tokens at least
/// guard the write routes.
fn warn_if_exposed(admin: std::net::SocketAddr, tokens: bool) {
    if exposed(admin, tokens) {
        tracing::warn!(
            %admin,
            "the admin listener is not on loopback and has no --admin-token-file: \
             anyone who reaches it reads /metrics and /status (the write routes stay off)"
        );
    }
}

/// Whether an admin listener on `admin` deserves the warning.
fn exposed(admin: std::net::SocketAddr, tokens: bool) -> bool {
    !admin.ip().is_loopback() && !tokens
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping, in-flight requests finish"),
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping, in-flight requests finish"),
    }
}

#[cfg(test)]
mod tests {
    use super::exposed;

    #[test]
    fn an_admin_listener_off_loopback_without_tokens_is_exposed() {
        let addr = |text: &str| text.parse().unwrap();
        assert!(exposed(addr("0.0.0.0:9090"), false));
        assert!(exposed(addr("[::]:9090"), false));
        assert!(exposed(addr("10.0.0.5:9090"), false));
        assert!(
            !exposed(addr("10.0.0.5:9090"), true),
            "tokens guard the writes"
        );
        assert!(!exposed(addr("127.0.0.1:9090"), false));
        assert!(!exposed(addr("[::1]:9090"), false));
    }
}
