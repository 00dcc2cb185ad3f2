//! The command line.

use std::net::SocketAddr;

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

    /// Worker threads; 1 runs everything on one thread (the most efficient
    /// per core). Default: one per core.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

impl Cli {
    /// Parses the command line; a bad argument prints one line naming the
    /// problem and exits with status 2.
    pub fn parse_or_exit() -> Self {
        match Cli::try_parse() {
            Ok(cli) => cli.checked(),
            Err(error) if !error.use_stderr() => error.exit(),
            Err(error) => {
                let text = error.to_string();
                let first = text.lines().next().unwrap_or("error: bad arguments");
                eprintln!("{first}");
                std::process::exit(2);
            }
        }
    }

    fn checked(self) -> Self {
        if self.hash_key.is_some() && !matches!(self.strategy, AnyStrategy::ConsistentHash(_)) {
            eprintln!(
                "error: --hash-key needs --strategy hash (or ip-hash), not {}",
                self.strategy
            );
            std::process::exit(2);
        }
        if self.workers == Some(0) {
            eprintln!("error: --workers must be at least 1");
            std::process::exit(2);
        }
        self
    }

    /// The strategy with its hash key applied.
    pub fn strategy(&self) -> AnyStrategy {
        match &self.hash_key {
            Some(key) => self.strategy.clone().with_hash_key(key.clone()),
            None => self.strategy.clone(),
        }
    }
}
