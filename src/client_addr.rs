//! The client's address, as a request extension.

use std::net::{IpAddr, SocketAddr};

use http::HeaderValue;

/// The address of the peer that opened the connection a request came on.
///
/// Insert it into each request's extensions (once per connection is enough:
/// tower-http's `AddExtensionLayer` does it). [`Forward`](crate::Forward)
/// appends it to `X-Forwarded-For`, and `ip-hash` hashes it.
///
/// With hyper, per accepted connection:
///
/// ```
/// use std::net::SocketAddr;
/// use tower_lb::ClientAddr;
///
/// let peer: SocketAddr = "192.0.2.7:50000".parse()?;
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(ClientAddr::new(peer));
/// assert_eq!(request.extensions().get::<ClientAddr>().unwrap().ip().to_string(), "192.0.2.7");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// With axum, copy axum's `ConnectInfo` into it with a small middleware
/// (axum is not a dependency of this crate, so it cannot read `ConnectInfo`
/// itself); the crate docs show one.
#[derive(Clone, Debug)]
pub struct ClientAddr {
    addr: SocketAddr,
    /// The IP formatted once, for `X-Forwarded-For`.
    header: HeaderValue,
}

impl ClientAddr {
    /// The client at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let ip = canonical(addr.ip());
        let header = HeaderValue::from_str(&ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { addr, header }
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The IP address (IPv4-mapped IPv6 addresses as IPv4).
    pub fn ip(&self) -> IpAddr {
        canonical(self.addr.ip())
    }

    /// The IP as a header value.
    pub(crate) fn header_value(&self) -> &HeaderValue {
        &self.header
    }
}

impl From<SocketAddr> for ClientAddr {
    fn from(addr: SocketAddr) -> Self {
        Self::new(addr)
    }
}

/// `::ffff:a.b.c.d` is the IPv4 client `a.b.c.d` on a dual-stack socket.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
