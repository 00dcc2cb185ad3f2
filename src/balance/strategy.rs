//! The one trait every balancing strategy implements, and what it is given.

use http::{Extensions, HeaderMap, Method, Request, Uri};

use std::cell::Cell;

use crate::backend::{Backend, BackendId, FULL_SHARE, Snapshot};
use crate::clock::{self, Nanos};

/// A balancing strategy: given the candidates for one request, pick one.
///
/// A strategy has two halves. [`build`](Strategy::build) runs off the request
/// path whenever the backend set changes and precomputes whatever picking
/// needs (a schedule, a hash table, a tree of loads) into a
/// [`Table`](Strategy::Table). [`pick`](Strategy::pick) runs per request,
/// reads that table and the backends' atomics, and must not lock or allocate.
///
/// A pick returns the index of a backend in
/// [`Candidates::backends`] for which [`Candidates::is_available`] holds (it is
/// eligible and this request has not tried it yet), or `None` when there is
/// none. Strategies honour gradual traffic changes (slow start, ramp-down)
/// through [`Candidates::share`], or simply by preferring
/// [`Candidates::admits`], which draws against it.
///
/// ```
/// use tower_lb::balance::{Candidates, Strategy};
/// use tower_lb::Backend;
///
/// /// Always the first available backend: primary with ordered fallbacks.
/// #[derive(Debug)]
/// struct FirstAvailable;
///
/// impl Strategy for FirstAvailable {
///     type Table = ();
///     fn build(&self, _backends: &[Backend]) {}
///     fn pick(&self, _table: &(), candidates: &Candidates<'_>) -> Option<usize> {
///         (0..candidates.len()).find(|&i| candidates.is_available(i))
///     }
/// }
/// ```
pub trait Strategy: Send + Sync + 'static {
    /// What the strategy precomputes from a list of backends.
    type Table: Send + Sync + 'static;

    /// Precomputes the table for `backends` (the set's members in the order
    /// they joined). Runs on the thread that changed the set.
    fn build(&self, backends: &[Backend]) -> Self::Table;

    /// Picks an available backend, or `None`.
    fn pick(&self, table: &Self::Table, candidates: &Candidates<'_>) -> Option<usize>;
}

/// The requests `backend` may hold under a limit of `limit` per unit of
/// its weight: the bound a pick checks and a claim enforces.
#[inline]
pub(crate) fn slots(limit: u32, backend: &Backend) -> u64 {
    u64::from(limit) * u64::from(backend.weight())
}

/// The parts of a request a strategy may look at (hash keys).
#[derive(Clone, Copy, Debug)]
pub struct RequestRef<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI as the client sent it.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions (client address, tried backends, ...).
    pub extensions: &'a Extensions,
}

impl<'a, B> From<&'a Request<B>> for RequestRef<'a> {
    fn from(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }
}

/// The backends one request may go to, and the request itself.
///
/// Its tests read the snapshot's packed eligibility bits first and touch a
/// backend's own state only when its bit is clear (in slow start, ejected,
/// down, ...), so a pick among many backends costs no cache miss on the
/// backends it looks at.
#[derive(Debug)]
pub struct Candidates<'a> {
    snapshot: &'a Snapshot,
    backends: &'a [Backend],
    request: RequestRef<'a>,
    tried: &'a [BackendId],
    /// The time, read on first need (0: not yet): most picks need none.
    now: Cell<Nanos>,
    panic: bool,
    /// Requests in flight a backend may hold per unit of weight; 0: no
    /// limit.
    limit: u32,
    /// Only backends of this priority tier, when set (see `Tiered`).
    tier: Option<u8>,
}

impl<'a> Candidates<'a> {
    /// Candidates at time `now`, or at the time read on first need when
    /// `now` is `None`.
    pub(crate) fn new(
        snapshot: &'a Snapshot,
        request: RequestRef<'a>,
        tried: &'a [BackendId],
        now: Option<Nanos>,
    ) -> Self {
        Self {
            snapshot,
            backends: snapshot.backends(),
            request,
            tried,
            now: Cell::new(now.unwrap_or(0)),
            panic: false,
            limit: 0,
            tier: None,
        }
    }

    /// The same candidates restricted to priority tier `tier`.
    pub(crate) fn in_tier(&self, tier: u8) -> Candidates<'a> {
        Candidates {
            snapshot: self.snapshot,
            backends: self.backends,
            request: self.request,
            tried: self.tried,
            now: self.now.clone(),
            panic: self.panic,
            limit: self.limit,
            tier: Some(tier),
        }
    }

    /// Whether panic routing is on for this pick (every member routable).
    pub(crate) fn is_panicking(&self) -> bool {
        self.panic
    }

    /// The same candidates with a concurrency limit per unit of weight
    /// (0: none): a backend at its limit is not available.
    pub(crate) fn limited(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// The same candidates in panic mode: every member still in the set is
    /// available, healthy or not.
    pub(crate) fn panicking(mut self) -> Self {
        self.panic = true;
        self
    }

    /// All members of the snapshot, available or not.
    pub fn backends(&self) -> &'a [Backend] {
        self.backends
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// The request being balanced.
    pub fn request(&self) -> &RequestRef<'a> {
        &self.request
    }

    /// Backends this request already tried (retries go elsewhere).
    pub fn tried(&self) -> &'a [BackendId] {
        self.tried
    }

    pub(crate) fn now(&self) -> Nanos {
        let now = self.now.get();
        if now != 0 {
            return now;
        }
        let now = clock::now();
        self.now.set(now);
        now
    }

    /// Whether backend `index` may take this request: eligible (or, in panic
    /// mode, merely still in the set), not tried by it before, and below its
    /// concurrency limit when the balancer has one.
    #[inline]
    pub fn is_available(&self, index: usize) -> bool {
        let ok = self.snapshot.is_plain(index) || {
            let state = self.backends[index].state();
            if self.panic {
                state.routable()
            } else {
                state.eligible_at(|| self.now())
            }
        };
        ok && self.untried(index)
    }

    /// Not tried by this request, with room under the limit, and in the
    /// tier asked for.
    #[inline]
    fn untried(&self, index: usize) -> bool {
        (self.tried.is_empty() || !self.tried.contains(&self.snapshot.id(index)))
            && (self.limit == 0 || self.has_room(index))
            && self
                .tier
                .is_none_or(|tier| self.backends[index].priority() == tier)
    }

    /// Whether backend `index` holds fewer requests than its limit (the
    /// balancer's limit times its weight).
    #[inline]
    fn has_room(&self, index: usize) -> bool {
        let backend = &self.backends[index];
        u64::from(backend.state().in_flight()) < slots(self.limit, backend)
    }

    /// Backend `index`'s current share of its weight, in 1/65536 units
    /// (65536 = full): lower during slow start and ramp-down.
    #[inline]
    pub fn share(&self, index: usize) -> u32 {
        if self.snapshot.is_plain(index) {
            return FULL_SHARE;
        }
        self.backends[index].state().share_at(|| self.now())
    }

    /// [`is_available`](Self::is_available), and a random draw against the
    /// backend's [`share`](Self::share), so that a ramping backend takes its
    /// share of what a strategy would send it.
    #[inline]
    pub fn admits(&self, index: usize) -> bool {
        if self.snapshot.is_plain(index) {
            // Full share: no draw needed.
            return self.untried(index);
        }
        self.admits_with(index, fastrand::u32(..FULL_SHARE))
    }

    /// [`admits`](Self::admits) with a caller-chosen draw in `0..65536`:
    /// consistent hashing draws from the key, so the same keys stay on a
    /// ramping backend as its share grows.
    #[inline]
    pub fn admits_with(&self, index: usize, draw: u32) -> bool {
        if self.snapshot.is_plain(index) {
            return self.untried(index);
        }
        if !self.is_available(index) {
            return false;
        }
        let share = self.share(index);
        share >= FULL_SHARE || draw < share
    }

    /// The first backend from `start` onwards (wrapping) that
    /// [`admits`](Self::admits) the request, else the first that
    /// [`is_available`](Self::is_available): the linear fallback of
    /// strategies whose fast path met only unavailable backends.
    pub fn scan_from(&self, start: usize) -> Option<usize> {
        let n = self.len();
        let order = (0..n).map(|k| (start + k) % n);
        order
            .clone()
            .find(|&i| self.admits(i))
            .or_else(|| order.clone().find(|&i| self.is_available(i)))
    }
}
