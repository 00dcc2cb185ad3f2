//! The strategy wrapper: a request with a valid cookie goes to its backend.

use rustc_hash::FxHashMap;

use super::cookie::{StickyCookie, Token};
use crate::backend::Backend;
use crate::balance::{Candidates, Strategy};

/// Sends a request carrying a valid sticky cookie to the backend it names,
/// while that backend is available to it (in the set, eligible, not
/// drained, under its limit, not already tried); any other request, and one
/// whose backend is not available, goes where `inner` picks.
/// [`StickyCookieLayer`](super::StickyCookieLayer) sets the cookie.
///
/// The table maps each member's token to its position, built when the set
/// changes; a pick reads one header, decodes 32 hex digits and looks the
/// token up, with no allocation.
///
/// ```
/// use tower_lb::balance::{LeastConnections, Sticky, StickyCookie};
/// use tower_lb::{BackendSet, LoadBalanceLayer};
///
/// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002".parse()?]);
/// let cookie = StickyCookie::new("srv")?;
/// let layer = LoadBalanceLayer::new(&set, Sticky::new(cookie, LeastConnections::new()));
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Sticky<S> {
    cookie: Option<StickyCookie>,
    inner: S,
}

impl<S> Sticky<S> {
    /// Stickiness by `cookie` over `inner`.
    pub fn new(cookie: StickyCookie, inner: S) -> Self {
        Self {
            cookie: Some(cookie),
            inner,
        }
    }

    /// The same type with stickiness off (`inner` alone, plus one branch
    /// per pick): for a program that decides at run time, so that its
    /// stack has one type either way.
    pub fn off(inner: S) -> Self {
        Self {
            cookie: None,
            inner,
        }
    }

    /// The cookie, when stickiness is on.
    pub fn cookie(&self) -> Option<&StickyCookie> {
        self.cookie.as_ref()
    }

    /// The strategy for requests without a usable cookie.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

/// [`Sticky`]'s table: the inner strategy's, and the members' tokens.
#[derive(Debug)]
pub struct StickyTable<T> {
    inner: T,
    tokens: FxHashMap<Token, usize>,
}

impl<S: Strategy> Strategy for Sticky<S> {
    type Table = StickyTable<S::Table>;

    fn build(&self, backends: &[Backend]) -> Self::Table {
        StickyTable {
            inner: self.inner.build(backends),
            tokens: match &self.cookie {
                Some(cookie) => backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (cookie.token(b.address()), i))
                    .collect(),
                None => FxHashMap::default(),
            },
        }
    }

    #[inline]
    fn pick(&self, table: &Self::Table, candidates: &Candidates<'_>) -> Option<usize> {
        // The token is the client's input, but it only looks up a map built
        // from the members (no insertion), so a chosen token can at most
        // walk the longest of its few probe chains.
        let pinned = self
            .cookie
            .as_ref()
            .and_then(|cookie| cookie.read(candidates.request().headers))
            .and_then(|token| table.tokens.get(&token).copied())
            .filter(|&index| candidates.is_available(index));
        pinned.or_else(|| self.inner.pick(&table.inner, candidates))
    }
}

#[cfg(test)]
mod tests {
    use http::Request;
    use http::header::COOKIE;

    use super::*;
    use crate::balance::RoundRobin;
    use crate::balance::test_support::Fixture;

    #[test]
    fn a_valid_cookie_pins_an_unknown_one_is_balanced() {
        let cookie = StickyCookie::new("srv")
            .unwrap()
            .with_key(&[3; 16])
            .unwrap();
        let fixture = Fixture::new(Sticky::new(cookie.clone(), RoundRobin::new()), &[1, 1, 1]);
        let token = cookie.token(fixture.backends[2].address());
        let value = cookie.set_cookie(&token);
        let pinned = Request::builder()
            .header(COOKIE, value.split(';').next().unwrap())
            .body(())
            .unwrap();
        for _ in 0..5 {
            assert_eq!(fixture.pick_request(&pinned, &[]), Some(2));
        }
        // Drained: no new requests, sticky ones included.
        fixture.backends[2].state().set_draining(true);
        let moved = fixture.pick_request(&pinned, &[]).unwrap();
        assert_ne!(moved, 2);
        fixture.backends[2].state().set_draining(false);
        // Retries go elsewhere.
        assert_ne!(fixture.pick_request(&pinned, &[2]), Some(2));
        let forged = Request::builder()
            .header(COOKIE, "srv=0123456789abcdef0123456789abcdef")
            .body(())
            .unwrap();
        let picks: Vec<usize> = (0..3)
            .map(|_| fixture.pick_request(&forged, &[]).unwrap())
            .collect();
        let mut sorted = picks.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2], "balanced as if it had none: {picks:?}");
    }
}
