//! The command line.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tower_lb::Backend;
use tower_lb::balance::{AnyStrategy, HashKey};

/// A reverse proxy that load-balances over HTTP backends, built only from
/// tower-lb's public API. With no --backend it starts three demo backends.
#[derive(Debug, Parser)]
#[command(name = "proxy", version)]
pub struct Cli {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A backend, as URL[,weight=N]; repeat for more. None: three demo
    /// backends are started in this process.
    #[arg(long = "backend", value_name = "URL[,weight=N]")]
    pub backends: Vec<Backend>,

    /// Balancing strategy: round-robin, weighted-round-robin,
    /// least-connections, ip-hash, hash, p2c, random.
    #[arg(long, value_name = "NAME", default_value = "round-robin")]
    pub strategy: AnyStrategy,

    /// Key of the hash strategy: ip, path, header:NAME or cookie:NAME.
    #[arg(long, value_name = "KEY")]
    pub hash_key: Option<HashKey>,

    /// Path of the active HTTP health check (e.g. /healthz). Without it,
    /// backends are probed with a TCP connect.
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,

    /// Time between health probes of a backend.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = duration)]
    pub health_interval: Duration,

    /// How long a health probe may take.
    #[arg(long, value_name = "DUR", default_value = "2s", value_parser = duration)]
    pub health_timeout: Duration,

    /// Failed probes in a row that mark a backend unhealthy.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub unhealthy_after: u32,

    /// Passing probes in a row that mark it healthy again.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub healthy_after: u32,

    /// How long a backend may take to answer one try: past it, 504 (or a
    /// retry where safe).
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = duration)]
    pub timeout: Duration,

    /// Retries on another backend; 0 turns failover off.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub retries: u32,

    /// Ramp a new or recovered backend's traffic up over this long; 0s: off.
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = duration)]
    pub slow_start: Duration,

    /// When no backend is healthy, send to all of them rather than answer 503.
    #[arg(long)]
    pub panic_routing: bool,

    /// Worker threads; 1 runs everything on one thread (the most efficient
    /// per core). Default: one per core.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

/// Parses `30s`, `500ms`, `2m`, `1h 30m`.
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 500ms, 5s, 2m)"))
}

impl Cli {
    /// Parses the command line; a bad argument prints one line naming the
    /// problem and exits with status 2.
    pub fn parse_or_exit() -> Self {
        match Cli::try_parse() {
            Ok(cli) => match cli.check() {
                Ok(()) => cli,
                Err(problem) => usage_error(&problem),
            },
            Err(error) if !error.use_stderr() => error.exit(),
            Err(error) => {
                let text = error.to_string();
                usage_error(
                    text.lines()
                        .next()
                        .unwrap_or("error: bad arguments")
                        .trim_start_matches("error: "),
                )
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.hash_key.is_some() && !matches!(self.strategy, AnyStrategy::ConsistentHash(_)) {
            return Err(format!(
                "--hash-key needs --strategy hash (or ip-hash), not {}",
                self.strategy
            ));
        }
        if self.workers == Some(0) {
            return Err("--workers must be at least 1".into());
        }
        if self.health_interval.is_zero() || self.health_timeout.is_zero() {
            return Err("--health-interval and --health-timeout must be above zero".into());
        }
        if self.unhealthy_after == 0 || self.healthy_after == 0 {
            return Err("--unhealthy-after and --healthy-after must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be above zero".into());
        }
        Ok(())
    }

    /// The strategy with its hash key applied.
    pub fn strategy(&self) -> AnyStrategy {
        match &self.hash_key {
            Some(key) => self.strategy.clone().with_hash_key(key.clone()),
            None => self.strategy.clone(),
        }
    }
}

fn usage_error(problem: &str) -> ! {
    eprintln!("error: {problem}");
    std::process::exit(2);
}
