//! tower-lb's example reverse proxy.
//!
//! ```text
//! cargo run --release --example proxy                      # three demo backends
//! cargo run --release --example proxy -- --config examples/proxy.toml
//! cargo run --release --example proxy -- \
//!     --backend http://10.0.0.1:8000 --backend http://10.0.0.2:8000,weight=2 \
//!     --strategy least-connections --health-path /healthz --admin 127.0.0.1:9090
//! ```
//!
//! Built only from the library's public API:
//!
//! ```text
//! Trace -> Metrics -> Failover -> LoadBalance -> PassiveHealth -> Forward
//!          (+ ActiveHealthCheck, the admin service, config reloads beside)
//! ```

mod cli;
mod demo;
mod events;
mod reload;
mod server;
mod settings;

use std::time::Duration;

use prometheus_client::registry::Registry;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;
use tower_lb::failover::FailoverLayer;
use tower_lb::health::{ActiveHealthCheck, OutlierDetection, PassiveHealthLayer, Probe};
use tower_lb::metrics::{AdminService, MetricsLayer};
use tower_lb::{BackendSet, Forward, LoadBalanceLayer};
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, usage_error};
use crate::server::Limits;
use crate::settings::{File, Settings};

fn main() {
    let cli = Cli::parse_or_exit();
    let file = match &cli.config {
        Some(path) => File::read(path).unwrap_or_else(|e| usage_error(&e)),
        None => File::default(),
    };
    let config = cli.config.clone();
    let settings = Settings::resolve(cli, file).unwrap_or_else(|e| usage_error(&e));
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let runtime = match settings.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let runtime = runtime.unwrap_or_else(|e| {
        eprintln!("error: cannot start the runtime: {e}");
        std::process::exit(1);
    });
    if let Err(error) = runtime.block_on(run(settings, config)) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
    // Do not wait for background tasks (probes, reload) to notice.
    runtime.shutdown_timeout(Duration::from_millis(100));
}

async fn run(
    settings: Settings,
    config: Option<std::path::PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    let probe = match &settings.health_path {
        Some(path) => Probe::http(path)?,
        None => Probe::tcp(),
    };
    let demo = settings.backends.is_empty();
    let backends = if demo {
        demo::start(3).await?
    } else {
        settings.backends.clone()
    };
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let admin_listener = match settings.admin {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (admin): {e}"))?,
        ),
        None => None,
    };
    let url = format!("http://{}/", listener.local_addr()?);
    println!("tower-lb proxy on {url} ({})", settings.strategy);
    for backend in &backends {
        println!(
            "  backend {} (weight {})",
            backend.address(),
            backend.weight()
        );
    }
    if let Some(admin) = &admin_listener {
        println!(
            "  admin on http://{}/ (/metrics, /status)",
            admin.local_addr()?
        );
    }
    if demo {
        println!("no --backend given: started three demo backends in this process.");
        println!("try:   for i in 1 2 3 4 5 6; do curl -s {url}; done");
    }

    let set = BackendSet::new(backends).with_slow_start(settings.slow_start);
    tokio::spawn(events::log(set.clone()));
    if let Some(path) = config {
        reload::spawn(set.clone(), path, settings.watch)?;
    }
    let _health = ActiveHealthCheck::new(probe)
        .interval(settings.health_interval)
        .timeout(settings.health_timeout)
        .unhealthy_after(settings.unhealthy_after)
        .healthy_after(settings.healthy_after)
        .spawn(&set)?;
    let mut registry = Registry::default();
    let metrics = MetricsLayer::new(&set, &mut registry);
    let limits = Limits {
        header_timeout: settings.header_timeout,
        max_header_size: settings.max_header_size,
        idle_timeout: settings.idle_timeout,
        max_connections: settings.max_connections,
    };
    if let Some(admin_listener) = admin_listener {
        let admin = AdminService::new(set.clone(), registry);
        tokio::spawn(server::serve(
            admin_listener,
            admin,
            limits,
            std::future::pending(),
            Duration::ZERO,
        ));
    }

    let balance =
        LoadBalanceLayer::new(set.clone(), settings.strategy).panic_routing(settings.panic_routing);
    let passive = PassiveHealthLayer::new(set.clone(), OutlierDetection::new());
    let forward = Forward::builder()
        .timeout(settings.timeout)
        .upgrades(&settings.upgrades);
    let stop = shutdown_signal();
    let grace = settings.shutdown_grace;
    let failover =
        (settings.retries > 0).then(|| FailoverLayer::new().max_retries(settings.retries));
    match failover {
        None => {
            let service = ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
                .layer(metrics)
                .layer(balance)
                .layer(passive)
                .service(forward.build());
            server::serve(listener, service, limits, stop, grace).await;
        }
        Some(failover) => {
            let service = ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
                .layer(metrics)
                .layer(failover)
                .layer(balance)
                .layer(passive)
                .service(forward.build());
            server::serve(listener, service, limits, stop, grace).await;
        }
    }
    tracing::info!("stopped");
    Ok(())
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
