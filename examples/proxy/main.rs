//! tower-lb's example reverse proxy.
//!
//! ```text
//! cargo run --release --example proxy                      # three demo backends
//! cargo run --release --example proxy -- \
//!     --backend http://10.0.0.1:8000 --backend http://10.0.0.2:8000,weight=2 \
//!     --strategy least-connections
//! ```
//!
//! Built only from the library's public API: a `BackendSet`, a
//! `LoadBalanceLayer` over a `Forward`, served by hyper.

mod cli;
mod demo;
mod server;

use tower::Layer;
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
    println!(
        "tower-lb proxy on http://{} ({strategy})",
        listener.local_addr()?
    );
    for backend in &backends {
        println!(
            "  backend {} (weight {})",
            backend.address(),
            backend.weight()
        );
    }
    if demo {
        let url = format!("http://{}/", listener.local_addr()?);
        println!("no --backend given: started three demo backends in this process.");
        println!("try:   for i in 1 2 3 4 5 6; do curl -s {url}; done");
    }
    let set = BackendSet::new(backends);
    let service = LoadBalanceLayer::new(set, strategy).layer(Forward::new());
    server::serve(listener, service).await;
    Ok(())
}
