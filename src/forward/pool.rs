//! Pooled HTTP/1.1 connections to backends, driven in the request's task.
//!
//! hyper's client spends a task per backend connection and a channel hop
//! per request and per response body; a load balancer that knows its
//! backends needs neither. Here a connection is a [`Conn`] (our codec on
//! `httparse`, with its reused buffers): the request's own future writes
//! the head, streams the body and reads the response head; the response
//! body reads straight from the connection, and hands it back to the pool
//! when it ends cleanly.
//!
//! An `https://` backend's connections are TLS streams (see `stream.rs`)
//! and are pooled the same way, apart from the cleartext ones of the same
//! authority: a checkout never hands a TLS backend a cleartext connection.
//!
//! Per backend the idle connections sit in a lock-free queue (`idle.rs`:
//! a small ring allocated with the host, then crossbeam's `SegQueue`, which
//! grows in blocks as needed, so a thousand backends cost little until
//! they are used), found through a map that is read
//! without a lock and copied on the rare insert of a new backend. A
//! forwarder's pool serves whichever threads use the forwarder; the
//! example proxy builds one forwarder per worker thread, so there a
//! backend connection never crosses threads.
//!
//! A request that a reused connection could not carry (the backend had
//! closed it while idle) goes out again on the next connection when that
//! is safe: nothing of it was written, or it is idempotent and neither its
//! body nor any answer had started.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::h1::{self, Answer, BodyFraming, Conn, RequestHead};
use super::idle::IdleQueue;
use super::stream::{self, Connect, Stream};
use crate::backend::{BackendId, departures};
use crate::clock::{self, Nanos};
use crate::extensions::ReturnHead;
use crate::{Backend, BoxError, ClientAddr, Error, ErrorKind, Target};
use arc_swap::ArcSwap;
use http::request::Parts;
use http::uri::Authority;
use http::{HeaderValue, Method};
use rustc_hash::FxHashMap;

/// The pool of one forwarder.
pub(crate) struct Pool {
    /// Cleartext backends' pools, by authority.
    hosts: ArcSwap<FxHashMap<Authority, Arc<Host>>>,
    /// TLS backends' pools, by authority.
    tls_hosts: ArcSwap<FxHashMap<Authority, Arc<Host>>>,
    /// The same pools by the member they serve, for requests that carry a
    /// [`Target`] (all of them behind a balancer): the lookup hashes a
    /// `u64` and compares the authority's bytes, where the maps above hash
    /// and compare it ignoring case (about 600 instructions a request).
    /// Weak, so that the maps above stay the hosts' only owners (see
    /// `forgettable`).
    by_member: ArcSwap<FxHashMap<BackendId, Weak<Host>>>,
    connect: Connect,
    connect_timeout: Duration,
    /// How long an exchange may take, from its start to the response head
    /// (a new connection's connect and handshake included).
    timeout: Option<Duration>,
    idle_timeout: Nanos,
    max_idle: usize,
    max_head: usize,
    /// The departures count (see `backend::departures`) when the maps were
    /// last swept of departed backends' hosts.
    swept: AtomicU64,
}

/// One backend's idle connections.
pub(crate) struct Host {
    authority: Authority,
    tls: bool,
    idle: IdleQueue<Idle>,
    /// Idle connections queued (the queue itself keeps no exact count).
    idle_count: AtomicUsize,
    max_idle: usize,
    idle_timeout: Nanos,
    /// The backend of the first request (from its [`Target`]), so that
    /// the pool can forget hosts that left the set (see `kept`).
    backend: Option<Backend>,
}

impl Host {
    /// Whether the backend has left its set: its connections are not kept.
    fn is_removed(&self) -> bool {
        self.backend
            .as_ref()
            .is_some_and(|b| b.state().is_removed())
    }
}

struct Idle {
    conn: Box<Conn<Stream>>,
    since: Nanos,
}

/// Where a connection lent to one exchange goes back to when the response
/// body ends.
pub(crate) struct Lease {
    host: Arc<Host>,
    /// When the exchange began; stands for the start of the idle time, so
    /// returning the connection reads no clock (a long exchange only makes
    /// the connection look idle longer than it was).
    since: Nanos,
}

impl Drop for Lease {
    /// The end of an exchange with a backend that has left its set may be
    /// the last thing its host waited for: counted as a departure, so the
    /// next request sweeps the host out of the pool.
    fn drop(&mut self) {
        if self.host.is_removed() {
            departures::note();
        }
    }
}

impl Lease {
    /// Returns `conn` to the pool (or closes it when the pool is full).
    pub(crate) fn release(self, conn: Box<Conn<Stream>>) {
        // A backend that left the set gets no new requests: keeping its
        // connection would only hold a socket open (it closes here).
        if self.host.is_removed() {
            return;
        }
        if self.host.idle_count.fetch_add(1, Relaxed) >= self.host.max_idle {
            self.host.idle_count.fetch_sub(1, Relaxed);
            return;
        }
        self.host.idle.push(Idle {
            conn,
            since: self.since,
        });
    }
}

impl Pool {
    pub(crate) fn new(
        connect: Connect,
        connect_timeout: Duration,
        timeout: Option<Duration>,
        idle_timeout: Duration,
        max_idle: usize,
        max_head: usize,
    ) -> Self {
        Self {
            hosts: ArcSwap::default(),
            tls_hosts: ArcSwap::default(),
            by_member: ArcSwap::default(),
            connect,
            connect_timeout,
            timeout,
            idle_timeout: clock::nanos(idle_timeout),
            max_idle: max_idle.max(1),
            max_head,
            swept: AtomicU64::new(departures::count()),
        }
    }

    /// Forgets the hosts of backends that left their set and drained, once
    /// per departure seen (one relaxed load a request otherwise): a
    /// removed backend's entry and idle connections go with the next
    /// request after its last exchange, not with the next new backend.
    fn sweep(&self) {
        let departures = departures::count();
        if self.swept.load(Relaxed) == departures {
            return;
        }
        self.swept.store(departures, Relaxed);
        for hosts in [&self.hosts, &self.tls_hosts] {
            if hosts.load().values().any(forgettable) {
                hosts.rcu(kept);
            }
        }
        if self
            .by_member
            .load()
            .values()
            .any(|host| host.strong_count() == 0)
        {
            self.by_member.rcu(|hosts| {
                hosts
                    .iter()
                    .filter(|(_, host)| host.strong_count() > 0)
                    .map(|(id, host)| (*id, Weak::clone(host)))
                    .collect::<FxHashMap<_, _>>()
            });
        }
    }

    /// The pool of `authority` (over TLS or not), made on first use (for
    /// `backend`, the request's target if it has one). An entry left by a
    /// backend that has since left the set is replaced when the address is
    /// back as a new member, so the new member's connections are pooled.
    fn host(&self, authority: &Authority, tls: bool, backend: Option<&Backend>) -> Arc<Host> {
        self.sweep();
        if let Some(backend) = backend
            && let Some(host) = self
                .by_member
                .load()
                .get(&backend.id())
                .and_then(Weak::upgrade)
            && host.tls == tls
            && host.authority.as_str().as_bytes() == authority.as_str().as_bytes()
        {
            return host;
        }
        let host = self.host_by_authority(authority, tls, backend);
        if let Some(backend) = backend {
            // Once per member and pool (and again after a sweep).
            self.by_member.rcu(|hosts| {
                let mut hosts = FxHashMap::clone(hosts);
                hosts.insert(backend.id(), Arc::downgrade(&host));
                hosts
            });
        }
        host
    }

    fn host_by_authority(
        &self,
        authority: &Authority,
        tls: bool,
        backend: Option<&Backend>,
    ) -> Arc<Host> {
        let hosts = if tls { &self.tls_hosts } else { &self.hosts };
        let stale =
            |host: &Host| host.is_removed() && backend.is_some_and(|b| !b.state().is_removed());
        if let Some(host) = hosts.load().get(authority)
            && !stale(host)
        {
            return Arc::clone(host);
        }
        let made = Arc::new(Host {
            authority: authority.clone(),
            tls,
            idle: IdleQueue::new(),
            idle_count: AtomicUsize::new(0),
            max_idle: self.max_idle,
            idle_timeout: self.idle_timeout,
            backend: backend.cloned(),
        });
        let previous = hosts.rcu(|hosts| {
            // The map is copied anyway: the moment to forget the hosts
            // whose backends left (O(hosts), on this rare path only).
            let mut hosts = kept(hosts);
            if hosts.get(authority).is_none_or(|host| stale(host)) {
                hosts.insert(authority.clone(), Arc::clone(&made));
            }
            hosts
        });
        // Another thread may have added it first: use the one in the map.
        match previous.get(authority) {
            Some(host) if !stale(host) => Arc::clone(host),
            _ => made,
        }
    }

    /// One exchange with the backend `parts`' URI names: on an idle
    /// connection or a new one. The head is written from `parts` (with
    /// `proto` as `X-Forwarded-Proto` and the allowed `upgrade`, if any);
    /// the response head is parsed into `parts`' own header map, taken
    /// from it, so no map is allocated per exchange (unless `keep` says a
    /// response of that status may be retried: the request's map then
    /// stays for the retry). The body is borrowed
    /// so that a request a dead idle connection never carried can go out
    /// on the next.
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn send<'a, B>(
        &'a self,
        parts: &'a mut Parts,
        proto: &'a HeaderValue,
        upgrade: Option<&'a HeaderValue>,
        keep: Option<&'a ReturnHead>,
        mut body: Pin<&'a mut B>,
        now: Nanos,
    ) -> impl Future<Output = Result<(Answer<Stream>, Lease), Error>> + 'a
    where
        B: http_body::Body + 'a,
        B::Error: Into<BoxError>,
    {
        async move {
            let Some(backend) = parts.uri.authority() else {
                return Err(
                    Error::new(ErrorKind::Upstream).with_message("request URI names no backend")
                );
            };
            let target = parts.extensions.get::<Target>().map(Target::backend);
            let host = self.host(backend, stream::is_tls(parts.uri.scheme()), target);
            let framing = BodyFraming::of(&*body);
            let head_request = parts.method == Method::HEAD;
            // `now` is the request's entry into the stack (the call chain's
            // one reading): the idle check and the deadline both use it.
            let deadline = self.timeout.map(|timeout| clock::instant_at(now) + timeout);
            loop {
                let (mut conn, reused) = match host.checkout(now) {
                    Some(conn) => (conn, true),
                    None => {
                        // Boxed: the connect future (a TLS handshake's among
                        // it) is several times the size of the rest, and every
                        // request's future would carry its room and be moved
                        // with it; a new connection is the rare path.
                        let connect = Box::pin(host.connect(&self.connect, self.connect_timeout));
                        let conn = match deadline {
                            Some(deadline) => tokio::time::timeout_at(deadline, connect)
                                .await
                                .map_err(|_| Error::new(ErrorKind::Timeout))??,
                            None => connect.await?,
                        };
                        (conn.with_max_head(self.max_head), false)
                    }
                };
                let mut timer = conn.take_timer();
                let exchange = async {
                    // The backend is read from the URI here, not kept from
                    // above: a reference into the request that ends with
                    // the write takes no room in this future.
                    let head = RequestHead {
                        parts,
                        backend: parts.uri.authority(),
                        client_ip: parts
                            .extensions
                            .get::<ClientAddr>()
                            .map(ClientAddr::header_value),
                        proto,
                        upgrade,
                        framing,
                    };
                    let written = conn.write(&head, body.as_mut()).await;
                    conn.read(written, head_request, &mut parts.headers, keep)
                        .await
                };
                let result = match deadline {
                    Some(deadline) => h1::within(&mut timer, deadline, exchange)
                        .await
                        .ok_or_else(|| Error::new(ErrorKind::Timeout))?,
                    None => exchange.await,
                };
                match result {
                    Ok(mut answer) => {
                        answer.keep_timer(timer);
                        return Ok((answer, Lease { host, since: now }));
                    }
                    Err(error) if reused && may_resend(&error, &parts.method) => {
                        tracing::debug!(%error, "idle backend connection was closed; resending");
                    }
                    Err(error) => return Err(failure(error, !reused)),
                }
            }
        }
    }
}

/// A copy of the map without the hosts whose backends have left the set
/// and drained (no exchange holds a lease: the map's is the only
/// reference): their idle connections close, and nothing of a removed
/// backend stays in the pool. It runs when a new host joins the map and
/// on the first request after a departure (see [`Pool::sweep`]), so the
/// pool holds the current members and the departed ones still in use.
fn kept(hosts: &Arc<FxHashMap<Authority, Arc<Host>>>) -> FxHashMap<Authority, Arc<Host>> {
    hosts
        .iter()
        .filter(|(_, host)| !forgettable(host))
        .map(|(authority, host)| (authority.clone(), Arc::clone(host)))
        .collect()
}

/// A host whose backend left the set and that no exchange holds a lease
/// on (the map's is the only reference).
fn forgettable(host: &Arc<Host>) -> bool {
    host.is_removed() && Arc::strong_count(host) == 1
}

/// Whether a request that failed on a reused connection may go out again
/// on another: the backend saw nothing of it, or it closed the connection
/// without a byte of answer (it had timed the connection out as we sent)
/// and the request is idempotent with no body taken yet.
fn may_resend(error: &h1::Error, method: &Method) -> bool {
    if error.is_client() || error.body_started() || error.response_started() {
        return false;
    }
    let idempotent = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    let dead = matches!(error.kind(), h1::Kind::Io | h1::Kind::ClosedBeforeResponse);
    dead && (!error.request_sent() || idempotent)
}

/// The crate's error for a failed exchange: the client's when its own body
/// failed; a connect failure when a fresh connection carried nothing (the
/// backend never saw the request, so any request may be retried); the
/// backend's otherwise.
fn failure(error: h1::Error, fresh: bool) -> Error {
    let kind = if error.is_client() {
        ErrorKind::Client
    } else if fresh && !error.request_sent() {
        ErrorKind::Connect
    } else {
        ErrorKind::Upstream
    };
    Error::new(kind).with_source(error)
}

impl Host {
    /// An idle connection that is still good, if there is one; stale and
    /// closed ones are dropped on the way.
    fn checkout(&self, now: Nanos) -> Option<Box<Conn<Stream>>> {
        while let Some(idle) = self.idle.pop() {
            self.idle_count.fetch_sub(1, Relaxed);
            let mut conn = idle.conn;
            if now.saturating_sub(idle.since) <= self.idle_timeout && conn.is_reusable_now() {
                return Some(conn);
            }
        }
        None
    }

    async fn connect(
        &self,
        settings: &Connect,
        timeout: Duration,
    ) -> Result<Box<Conn<Stream>>, Error> {
        let stream = stream::connect(settings, &self.authority, self.tls, false, timeout).await?;
        Ok(Conn::new(stream))
    }
}

impl Pool {
    /// How many hosts the pool holds (tests of bounded memory): in its
    /// map by authority or by member, whichever holds more.
    #[cfg(test)]
    pub(crate) fn hosts(&self) -> usize {
        self.hosts.load().len().max(self.by_member.load().len())
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (hosts, tls_hosts) = (self.hosts.load(), self.tls_hosts.load());
        let mut d = f.debug_map();
        for host in hosts.values().chain(tls_hosts.values()) {
            let scheme = if host.tls { "https" } else { "http" };
            d.entry(
                &format_args!("{scheme}://{}", host.authority),
                &host.idle.len(),
            );
        }
        d.finish()
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("backend", &self.host.authority.as_str())
            .finish()
    }
}
