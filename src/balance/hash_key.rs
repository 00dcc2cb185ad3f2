//! What consistent hashing hashes: the client IP, a header, a cookie or the path.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use http::HeaderName;
use http::header::{COOKIE, HeaderValue};
use ipnet::IpNet;
use xxhash_rust::xxh3::xxh3_64;

use super::RequestRef;
use crate::client_addr::ClientAddr;
use crate::client_addr::canonical;
use crate::error::ConfigError;

/// The part of a request that decides its backend under consistent hashing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HashKey {
    /// The client's IP: the connection's peer ([`ClientAddr`]), or, when the
    /// peer is a trusted proxy, the address it reports in
    /// `X-Forwarded-For`.
    ClientIp,
    /// The value of a request header (all values, in order).
    Header(HeaderName),
    /// The value of a cookie.
    Cookie(Arc<str>),
    /// The URI path (without the query).
    Path,
}

impl HashKey {
    /// The key's hash for `request`, or `None` when the request lacks it.
    /// The hash is XXH3 of the key's bytes: the same in every process.
    pub(crate) fn hash(&self, request: &RequestRef<'_>, trusted: &[IpNet]) -> Option<u64> {
        match self {
            HashKey::ClientIp => client_ip(request, trusted).map(hash_ip),
            HashKey::Header(name) => {
                let mut values = request.headers.get_all(name).iter();
                let first = values.next()?;
                match values.next() {
                    None => Some(xxh3_64(first.as_bytes())),
                    Some(second) => {
                        let mut joined = Vec::from(first.as_bytes());
                        for value in std::iter::once(second).chain(values) {
                            joined.push(b',');
                            joined.extend_from_slice(value.as_bytes());
                        }
                        Some(xxh3_64(&joined))
                    }
                }
            }
            HashKey::Cookie(name) => request
                .headers
                .get_all(COOKIE)
                .iter()
                .find_map(|header| cookie(header, name))
                .map(xxh3_64),
            HashKey::Path => Some(xxh3_64(request.uri.path().as_bytes())),
        }
    }
}

fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => xxh3_64(&v4.octets()),
        IpAddr::V6(v6) => xxh3_64(&v6.octets()),
    }
}

/// The client IP: the peer, unless the peer is a trusted proxy, in which case
/// `X-Forwarded-For` is read from the right, skipping trusted proxies, and
/// the first untrusted address is the client. With no trusted proxies the
/// header is ignored (anyone can write it).
pub(crate) fn client_ip(request: &RequestRef<'_>, trusted: &[IpNet]) -> Option<IpAddr> {
    let mut client = request.extensions.get::<ClientAddr>()?.ip();
    if trusted.is_empty() {
        return Some(client);
    }
    for header in request.headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = header.to_str() else {
            return Some(client);
        };
        for hop in text.rsplit(',') {
            if !trusted.iter().any(|net| net.contains(&client)) {
                return Some(client);
            }
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => client = canonical(ip),
                Err(_) => return Some(client),
            }
        }
    }
    Some(client)
}

fn cookie<'h>(header: &'h HeaderValue, name: &str) -> Option<&'h [u8]> {
    header
        .as_bytes()
        .split(|&b| b == b';')
        .map(|pair| pair.trim_ascii())
        .find_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
}

/// Parses `ip`, `header:NAME`, `cookie:NAME` or `path`.
impl FromStr for HashKey {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        let (kind, name) = text.split_once(':').unwrap_or((text, ""));
        let need_name =
            |what: &str| ConfigError::new(format!("hash key `{text}`: write {what}:NAME"));
        match kind {
            "ip" | "client-ip" if name.is_empty() => Ok(HashKey::ClientIp),
            "path" if name.is_empty() => Ok(HashKey::Path),
            "header" if !name.is_empty() => HeaderName::from_str(name)
                .map(HashKey::Header)
                .map_err(|_| {
                    ConfigError::new(format!("hash key `{text}`: `{name}` is not a header name"))
                }),
            "header" => Err(need_name("header")),
            "cookie" if !name.is_empty() => Ok(HashKey::Cookie(Arc::from(name))),
            "cookie" => Err(need_name("cookie")),
            _ => Err(ConfigError::new(format!(
                "hash key `{text}`: expected ip, path, header:NAME or cookie:NAME"
            ))),
        }
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::ClientIp => f.write_str("ip"),
            HashKey::Header(name) => write!(f, "header:{name}"),
            HashKey::Cookie(name) => write!(f, "cookie:{name}"),
            HashKey::Path => f.write_str("path"),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;

    fn request(peer: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut request = Request::builder().uri("/a/b?q=1");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(()).unwrap();
        request
            .extensions_mut()
            .insert(ClientAddr::new(peer.parse().unwrap()));
        request
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_trusted() {
        let r = request("203.0.113.9:1000", &[("x-forwarded-for", "198.51.100.1")]);
        let ip = client_ip(&RequestRef::from(&r), &[]).unwrap();
        assert_eq!(ip.to_string(), "203.0.113.9");
        let ip = client_ip(&RequestRef::from(&r), &nets(&["10.0.0.0/8"])).unwrap();
        assert_eq!(ip.to_string(), "203.0.113.9", "peer not trusted");
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right_past_trusted_hops() {
        let r = request(
            "10.0.0.1:1000",
            &[
                ("x-forwarded-for", "1.1.1.1, 198.51.100.1"),
                ("x-forwarded-for", "10.0.0.7"),
            ],
        );
        let ip = client_ip(&RequestRef::from(&r), &nets(&["10.0.0.0/8"])).unwrap();
        assert_eq!(
            ip.to_string(),
            "198.51.100.1",
            "spoofed 1.1.1.1 is not believed"
        );
    }

    #[test]
    fn keys_read_headers_cookies_and_paths() {
        let r = request(
            "127.0.0.1:1",
            &[("x-user", "alice"), ("cookie", "a=1; session=xyz; b=2")],
        );
        let r = RequestRef::from(&r);
        let header: HashKey = "header:x-user".parse().unwrap();
        assert_eq!(header.hash(&r, &[]), Some(xxh3_64(b"alice")));
        let cookie: HashKey = "cookie:session".parse().unwrap();
        assert_eq!(cookie.hash(&r, &[]), Some(xxh3_64(b"xyz")));
        assert_eq!(HashKey::Path.hash(&r, &[]), Some(xxh3_64(b"/a/b")));
        let missing: HashKey = "cookie:none".parse().unwrap();
        assert_eq!(missing.hash(&r, &[]), None);
    }

    #[test]
    fn bad_keys_name_the_problem() {
        for (text, why) in [
            ("header:", "header:NAME"),
            ("cookie", "cookie:NAME"),
            ("header:bad name", "not a header name"),
            ("body", "expected ip"),
        ] {
            let error = text.parse::<HashKey>().unwrap_err();
            assert!(error.to_string().contains(why), "{text}: {error}");
        }
    }
}
