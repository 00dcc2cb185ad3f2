//! The sticky cookie: its name, its key, and the opaque token per backend.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use http::HeaderMap;
use http::header::COOKIE;
use sha2::Sha256;

use crate::backend::Address;
use crate::error::ConfigError;

/// A backend's token: the first 128 bits of HMAC-SHA-256 over its address.
pub(crate) type Token = [u8; 16];

/// The cookie that pins a client to a backend: its name, the key its
/// values are authenticated with, and its attributes.
///
/// A value is `HMAC-SHA-256(key, address)` cut to 128 bits, in hex: it
/// never shows the backend's address, it cannot be made for a backend
/// without the key, and every proxy with the same key gives a backend the
/// same value (so a client may land on any of them). A value that matches
/// no current backend (forged, altered, or of a backend gone) is ignored.
///
/// ```
/// use tower_lb::balance::StickyCookie;
///
/// // A key shared by every proxy instance (read from a file, say).
/// let cookie = StickyCookie::new("srv")?.with_key(b"a secret of at least 16 bytes")?;
/// assert_eq!(cookie.name(), "srv");
/// // A key of its own, random, for a single instance.
/// let single = StickyCookie::new("srv")?;
/// assert!(StickyCookie::new("bad name").is_err());
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct StickyCookie {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    /// The keyed MAC, cloned per token (the key schedule is done once).
    mac: Hmac<Sha256>,
    secure: bool,
}

/// The fewest key bytes accepted: 128 bits.
const MIN_KEY: usize = 16;

impl StickyCookie {
    /// A cookie called `name` with a random key (a proxy that restarts, or
    /// a second instance, does not accept the cookies of this one; see
    /// [`with_key`](Self::with_key)).
    pub fn new(name: &str) -> Result<Self, ConfigError> {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            return Err(ConfigError::new(format!(
                "sticky cookie name `{name}` is not a cookie name (letters, digits, !#$%&'*+-.^_`|~)"
            )));
        }
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key)
            .map_err(|e| ConfigError::new(format!("no random key for the sticky cookie: {e}")))?;
        Self::build(name.to_owned(), &key, false)
    }

    /// The same cookie authenticated with `key` (at least 16 bytes): give
    /// every instance the same key and they accept each other's cookies.
    pub fn with_key(self, key: &[u8]) -> Result<Self, ConfigError> {
        if key.len() < MIN_KEY {
            return Err(ConfigError::new(format!(
                "the sticky cookie's key has {} bytes, fewer than {MIN_KEY}",
                key.len()
            )));
        }
        Self::build(self.inner.name.clone(), key, self.inner.secure)
    }

    /// The same cookie with the `Secure` attribute (browsers send it back
    /// over HTTPS only): for a proxy that terminates TLS.
    pub fn secure(self, on: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: self.inner.name.clone(),
                mac: self.inner.mac.clone(),
                secure: on,
            }),
        }
    }

    fn build(name: String, key: &[u8], secure: bool) -> Result<Self, ConfigError> {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .map_err(|e| ConfigError::new(format!("sticky cookie key: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner { name, mac, secure }),
        })
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The token of the backend at `address`.
    pub(crate) fn token(&self, address: &Address) -> Token {
        let mut mac = self.inner.mac.clone();
        mac.update(b"tower-lb sticky v1\0");
        mac.update(address.as_str().as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut token = [0u8; 16];
        token.copy_from_slice(&digest[..16]);
        token
    }

    /// The token the request's cookie carries, if it has one of the right
    /// shape (whether it names a backend is the table's question).
    pub(crate) fn read(&self, headers: &HeaderMap) -> Option<Token> {
        let name = self.inner.name.as_bytes();
        headers
            .get_all(COOKIE)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
            .find_map(|pair| {
                let pair = pair.trim_ascii();
                let value = pair.strip_prefix(name)?.strip_prefix(b"=")?;
                decode(value)
            })
    }

    /// The `Set-Cookie` value that pins a client to the backend of `token`.
    pub(crate) fn set_cookie(&self, token: &Token) -> String {
        let mut value = String::with_capacity(self.inner.name.len() + 80);
        value.push_str(&self.inner.name);
        value.push('=');
        for byte in token {
            value.push(char::from(HEX[usize::from(byte >> 4)]));
            value.push(char::from(HEX[usize::from(byte & 15)]));
        }
        value.push_str("; Path=/; HttpOnly; SameSite=Lax");
        if self.inner.secure {
            value.push_str("; Secure");
        }
        value
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn decode(text: &[u8]) -> Option<Token> {
    if text.len() != 32 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut token = [0u8; 16];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        token[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(token)
}

impl fmt::Debug for StickyCookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StickyCookie")
            .field("name", &self.inner.name)
            .field("secure", &self.inner.secure)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, cookie.parse().unwrap());
        headers
    }

    #[test]
    fn tokens_depend_on_key_and_address_only() {
        let a: Address = "http://10.0.0.1:80".parse().unwrap();
        let b: Address = "http://10.0.0.2:80".parse().unwrap();
        let one = StickyCookie::new("srv")
            .unwrap()
            .with_key(&[7; 16])
            .unwrap();
        let two = StickyCookie::new("srv")
            .unwrap()
            .with_key(&[7; 16])
            .unwrap();
        let other = StickyCookie::new("srv")
            .unwrap()
            .with_key(&[8; 16])
            .unwrap();
        assert_eq!(one.token(&a), two.token(&a), "instances agree");
        assert_ne!(one.token(&a), one.token(&b));
        assert_ne!(one.token(&a), other.token(&a), "the key matters");
        assert!(
            StickyCookie::new("srv")
                .unwrap()
                .with_key(&[1; 15])
                .is_err()
        );
    }

    #[test]
    fn the_cookie_round_trips_and_never_shows_the_address() {
        let cookie = StickyCookie::new("srv")
            .unwrap()
            .with_key(&[7; 16])
            .unwrap();
        let address: Address = "http://10.0.0.1:8080".parse().unwrap();
        let token = cookie.token(&address);
        let set = cookie.set_cookie(&token);
        assert!(set.ends_with("; Path=/; HttpOnly; SameSite=Lax"), "{set}");
        assert!(!set.contains("10.0.0.1") && !set.contains("8080"), "{set}");
        let value = set.split(';').next().unwrap();
        assert_eq!(
            cookie.read(&headers(&format!("a=1; {value}; b=2"))),
            Some(token)
        );
        assert_eq!(cookie.read(&headers("srv=zz; a=1")), None);
        assert_eq!(
            cookie.read(&headers("srvx=00000000000000000000000000000000")),
            None
        );
        assert!(cookie.secure(true).set_cookie(&token).ends_with("; Secure"));
    }
}
