//! tower-lb's example reverse proxy.
//!
//! ```text
//! cargo run --release --example proxy                      # three demo backends
//! cargo run --release --example proxy -- \
//!     --backend http://10.0.0.1:8000 --backend http://10.0.0.2:8000,weight=2 \
//!     --strategy least-connections --health-path /healthz
//! ```
//!
//! Built only from the library's public API:
//!
//! ```text
//! Failover -> LoadBalance -> PassiveHealth -> Forward      (+ ActiveHealthCheck beside)
//! ```

mod cli;
mod demo;
mod server;

use tower::ServiceBuilder;
use tower_lb::failover::FailoverLayer;
use tower_lb::health::{
    ActiveHealthCheck, HealthEventKind, OutlierDetection, PassiveHealthLayer, Probe,
};
use tower_lb::{BackendSet, Forward, LoadBalanceLayer};

use crate::cli::Cli;

fn main() {
    let cli = Cli::parse_or_exit();
    let runtime = match cli.workers {
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
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            std::process::exit(1);
        }
    };
    if let Err(error) = runtime.block_on(run(cli)) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let probe = match &cli.health_path {
        Some(path) => Probe::http(path)?,
        None => Probe::tcp(),
    };
    let demo = cli.backends.is_empty();
    let backends = if demo {
        demo::start(3).await?
    } else {
        cli.backends.clone()
    };
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cli.listen))?;
    let strategy = cli.strategy();
    let url = format!("http://{}/", listener.local_addr()?);
    println!("tower-lb proxy on {url} ({strategy})");
    for backend in &backends {
        println!(
            "  backend {} (weight {})",
            backend.address(),
            backend.weight()
        );
    }
    if demo {
        println!("no --backend given: started three demo backends in this process.");
        println!("try:   for i in 1 2 3 4 5 6; do curl -s {url}; done");
    }

    let set = BackendSet::new(backends).with_slow_start(cli.slow_start);
    tokio::spawn(log_events(set.clone()));
    let _health = ActiveHealthCheck::new(probe)
        .interval(cli.health_interval)
        .timeout(cli.health_timeout)
        .unhealthy_after(cli.unhealthy_after)
        .healthy_after(cli.healthy_after)
        .spawn(&set)?;
    let balance = LoadBalanceLayer::new(set.clone(), strategy).panic_routing(cli.panic_routing);
    let passive = PassiveHealthLayer::new(set.clone(), OutlierDetection::new());
    let forward = Forward::builder().timeout(cli.timeout);
    if cli.retries == 0 {
        let service = ServiceBuilder::new()
            .layer(balance)
            .layer(passive)
            .service(forward.build());
        server::serve(listener, service).await;
    } else {
        let service = ServiceBuilder::new()
            .layer(FailoverLayer::new().max_retries(cli.retries))
            .layer(balance)
            .layer(passive)
            .service(forward.build());
        server::serve(listener, service).await;
    }
    Ok(())
}

/// Prints every health transition and membership change.
async fn log_events(set: BackendSet) {
    let mut events = set.events();
    while let Ok(event) = events.recv().await {
        let backend = event.backend().address();
        match event.kind() {
            HealthEventKind::Verdict { to, error, .. } => match error {
                Some(error) => println!("health: {backend} is {to:?} ({error})"),
                None => println!("health: {backend} is {to:?}"),
            },
            HealthEventKind::Ejected { duration, count } => {
                println!("health: {backend} ejected for {duration:?} (ejection #{count})")
            }
            HealthEventKind::Returned => println!("health: {backend} let back after ejection"),
            HealthEventKind::Share { share } => {
                println!("health: {backend} share {:.0} %", share * 100.0)
            }
            HealthEventKind::Joined => println!("set: {backend} joined"),
            HealthEventKind::Left => println!("set: {backend} left"),
            other => println!("health: {backend} {other:?}"),
        }
    }
}
