//! Where a backend listens.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};

use crate::error::ConfigError;

/// A backend's address: a scheme (`http` or `https`) and an authority
/// (`host:port`), such as `http://10.0.0.5:8080` or `https://api.internal`.
///
/// An `https://` backend is spoken to over verified TLS (see
/// [`BackendTls`](crate::forward::BackendTls)). Without the `tls` feature
/// `https://` is refused with a configuration error: accepting it would
/// send the request in cleartext to a port that expects TLS, a silent
/// downgrade.
///
/// Addresses compare and hash by their canonical text (scheme and host are
/// case-insensitive, the default port is made explicit), so
/// `http://Example:80` and `http://example` are the same backend. That text is
/// also what consistent hashing hashes, which is why two proxies that list the
/// same backends in any order agree on where each key goes.
#[derive(Clone)]
pub struct Address {
    scheme: Scheme,
    authority: Authority,
    /// The port, the scheme's default made explicit: computed once here,
    /// so that nothing else needs to know that `http` means 80.
    port: u16,
    /// The authority as a `Host` header value, for requests of the proxy's
    /// own (health probes).
    host_header: HeaderValue,
    canonical: Arc<str>,
}

impl Address {
    /// The scheme (`http` or `https`).
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// `host:port` as given.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The host, as given (an IPv6 host keeps its brackets, as in `http::uri::Authority::host`).
    pub fn host(&self) -> &str {
        self.authority.host()
    }

    /// The port: the one given, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The authority as a `Host` header value, for requests the proxy makes
    /// itself (a request it forwards keeps the client's `Host`).
    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    /// The canonical text, `scheme://host:port` in lower case.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }
}

impl FromStr for Address {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        let invalid = |why: &str| ConfigError::new(format!("backend URL `{text}`: {why}"));
        let uri: Uri = text
            .parse()
            .map_err(|_| invalid("not a URL (expected e.g. http://127.0.0.1:8080)"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| invalid("missing scheme (write http://...)"))?;
        let default_port = match scheme.as_str() {
            "http" => 80,
            #[cfg(feature = "tls")]
            "https" => 443,
            // Refused, never downgraded: without TLS an `https://` backend
            // would get the request (credentials and all) in cleartext.
            #[cfg(not(feature = "tls"))]
            "https" => {
                return Err(invalid(
                    "https backends need tower-lb's `tls` feature (built without it); \
                     refusing to send cleartext to an https URL",
                ));
            }
            #[cfg(feature = "tls")]
            _ => return Err(invalid("scheme must be http or https")),
            #[cfg(not(feature = "tls"))]
            _ => return Err(invalid("scheme must be http")),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| invalid("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("credentials in the URL are not supported"));
        }
        if authority.host().is_empty() {
            return Err(invalid("missing host"));
        }
        if let Some(path) = uri.path_and_query()
            && (path.as_str() != "/" || path.query().is_some())
        {
            return Err(invalid("a backend URL has no path or query"));
        }
        let port = authority.port_u16().unwrap_or(default_port);
        let host_header = HeaderValue::from_str(authority.as_str())
            .map_err(|_| invalid("the authority is not a valid Host header"))?;
        let canonical = format!(
            "{}://{}:{}",
            scheme.as_str(),
            authority.host().to_ascii_lowercase(),
            port
        );
        Ok(Self {
            scheme,
            authority,
            port,
            host_header,
            canonical: Arc::from(canonical),
        })
    }
}

impl PartialEq for Address {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}

impl Eq for Address {}

impl Hash for Address {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.canonical.hash(state);
    }
}

impl PartialOrd for Address {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Address {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.canonical.cmp(&other.canonical)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

/// The canonical text, shared: what an [`Error`](crate::Error) keeps of the backend it
/// concerns (one reference count, no copy).
impl From<Address> for Arc<str> {
    fn from(address: Address) -> Self {
        address.canonical
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_ignores_case_and_default_port() {
        let a: Address = "http://Example.com".parse().unwrap();
        let b: Address = "http://example.com:80/".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "http://example.com:80");
        assert_eq!(a.to_string(), "http://Example.com");
        assert_eq!((a.port(), b.port()), (80, 80));
        assert_eq!(a.host_header(), "Example.com");
        let c: Address = "http://[::1]:9001".parse().unwrap();
        assert_eq!((c.host(), c.port()), ("[::1]", 9001));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn https_is_its_own_backend_on_port_443() {
        let a: Address = "https://API.internal".parse().unwrap();
        assert_eq!(a.as_str(), "https://api.internal:443");
        let cleartext: Address = "http://api.internal:443".parse().unwrap();
        assert_ne!(
            a, cleartext,
            "same authority, another scheme: another backend"
        );
        assert_eq!(a.scheme(), &Scheme::HTTPS);
    }

    #[test]
    fn bad_addresses_say_why() {
        for (text, why) in [
            ("127.0.0.1:80", "missing scheme"),
            ("ftp://x", "scheme must be http"),
            #[cfg(not(feature = "tls"))]
            ("https://x", "need tower-lb's `tls` feature"),
            #[cfg(feature = "tls")]
            ("https://u:p@x", "credentials"),
            ("http://x/path", "no path"),
            ("http://u:p@x", "credentials"),
            ("not a url", "not a URL"),
        ] {
            let error = text.parse::<Address>().unwrap_err();
            assert!(error.to_string().contains(why), "{text}: {error}");
            assert!(error.to_string().contains(text), "names the URL: {error}");
        }
    }
}
