//! `--discover`: backends from DNS and etcd, beside (or instead of) the
//! static list. Each source follows into the one set; membership is their
//! union (see `BackendSet::follow_source`).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use tower_lb::BackendSet;

/// One `--discover` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `dns:HOST:PORT`: the A/AAAA records of HOST, each on PORT.
    Dns { host: String, port: u16 },
    /// `srv:NAME`: the SRV records of NAME.
    Srv { name: String },
    /// `etcd:http://HOST:PORT/PREFIX`: each key under /PREFIX is a backend.
    Etcd { endpoint: String, prefix: String },
}

impl FromStr for Source {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("--discover `{text}`: {why}");
        let (kind, rest) = text.split_once(':').ok_or_else(|| {
            bad("expected dns:HOST:PORT, srv:NAME or etcd:http://HOST:PORT/PREFIX")
        })?;
        let source = match kind {
            "dns" => {
                let (host, port) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| bad("expected dns:HOST:PORT"))?;
                let port = port
                    .parse()
                    .map_err(|_| bad("the port must be a number from 1 to 65535"))?;
                if host.is_empty() || port == 0 {
                    return Err(bad("expected dns:HOST:PORT"));
                }
                Source::Dns {
                    host: host.to_owned(),
                    port,
                }
            }
            "srv" if !rest.is_empty() => Source::Srv {
                name: rest.to_owned(),
            },
            "srv" => return Err(bad("expected srv:NAME")),
            "etcd" => {
                let after_scheme = rest
                    .strip_prefix("http://")
                    .ok_or_else(|| bad("expected etcd:http://HOST:PORT/PREFIX"))?;
                let (authority, path) = after_scheme
                    .split_once('/')
                    .ok_or_else(|| bad("missing the key prefix (etcd:http://HOST:PORT/PREFIX)"))?;
                if authority.is_empty() || path.is_empty() {
                    return Err(bad("expected etcd:http://HOST:PORT/PREFIX"));
                }
                Source::Etcd {
                    endpoint: format!("http://{authority}"),
                    prefix: format!("/{path}"),
                }
            }
            _ => return Err(bad("the kind must be dns, srv or etcd")),
        };
        source.available().map_err(|why| bad(&why))?;
        Ok(source)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Dns { host, port } => write!(f, "dns:{host}:{port}"),
            Source::Srv { name } => write!(f, "srv:{name}"),
            Source::Etcd { endpoint, prefix } => write!(f, "etcd:{endpoint}{prefix}"),
        }
    }
}

impl Source {
    /// Whether this build can follow the source, and if not, how to get
    /// one that can.
    fn available(&self) -> Result<(), String> {
        match self {
            Source::Dns { .. } | Source::Srv { .. } if !cfg!(feature = "dns") => {
                Err("this proxy was built without DNS discovery; \
                 build it with: cargo build --release --example proxy --features dns"
                    .into())
            }
            Source::Etcd { .. } if !cfg!(feature = "etcd") => Err(
                "this proxy was built without etcd discovery; build it with: \
                 cargo build --release --example proxy --features etcd \
                 (needs protoc: apt-get install protobuf-compiler libprotobuf-dev)"
                    .into(),
            ),
            _ => Ok(()),
        }
    }
}

/// Starts following each source into `set`, on the current runtime (the
/// control runtime: discovery runs once per process). DNS sources ask
/// `resolver` when given, else the system's resolver configuration.
pub fn spawn(
    set: &BackendSet,
    sources: &[Source],
    resolver: Option<SocketAddr>,
) -> Result<(), tower_lb::ConfigError> {
    for source in sources {
        start(set, source, resolver)?;
    }
    Ok(())
}

/// Starts following one source.
fn start(
    set: &BackendSet,
    source: &Source,
    resolver: Option<SocketAddr>,
) -> Result<(), tower_lb::ConfigError> {
    let label = source.to_string();
    let set = set.clone();
    match source {
        #[cfg(feature = "dns")]
        Source::Dns { host, port } => {
            let discover = dns(tower_lb::discover::Dns::a(host, *port), resolver)?;
            tokio::spawn(async move { set.follow_source(&label, discover).await });
            Ok(())
        }
        #[cfg(feature = "dns")]
        Source::Srv { name } => {
            let discover = dns(tower_lb::discover::Dns::srv(name), resolver)?;
            tokio::spawn(async move { set.follow_source(&label, discover).await });
            Ok(())
        }
        #[cfg(feature = "etcd")]
        Source::Etcd { endpoint, prefix } => {
            let discover = tower_lb::discover::Etcd::new([endpoint], prefix).discover()?;
            tokio::spawn(async move { set.follow_source(&label, discover).await });
            Ok(())
        }
        // Parsing refuses what this build cannot follow; kept for the
        // builds without a feature.
        #[allow(unreachable_patterns)]
        other => {
            let _ = (resolver, set, label);
            Err(tower_lb::ConfigError::new(format!(
                "--discover {other}: {}",
                other.available().err().unwrap_or_default()
            )))
        }
    }
}

#[cfg(feature = "dns")]
fn dns(
    dns: tower_lb::discover::Dns,
    resolver: Option<SocketAddr>,
) -> Result<tower_lb::discover::DnsDiscover, tower_lb::ConfigError> {
    match resolver {
        Some(server) => dns.server(server),
        None => dns,
    }
    .discover()
}
