//! One member of the backend set: address, weight and shared runtime state.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::{Address, BackendId, BackendState};
use crate::Error;

/// The largest weight a backend may have. Weights are relative, so this
/// only bounds the precomputed schedules of weighted strategies.
pub const MAX_WEIGHT: u32 = 10_000;

/// A backend: where it listens, how much traffic it takes relative to the
/// others, and its runtime state.
///
/// Cloning is one reference-count increment. Two `Backend` values built for
/// the same address by a [`BackendSet`](super::BackendSet) share their
/// [`BackendState`], whatever their weights.
#[derive(Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

struct Inner {
    address: Address,
    weight: u32,
    protocol: Protocol,
    state: Arc<BackendState>,
}

/// The HTTP version spoken to a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive (the default: every backend speaks it).
    #[default]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (h2c): many requests on
    /// one connection, for backends that serve it (gRPC, h2 app servers).
    Http2,
}

impl Backend {
    /// A backend of weight 1 at `address`.
    pub fn new(address: Address) -> Self {
        Self::build(address, 1, Arc::new(BackendState::new()))
    }

    /// A backend at `address` with `weight` (1 to [`MAX_WEIGHT`]).
    ///
    /// # Errors
    ///
    /// A weight of 0 or above [`MAX_WEIGHT`]. (To take a backend out of
    /// rotation, remove it from the set: it drains.)
    pub fn weighted(address: Address, weight: u32) -> Result<Self, Error> {
        check_weight(weight, &address)?;
        Ok(Self::build(address, weight, Arc::new(BackendState::new())))
    }

    fn build(address: Address, weight: u32, state: Arc<BackendState>) -> Self {
        Self {
            inner: Arc::new(Inner {
                address,
                weight,
                protocol: Protocol::Http1,
                state,
            }),
        }
    }

    /// The same backend spoken to in `protocol`.
    pub fn with_protocol(self, protocol: Protocol) -> Self {
        Self {
            inner: Arc::new(Inner {
                address: self.inner.address.clone(),
                weight: self.inner.weight,
                protocol,
                state: Arc::clone(&self.inner.state),
            }),
        }
    }

    /// This backend's address and state with `other`'s settings (weight,
    /// protocol): what a member becomes when it is listed again.
    pub(crate) fn reconfigured(&self, other: &Backend) -> Self {
        Self::build(
            self.address().clone(),
            other.weight(),
            Arc::clone(&self.inner.state),
        )
        .with_protocol(other.protocol())
    }

    /// Whether `other` has the same settings (weight, protocol).
    pub(crate) fn same_settings(&self, other: &Backend) -> bool {
        self.weight() == other.weight() && self.protocol() == other.protocol()
    }

    /// Where the backend listens.
    pub fn address(&self) -> &Address {
        &self.inner.address
    }

    /// The configured weight.
    pub fn weight(&self) -> u32 {
        self.inner.weight
    }

    /// The HTTP version spoken to it.
    pub fn protocol(&self) -> Protocol {
        self.inner.protocol
    }

    /// The runtime state (in-flight count, latency, health).
    pub fn state(&self) -> &BackendState {
        &self.inner.state
    }

    /// The state's identifier, stable for as long as the backend stays in
    /// the set.
    pub fn id(&self) -> BackendId {
        self.inner.state.id()
    }

    /// Whether two values share one runtime state.
    pub fn same_state(&self, other: &Backend) -> bool {
        Arc::ptr_eq(&self.inner.state, &other.inner.state)
    }
}

fn check_weight(weight: u32, address: &Address) -> Result<(), Error> {
    if weight == 0 || weight > MAX_WEIGHT {
        return Err(Error::config(format!(
            "backend `{address}`: weight must be 1 to {MAX_WEIGHT}, got {weight}"
        )));
    }
    Ok(())
}

/// Parses `URL[,weight=N][,protocol=h1|h2]`, the form the example proxy's
/// `--backend` flag uses.
///
/// ```
/// # use tower_lb::Backend;
/// let backend: Backend = "http://127.0.0.1:9001,weight=5".parse()?;
/// assert_eq!(backend.weight(), 5);
/// assert_eq!(backend.address().as_str(), "http://127.0.0.1:9001");
/// # Ok::<(), tower_lb::Error>(())
/// ```
impl FromStr for Backend {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let mut parts = text.split(',');
        let address: Address = parts.next().unwrap_or_default().trim().parse()?;
        let mut weight = 1;
        let mut protocol = Protocol::Http1;
        for option in parts {
            let (key, value) = option.split_once('=').unwrap_or((option, ""));
            match key.trim() {
                "weight" => {
                    weight = value.trim().parse().map_err(|_| {
                        Error::config(format!(
                            "backend `{text}`: weight must be a whole number, got `{}`",
                            value.trim()
                        ))
                    })?;
                }
                "protocol" => {
                    protocol = value.trim().parse()?;
                }
                other => {
                    return Err(Error::config(format!(
                        "backend `{text}`: unknown option `{other}` (known: weight, protocol)"
                    )));
                }
            }
        }
        Ok(Backend::weighted(address, weight)?.with_protocol(protocol))
    }
}

impl FromStr for Protocol {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "h1" | "http1" | "http/1.1" => Ok(Protocol::Http1),
            "h2" | "h2c" | "http2" => Ok(Protocol::Http2),
            _ => Err(Error::config(format!(
                "protocol `{text}`: expected h1 or h2"
            ))),
        }
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("address", &format_args!("{}", self.address()))
            .field("weight", &self.weight())
            .field("protocol", &self.protocol())
            .field("state", self.state())
            .finish()
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.address(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_weight_and_rejects_bad_options() {
        let b: Backend = "http://127.0.0.1:1,weight=3".parse().unwrap();
        assert_eq!(b.weight(), 3);
        let zero = "http://127.0.0.1:1,weight=0"
            .parse::<Backend>()
            .unwrap_err();
        assert!(zero.to_string().contains("weight must be 1"), "{zero}");
        let junk = "http://127.0.0.1:1,weight=x"
            .parse::<Backend>()
            .unwrap_err();
        assert!(junk.to_string().contains("whole number"), "{junk}");
        let h2: Backend = "http://127.0.0.1:1,protocol=h2".parse().unwrap();
        assert_eq!(h2.protocol(), Protocol::Http2);
        let bad = "http://127.0.0.1:1,protocol=h3"
            .parse::<Backend>()
            .unwrap_err();
        assert!(bad.to_string().contains("expected h1 or h2"), "{bad}");
        let unknown = "http://127.0.0.1:1,max=3".parse::<Backend>().unwrap_err();
        assert!(
            unknown.to_string().contains("unknown option `max`"),
            "{unknown}"
        );
    }

    #[test]
    fn reweighting_keeps_state() {
        let b = Backend::new("http://127.0.0.1:1".parse().unwrap());
        b.state().begin();
        let heavier = b.reconfigured(&"http://127.0.0.1:1,weight=7".parse().unwrap());
        assert!(heavier.same_state(&b));
        assert_eq!(heavier.state().in_flight(), 1);
    }
}
