//! One member of the backend set: address, weight and shared runtime state.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering::Relaxed};

use super::{Address, BackendId, BackendState};
use crate::error::ConfigError;

/// The largest weight a backend may have. Weights are relative, so this
/// only bounds the precomputed schedules of weighted strategies.
pub const MAX_WEIGHT: u32 = 10_000;

/// A backend: where it listens, how much traffic it takes relative to the
/// others, and its runtime state.
///
/// Cloning is one reference-count increment. A backend listed again in a
/// [`BackendSet`](super::BackendSet) (with a new weight, say) stays the same
/// backend: the set updates the member's settings in place, and its
/// [`BackendState`] carries on.
#[derive(Clone)]
pub struct Backend {
    node: Arc<Node>,
}

/// Everything about one backend behind one pointer, so that a strategy
/// touching a backend pays one cache miss, not two. The fields a pick reads
/// (weight, then the state's flags and load) come first, and start a cache
/// line of their own.
#[repr(C, align(64))]
struct Node {
    weight: AtomicU32,
    protocol: AtomicU8,
    /// The priority tier: 0 is primary (see `balance::Tiered`).
    priority: AtomicU8,
    state: BackendState,
    address: Address,
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

impl Protocol {
    fn from_u8(value: u8) -> Self {
        if value == 2 {
            Protocol::Http2
        } else {
            Protocol::Http1
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Protocol::Http1 => 1,
            Protocol::Http2 => 2,
        }
    }
}

impl Backend {
    /// A backend of weight 1 at `address`.
    pub fn new(address: Address) -> Self {
        Self::build(address, 1)
    }

    /// A backend at `address` with `weight` (1 to [`MAX_WEIGHT`]).
    ///
    /// # Errors
    ///
    /// A weight of 0 or above [`MAX_WEIGHT`]. (To take a backend out of
    /// rotation, remove it from the set: it drains.)
    pub fn weighted(address: Address, weight: u32) -> Result<Self, ConfigError> {
        check_weight(weight, &address)?;
        Ok(Self::build(address, weight))
    }

    fn build(address: Address, weight: u32) -> Self {
        Self {
            node: Arc::new(Node {
                weight: AtomicU32::new(weight),
                protocol: AtomicU8::new(Protocol::Http1.to_u8()),
                priority: AtomicU8::new(0),
                state: BackendState::new(),
                address,
            }),
        }
    }

    /// This backend spoken to in `protocol`.
    ///
    /// A builder: it never changes a value other handles see. On the only
    /// handle of a backend it sets the protocol in place; on a shared one
    /// (a clone of a set's member, say) it returns a new backend, with its
    /// own fresh state, and the member is left as it was. To change a
    /// member's settings, list it again in its set
    /// ([`BackendSet::insert`](super::BackendSet::insert)): the member takes
    /// them and keeps its state.
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        match Arc::get_mut(&mut self.node) {
            Some(node) => *node.protocol.get_mut() = protocol.to_u8(),
            None => {
                let fresh = self.fresh();
                fresh.node.protocol.store(protocol.to_u8(), Relaxed);
                self = fresh;
            }
        }
        self
    }

    /// This backend in priority tier `priority` (0, the default, is
    /// primary; `backup` in a `--backend` option is 1): with
    /// [`Tiered`](crate::balance::Tiered), traffic goes to the lowest tier
    /// and spills to the next as the lower one loses healthy members. A
    /// builder, as [`with_protocol`](Self::with_protocol).
    pub fn with_priority(mut self, priority: u8) -> Self {
        match Arc::get_mut(&mut self.node) {
            Some(node) => *node.priority.get_mut() = priority,
            None => {
                let fresh = self.fresh();
                fresh.node.priority.store(priority, Relaxed);
                self = fresh;
            }
        }
        self
    }

    /// The priority tier (0: primary).
    #[inline]
    pub fn priority(&self) -> u8 {
        self.node.priority.load(Relaxed)
    }

    /// A new backend with this one's settings and a fresh state.
    fn fresh(&self) -> Self {
        let fresh = Self::build(self.address().clone(), self.weight());
        fresh.node.protocol.store(self.protocol().to_u8(), Relaxed);
        fresh.node.priority.store(self.priority(), Relaxed);
        fresh
    }

    /// Takes `other`'s settings (weight, protocol, priority): what a member
    /// does when it is listed again. Its state carries on.
    pub(crate) fn reconfigure(&self, other: &Backend) {
        self.node.weight.store(other.weight(), Relaxed);
        self.node.protocol.store(other.protocol().to_u8(), Relaxed);
        self.node.priority.store(other.priority(), Relaxed);
    }

    /// Sets the weight of this member (checked by the caller): what the
    /// set's [`set_weight`](super::BackendSet::set_weight) does.
    pub(crate) fn store_weight(&self, weight: u32) {
        self.node.weight.store(weight, Relaxed);
    }

    /// Whether `other` has the same settings (weight, protocol, priority).
    pub(crate) fn same_settings(&self, other: &Backend) -> bool {
        self.weight() == other.weight()
            && self.protocol() == other.protocol()
            && self.priority() == other.priority()
    }

    /// Where the backend listens.
    pub fn address(&self) -> &Address {
        &self.node.address
    }

    /// The configured weight.
    #[inline]
    pub fn weight(&self) -> u32 {
        self.node.weight.load(Relaxed)
    }

    /// The HTTP version spoken to it.
    pub fn protocol(&self) -> Protocol {
        Protocol::from_u8(self.node.protocol.load(Relaxed))
    }

    /// The runtime state (in-flight count, latency, health).
    #[inline]
    pub fn state(&self) -> &BackendState {
        &self.node.state
    }

    /// The state's identifier, stable for as long as the backend stays in
    /// the set.
    #[inline]
    pub fn id(&self) -> BackendId {
        self.node.state.id()
    }

    /// Whether two values are the same backend (one runtime state).
    pub fn same_state(&self, other: &Backend) -> bool {
        Arc::ptr_eq(&self.node, &other.node)
    }
}

pub(super) fn check_weight(weight: u32, address: &Address) -> Result<(), ConfigError> {
    if weight == 0 || weight > MAX_WEIGHT {
        return Err(ConfigError::new(format!(
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
/// let backup: Backend = "http://127.0.0.1:9002,backup".parse()?;
/// assert_eq!(backup.priority(), 1);
/// assert_eq!("http://127.0.0.1:9003,priority=2".parse::<Backend>()?.priority(), 2);
/// assert_eq!(backend.address().as_str(), "http://127.0.0.1:9001");
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
impl FromStr for Backend {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        let mut parts = text.split(',');
        let address: Address = parts.next().unwrap_or_default().trim().parse()?;
        let mut weight = 1;
        let mut protocol = Protocol::Http1;
        let mut priority = 0;
        for option in parts {
            let (key, value) = option.split_once('=').unwrap_or((option, ""));
            match key.trim() {
                "priority" => {
                    priority = value.trim().parse().map_err(|_| {
                        ConfigError::new(format!(
                            "backend `{text}`: priority must be 0 to 255, got `{}`",
                            value.trim()
                        ))
                    })?;
                }
                "backup" if value.is_empty() => priority = 1,
                "weight" => {
                    weight = value.trim().parse().map_err(|_| {
                        ConfigError::new(format!(
                            "backend `{text}`: weight must be a whole number, got `{}`",
                            value.trim()
                        ))
                    })?;
                }
                "protocol" => {
                    protocol = value.trim().parse()?;
                }
                other => {
                    return Err(ConfigError::new(format!(
                        "backend `{text}`: unknown option `{other}` (known: weight, protocol, priority, backup)"
                    )));
                }
            }
        }
        Ok(Backend::weighted(address, weight)?
            .with_protocol(protocol)
            .with_priority(priority))
    }
}

impl FromStr for Protocol {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        match text {
            "h1" | "http1" | "http/1.1" => Ok(Protocol::Http1),
            "h2" | "h2c" | "http2" => Ok(Protocol::Http2),
            _ => Err(ConfigError::new(format!(
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
    fn reconfiguring_keeps_state() {
        let b = Backend::new("http://127.0.0.1:1".parse().unwrap());
        b.state().begin();
        b.reconfigure(&"http://127.0.0.1:1,weight=7,protocol=h2".parse().unwrap());
        assert_eq!((b.weight(), b.protocol()), (7, Protocol::Http2));
        assert_eq!(b.state().in_flight(), 1);
    }

    #[test]
    fn building_never_changes_a_shared_backend() {
        let member = Backend::new("http://127.0.0.1:1".parse().unwrap());
        let built = member.clone().with_protocol(Protocol::Http2);
        assert_eq!(
            member.protocol(),
            Protocol::Http1,
            "the member is untouched"
        );
        assert_eq!(built.protocol(), Protocol::Http2);
        assert!(!built.same_state(&member), "a new backend");
        let alone = Backend::new("http://127.0.0.1:2".parse().unwrap());
        let id = alone.id();
        let alone = alone.with_protocol(Protocol::Http2);
        assert_eq!(
            (alone.id(), alone.protocol()),
            (id, Protocol::Http2),
            "set in place"
        );
    }
}
