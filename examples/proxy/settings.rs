//! The configuration file, and the settings the proxy runs with: flags over
//! file over defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use tower_lb::Backend;
use tower_lb::balance::{AnyStrategy, HashKey, StickyCookie};

use crate::cli::{self, Cli};
use crate::discovery::Source;

/// The TOML file. Keys are the flags' names; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct File {
    listen: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    admin_token_file: Option<std::path::PathBuf>,
    #[serde(default, rename = "backend")]
    backends: Vec<FileBackend>,
    #[serde(default, deserialize_with = "sources")]
    discover: Vec<Source>,
    resolver: Option<SocketAddr>,
    #[serde(default, deserialize_with = "parsed")]
    strategy: Option<AnyStrategy>,
    #[serde(default, deserialize_with = "parsed")]
    hash_key: Option<HashKey>,
    hash_balance_factor: Option<f64>,
    #[serde(default, deserialize_with = "networks")]
    trusted_proxies: Vec<IpNet>,
    #[serde(default, deserialize_with = "duration")]
    slow_start: Option<Duration>,
    panic_routing: Option<bool>,
    sticky_cookie: Option<String>,
    sticky_secret_file: Option<PathBuf>,
    max_in_flight: Option<u32>,
    max_pending: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    queue_timeout: Option<Duration>,
    workers: Option<usize>,
    watch: Option<bool>,
    upgrades: Option<Vec<String>>,
    #[serde(default)]
    health: FileHealth,
    #[serde(default)]
    failover: FileFailover,
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    tls: FileTls,
    #[serde(default)]
    backend_tls: FileBackendTls,
}

/// `[tls]`: HTTPS for clients.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default, deserialize_with = "duration")]
    handshake_timeout: Option<Duration>,
}

/// `[backend-tls]`: TLS to `https://` backends.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileBackendTls {
    ca: Option<PathBuf>,
    name: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileBackend {
    url: String,
    weight: Option<u32>,
    protocol: Option<String>,
    priority: Option<u8>,
    #[serde(default)]
    backup: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileHealth {
    path: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<Duration>,
    unhealthy_after: Option<u32>,
    healthy_after: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileFailover {
    retries: Option<u32>,
    retry_on: Option<Vec<u16>>,
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    hedge_after: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileServer {
    #[serde(default, deserialize_with = "duration")]
    header_timeout: Option<Duration>,
    max_header_size: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    idle_timeout: Option<Duration>,
    max_connections: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    shutdown_grace: Option<Duration>,
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    cli::duration(&text).map(Some).map_err(de::Error::custom)
}

fn parsed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr<Err = tower_lb::ConfigError>,
{
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(de::Error::custom)
}

fn sources<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Source>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| text.parse().map_err(de::Error::custom))
        .collect()
}

fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|net| {
            net.parse().map_err(|_| {
                de::Error::custom(format!("`{net}` is not a network such as 10.0.0.0/8"))
            })
        })
        .collect()
}

impl File {
    /// Reads and parses `path`; the error is one line naming the field.
    pub fn read(path: &Path) -> Result<Self, String> {
        let where_ = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("config file {where_}: cannot read it: {e}"))?;
        let deserializer = toml::de::Deserializer::parse(&text).map_err(|e| {
            let line = e
                .span()
                .map_or(0, |span| text[..span.start].lines().count().max(1));
            format!(
                "config file {where_}: line {line}: {}",
                first_line(e.message())
            )
        })?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let field = e.path().to_string();
            let message = first_line(e.inner().message()).to_owned();
            format!("config file {where_}: {field}: {message}")
        })
    }

    /// The backends the file lists, or the first one's error naming it.
    pub fn backends(&self) -> Result<Vec<Backend>, String> {
        self.backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut text = b.url.clone();
                if let Some(weight) = b.weight {
                    text.push_str(&format!(",weight={weight}"));
                }
                if let Some(protocol) = &b.protocol {
                    text.push_str(&format!(",protocol={protocol}"));
                }
                if let Some(priority) = b.priority {
                    text.push_str(&format!(",priority={priority}"));
                }
                if b.backup {
                    text.push_str(",backup");
                }
                text.parse::<Backend>()
                    .map_err(|e| format!("backend[{i}]: {e}"))
            })
            .collect()
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text).trim()
}

/// Everything the proxy runs with.
#[derive(Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    /// Tokens of the admin write routes.
    pub admin_tokens: Option<tower_lb::metrics::AdminTokens>,
    pub backends: Vec<Backend>,
    /// Discovery sources beside the static backends.
    pub discover: Vec<Source>,
    /// The DNS server discovery asks, instead of the system's.
    pub resolver: Option<SocketAddr>,
    pub strategy: AnyStrategy,
    pub slow_start: Duration,
    pub panic_routing: bool,
    /// The sticky cookie, when sessions are sticky.
    pub sticky: Option<StickyCookie>,
    /// Requests in flight per backend per unit of weight; 0: no limit.
    pub max_in_flight: u32,
    /// Requests that may wait for a slot; 0: none.
    pub max_pending: usize,
    pub queue_timeout: Duration,
    pub workers: Option<usize>,
    pub watch: bool,
    pub health_path: Option<String>,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
    pub retries: u32,
    /// Statuses retried on another backend.
    pub retry_on: Vec<u16>,
    /// When a slow request is hedged on another backend; `None`: never.
    pub hedge_after: Option<Duration>,
    pub timeout: Duration,
    pub header_timeout: Duration,
    pub max_header_size: usize,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    /// Protocols a client may switch to with `Upgrade`.
    pub upgrades: Vec<String>,
    /// HTTPS on `listen`, when a certificate is given.
    pub tls: Option<ServeTls>,
    pub backend_tls: BackendTlsSettings,
}

/// A setting with the name of where it came from (`--tls-cert`, or
/// `tls.cert` in the file), for errors that name it.
#[derive(Clone, Debug)]
pub struct Named<T> {
    pub value: T,
    pub name: &'static str,
}

impl fmt::Display for Named<PathBuf> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.value.display())
    }
}

impl fmt::Display for Named<String> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.value)
    }
}

/// The flag's value if given, else the file's, each named.
fn named<T>(
    flag: Option<T>,
    file: Option<T>,
    flag_name: &'static str,
    key: &'static str,
) -> Option<Named<T>> {
    match (flag, file) {
        (Some(value), _) => Some(Named {
            value,
            name: flag_name,
        }),
        (None, Some(value)) => Some(Named { value, name: key }),
        (None, None) => None,
    }
}

/// HTTPS for clients.
#[derive(Clone, Debug)]
pub struct ServeTls {
    pub cert: Named<PathBuf>,
    pub key: Named<PathBuf>,
    pub handshake_timeout: Duration,
}

/// TLS to `https://` backends; all `None` is the system's roots.
#[derive(Debug, Default)]
pub struct BackendTlsSettings {
    pub ca: Option<Named<PathBuf>>,
    pub name: Option<Named<String>>,
    pub cert: Option<Named<PathBuf>>,
    pub key: Option<Named<PathBuf>>,
}

impl Settings {
    /// Flags over file over defaults; the error names the setting.
    pub fn resolve(cli: Cli, file: File) -> Result<Self, String> {
        let file_backends = file.backends().map_err(|e| match &cli.config {
            Some(path) => format!("config file {}: {e}", path.display()),
            None => e,
        })?;
        let mut strategy = cli
            .strategy
            .or(file.strategy)
            .unwrap_or_else(|| AnyStrategy::RoundRobin(Default::default()));
        let hash_key = cli.hash_key.or(file.hash_key);
        if let Some(key) = hash_key {
            if !matches!(strategy, AnyStrategy::ConsistentHash(_)) {
                return Err(format!(
                    "hash-key needs strategy hash (or ip-hash), not {strategy}"
                ));
            }
            strategy = strategy.with_hash_key(key);
        }
        if let Some(factor) = cli.hash_balance_factor.or(file.hash_balance_factor) {
            strategy = strategy
                .with_hash_balance_factor(factor)
                .map_err(|e| format!("hash-balance-factor: {e}"))?;
        }
        let sticky = match cli.sticky_cookie.or(file.sticky_cookie) {
            None => None,
            Some(name) => {
                let cookie = StickyCookie::new(&name).map_err(|e| format!("sticky-cookie: {e}"))?;
                match cli.sticky_secret_file.or(file.sticky_secret_file) {
                    None => Some(cookie),
                    Some(path) => {
                        let key = std::fs::read(&path)
                            .map_err(|e| format!("sticky-secret-file {}: {e}", path.display()))?;
                        Some(
                            cookie.with_key(key.trim_ascii()).map_err(|e| {
                                format!("sticky-secret-file {}: {e}", path.display())
                            })?,
                        )
                    }
                }
            }
        };
        if !file.trusted_proxies.is_empty()
            && let AnyStrategy::ConsistentHash(hash) = strategy
        {
            strategy = AnyStrategy::ConsistentHash(hash.trust_proxies(file.trusted_proxies));
        }
        let upgrades = match (cli.upgrades.as_slice(), file.upgrades) {
            ([], Some(list)) => list,
            ([], None) => vec!["websocket".to_string()],
            ([none], _) if none == "none" => Vec::new(),
            (flags, _) => flags.to_vec(),
        };
        let tls = match (
            named(cli.tls_cert, file.tls.cert, "--tls-cert", "tls.cert"),
            named(cli.tls_key, file.tls.key, "--tls-key", "tls.key"),
        ) {
            (Some(cert), Some(key)) => Some(ServeTls {
                cert,
                key,
                handshake_timeout: cli
                    .tls_handshake_timeout
                    .or(file.tls.handshake_timeout)
                    .unwrap_or(Duration::from_secs(10)),
            }),
            (Some(cert), None) => return Err(format!("{cert}: needs --tls-key too")),
            (None, Some(key)) => return Err(format!("{key}: needs --tls-cert too")),
            (None, None) => None,
        };
        let backend_tls = BackendTlsSettings {
            ca: named(
                cli.backend_ca,
                file.backend_tls.ca,
                "--backend-ca",
                "backend-tls.ca",
            ),
            name: named(
                cli.backend_tls_name,
                file.backend_tls.name,
                "--backend-tls-name",
                "backend-tls.name",
            ),
            cert: named(
                cli.backend_cert,
                file.backend_tls.cert,
                "--backend-cert",
                "backend-tls.cert",
            ),
            key: named(
                cli.backend_key,
                file.backend_tls.key,
                "--backend-key",
                "backend-tls.key",
            ),
        };
        let settings = Settings {
            listen: cli
                .listen
                .or(file.listen)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            admin: cli.admin.or(file.admin),
            admin_tokens: match cli.admin_token_file.or(file.admin_token_file) {
                Some(path) => Some(
                    tower_lb::metrics::AdminTokens::read(&path)
                        .map_err(|e| format!("admin-token-file: {e}"))?,
                ),
                None => None,
            },
            backends: if cli.backends.is_empty() {
                file_backends
            } else {
                cli.backends
            },
            discover: if cli.discover.is_empty() {
                file.discover
            } else {
                cli.discover
            },
            resolver: cli.resolver.or(file.resolver),
            strategy,
            slow_start: cli.slow_start.or(file.slow_start).unwrap_or(Duration::ZERO),
            panic_routing: cli.panic_routing || file.panic_routing.unwrap_or(false),
            sticky,
            max_in_flight: cli.max_in_flight.or(file.max_in_flight).unwrap_or(0),
            max_pending: cli.max_pending.or(file.max_pending).unwrap_or(0),
            queue_timeout: cli
                .queue_timeout
                .or(file.queue_timeout)
                .unwrap_or(Duration::from_secs(1)),
            workers: cli.workers.or(file.workers),
            watch: cli.watch || file.watch.unwrap_or(false),
            health_path: cli.health_path.or(file.health.path),
            health_interval: cli
                .health_interval
                .or(file.health.interval)
                .unwrap_or(Duration::from_secs(5)),
            health_timeout: cli
                .health_timeout
                .or(file.health.timeout)
                .unwrap_or(Duration::from_secs(2)),
            unhealthy_after: cli
                .unhealthy_after
                .or(file.health.unhealthy_after)
                .unwrap_or(3),
            healthy_after: cli.healthy_after.or(file.health.healthy_after).unwrap_or(2),
            retries: cli.retries.or(file.failover.retries).unwrap_or(2),
            retry_on: match (cli.retry_on, file.failover.retry_on) {
                (flags, _) if !flags.is_empty() => flags,
                (_, Some(list)) => list,
                _ => vec![502, 503, 504],
            },
            hedge_after: cli.hedge_after.or(file.failover.hedge_after),
            timeout: cli
                .timeout
                .or(file.failover.timeout)
                .unwrap_or(Duration::from_secs(30)),
            header_timeout: cli
                .header_timeout
                .or(file.server.header_timeout)
                .unwrap_or(Duration::from_secs(10)),
            max_header_size: cli
                .max_header_size
                .or(file.server.max_header_size)
                .unwrap_or(16 * 1024),
            idle_timeout: cli
                .idle_timeout
                .or(file.server.idle_timeout)
                .unwrap_or(Duration::from_secs(60)),
            max_connections: cli
                .max_connections
                .or(file.server.max_connections)
                .unwrap_or(10_000),
            shutdown_grace: cli
                .shutdown_grace
                .or(file.server.shutdown_grace)
                .unwrap_or(Duration::from_secs(30)),
            upgrades,
            tls,
            backend_tls,
        };
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), String> {
        let positive = [
            ("health.interval", self.health_interval),
            ("health.timeout", self.health_timeout),
            ("failover.timeout", self.timeout),
            (
                "failover.hedge-after",
                self.hedge_after.unwrap_or(Duration::from_secs(1)),
            ),
            ("server.header-timeout", self.header_timeout),
            ("server.idle-timeout", self.idle_timeout),
            (
                "tls.handshake-timeout",
                self.tls
                    .as_ref()
                    .map_or(Duration::from_secs(1), |t| t.handshake_timeout),
            ),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(format!("{name}: must be above zero"));
            }
        }
        if self.unhealthy_after == 0 {
            return Err("health.unhealthy-after: must be at least 1".into());
        }
        if self.healthy_after == 0 {
            return Err("health.healthy-after: must be at least 1".into());
        }
        if self.max_header_size < 8192 {
            return Err("server.max-header-size: must be at least 8192".into());
        }
        if self.max_connections == 0 {
            return Err("server.max-connections: must be at least 1".into());
        }
        if self.admin_tokens.is_some() && self.admin.is_none() {
            return Err("admin-token-file: needs admin (the listener of the write routes)".into());
        }
        if self.workers == Some(0) {
            return Err("workers: must be at least 1".into());
        }
        for protocol in &self.upgrades {
            if protocol.trim().eq_ignore_ascii_case("h2c") {
                return Err(
                    "upgrades: h2c is never allowed (a tunnel would bypass the proxy; \
                            h2c clients are served with prior knowledge)"
                        .into(),
                );
            }
            if protocol.trim().is_empty() || protocol.contains([',', ' ', '/']) {
                return Err(format!(
                    "upgrades: `{protocol}` is not a protocol name (write e.g. websocket)"
                ));
            }
        }
        if let Some(path) = &self.health_path {
            tower_lb::health::Probe::http(path).map_err(|e| format!("health.path: {e}"))?;
        }
        Ok(())
    }
}
