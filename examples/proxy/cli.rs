//! The command line. Every setting is optional here: what is not given comes
//! from the configuration file, then from the defaults (see `settings.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tower_lb::Backend;
use tower_lb::balance::{AnyStrategy, HashKey};

use crate::discovery::Source;

/// A reverse proxy that load-balances over HTTP backends, built only from
/// tower-lb's public API. With no backend anywhere it starts three demo
/// backends. Flags override the configuration file.
#[derive(Debug, Default, Parser)]
#[command(name = "proxy", version)]
pub struct Cli {
    /// TOML configuration file (see examples/proxy.toml); SIGHUP reloads its
    /// backends.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Also reload when the configuration file changes.
    #[arg(long)]
    pub watch: bool,

    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Address of the admin surface (/metrics, /status, /); off by default.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,

    /// Bearer tokens for the admin write routes (drain, weight, eject), one
    /// a line, optionally `name:TOKEN`; without it those routes are off.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// A backend, as URL[,weight=N][,protocol=h2][,priority=N|,backup];
    /// repeat for more. Traffic goes to the lowest priority (0, the
    /// default; backup is 1) and spills to the next as it loses healthy
    /// backends. Replaces the file's list.
    #[arg(long = "backend", value_name = "URL[,weight=N]")]
    pub backends: Vec<Backend>,

    /// A discovery source, repeatable and combinable with --backend:
    /// dns:HOST:PORT (A/AAAA records), srv:NAME (SRV records),
    /// etcd:http://HOST:PORT/PREFIX (each key a backend). Replaces the
    /// file's list.
    #[arg(long = "discover", value_name = "SOURCE")]
    pub discover: Vec<Source>,

    /// The DNS server (ADDR:PORT) that dns: and srv: sources ask, instead
    /// of the system's resolver configuration.
    #[arg(long, value_name = "ADDR:PORT")]
    pub resolver: Option<SocketAddr>,

    /// Balancing strategy: round-robin, weighted-round-robin,
    /// least-connections, ip-hash, hash, p2c, random [default: round-robin].
    #[arg(long, value_name = "NAME")]
    pub strategy: Option<AnyStrategy>,

    /// Key of the hash strategy: ip, path, header:NAME or cookie:NAME.
    #[arg(long, value_name = "KEY")]
    pub hash_key: Option<HashKey>,

    /// Bounded loads for the hash strategies: no backend holds more than F
    /// times the average in flight (e.g. 1.25); a key whose backend is full
    /// goes to the next in its own order [default: unbounded].
    #[arg(long, value_name = "F")]
    pub hash_balance_factor: Option<f64>,

    /// Path of the active HTTP health check (e.g. /healthz). Without one,
    /// backends are probed with a TCP connect.
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,

    /// Time between health probes of a backend [default: 5s].
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub health_interval: Option<Duration>,

    /// How long a health probe may take [default: 2s].
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub health_timeout: Option<Duration>,

    /// Failed probes in a row that mark a backend unhealthy [default: 3].
    #[arg(long, value_name = "N")]
    pub unhealthy_after: Option<u32>,

    /// Passing probes in a row that mark it healthy again [default: 2].
    #[arg(long, value_name = "N")]
    pub healthy_after: Option<u32>,

    /// How long a backend may take to answer one try: past it, 504, or a
    /// retry where safe [default: 30s].
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub timeout: Option<Duration>,

    /// Retries on another backend; 0 turns failover off [default: 2].
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// Statuses from a backend that an idempotent request is retried on
    /// another backend for, comma-separated [default: 502,503,504].
    #[arg(long, value_name = "STATUSES", value_delimiter = ',')]
    pub retry_on: Vec<u16>,

    /// Hedging: a GET, HEAD, OPTIONS or TRACE without a body that has no
    /// response headers this long after it was sent is sent again to
    /// another backend, the first good answer wins; hedges spend from the
    /// retry budget [default: off].
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub hedge_after: Option<Duration>,

    /// Ramp a new or recovered backend's traffic up over this long [default: 0s, off].
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub slow_start: Option<Duration>,

    /// When no backend is healthy, send to all of them rather than answer 503.
    #[arg(long)]
    pub panic_routing: bool,

    /// Sticky sessions: the first response sets this cookie and later
    /// requests carrying it go to the same backend while it is available.
    #[arg(long, value_name = "NAME")]
    pub sticky_cookie: Option<String>,

    /// The key that authenticates sticky cookies (at least 16 bytes; give
    /// every instance the same file) [default: a random key per start].
    #[arg(long, value_name = "PATH")]
    pub sticky_secret_file: Option<PathBuf>,

    /// Requests in flight per backend (per unit of its weight); a full
    /// backend is skipped by every strategy [default: 0, no limit].
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u32>,

    /// Requests that may wait, first come first served, when every backend
    /// is full; beyond, 503 with Retry-After [default: 0, none wait].
    #[arg(long, value_name = "N")]
    pub max_pending: Option<usize>,

    /// How long a request may wait for a backend slot before a 503 with
    /// Retry-After [default: 1s].
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub queue_timeout: Option<Duration>,

    /// How long a client may take to send a request's headers [default: 10s].
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub header_timeout: Option<Duration>,

    /// Largest request head (request line and headers) in bytes; larger
    /// gets 431 [default: 16384, at least 8192].
    #[arg(long, value_name = "BYTES")]
    pub max_header_size: Option<usize>,

    /// Close a client connection idle this long [default: 60s].
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub idle_timeout: Option<Duration>,

    /// Most client connections at once; more wait to be accepted [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// On SIGTERM or SIGINT, how long in-flight requests may take to finish [default: 30s].
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub shutdown_grace: Option<Duration>,

    /// A protocol clients may switch to with an HTTP/1.1 `Upgrade`; repeat
    /// for more, `none` for none. Replaces the file's list. h2c is never
    /// allowed [default: websocket].
    #[arg(long = "upgrade", value_name = "PROTOCOL")]
    pub upgrades: Vec<String>,

    /// Worker threads serving clients, each with its own runtime, listener
    /// (SO_REUSEPORT) and backend connections; health checks, reloads and
    /// the admin listener run once beside them [default: one per core
    /// available to the process].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Serve HTTPS on --listen with this certificate (PEM; a chain, leaf
    /// first). Needs --tls-key. SIGHUP (and --watch) reloads it.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// How long a client may take to finish its TLS handshake [default: 10s].
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub tls_handshake_timeout: Option<Duration>,

    /// CA bundle (PEM) to verify https backends with, instead of the
    /// system's roots.
    #[arg(long, value_name = "FILE")]
    pub backend_ca: Option<PathBuf>,

    /// Name to verify in https backends' certificates and send as SNI,
    /// instead of each backend's host (for backends addressed by IP).
    #[arg(long, value_name = "NAME")]
    pub backend_tls_name: Option<String>,

    /// Client certificate (PEM chain) to show https backends: mutual TLS.
    /// Needs --backend-key.
    #[arg(long, value_name = "FILE")]
    pub backend_cert: Option<PathBuf>,

    /// The private key of --backend-cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub backend_key: Option<PathBuf>,
}

/// Parses `30s`, `500ms`, `2m`, `1h 30m`.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 500ms, 5s, 2m)"))
}

impl Cli {
    /// Parses the command line; a bad argument prints one line naming the
    /// problem and exits with status 2.
    pub fn parse_or_exit() -> Self {
        match Cli::try_parse() {
            Ok(cli) => cli,
            Err(error) if !error.use_stderr() => error.exit(),
            Err(error) => {
                let text = error.to_string();
                let first = text.lines().next().unwrap_or("error: bad arguments");
                usage_error(first.trim_start_matches("error: "))
            }
        }
    }
}

/// Prints `error: <problem>` and exits with status 2.
pub fn usage_error(problem: &str) -> ! {
    eprintln!("error: {problem}");
    std::process::exit(2);
}
