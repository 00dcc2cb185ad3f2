//! Each client connection's supervisor: its slow-head and idle limits, and
//! its part in a graceful stop.
//!
//! One hand-written future around the connection, not a `select!` over the
//! connection, a ticking sleep and a stop signal (with hyper-util's
//! `GracefulShutdown` watching it as well): that task is woken a few times
//! for every request, and each wake-up polled the sleep, a fresh `watch`
//! `changed()` future and `select!`'s random start, about a thousand
//! instructions a request in all. Here a wake-up polls the connection and
//! reads two flags: the tick and the stop are each registered once, and
//! looked at again only when they have fired.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};

use crate::server::Limits;

/// A connection that can be asked to finish what it is doing and close.
pub trait Graceful: Future<Output = ()> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

/// What a connection is doing, as the supervisor sees it.
#[derive(Default)]
pub struct Activity {
    /// Bumped whenever bytes move either way.
    pub moved: AtomicU64,
    /// Bytes arrived while no request was in flight: a request head is on
    /// its way.
    pub head_pending: AtomicBool,
    /// Requests whose response body has not ended.
    pub in_flight: AtomicUsize,
}

impl Activity {
    #[inline]
    pub fn bump(&self) {
        // A plain store of the next value, not an atomic add: the socket
        // side runs on the connection's task, and should a body end on
        // another task (an h2 stream) at the same moment, a lost increment
        // still changes the value, which is all the supervisor looks at.
        self.moved.store(
            self.moved.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }
}

/// One listener's connections, for a graceful stop: told to stop, each
/// finishes the requests it has and closes; `all_closed` waits for the
/// last one.
#[derive(Default)]
pub struct Drain {
    stopping: AtomicBool,
    stop: Arc<Notify>,
    open: AtomicUsize,
    closed: Notify,
}

impl Drain {
    /// Counts a connection open (from its accept, so a TLS handshake in
    /// progress counts) until the guard drops.
    pub fn open(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::AcqRel);
        Open(self.clone())
    }

    /// Tells every connection, present and to come, to stop.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.notify_waiters();
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            let mut closed = std::pin::pin!(closed);
            closed.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// A connection's place in its listener's count of open ones.
pub struct Open(Arc<Drain>);

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

pin_project_lite::pin_project! {
    /// Runs a connection, closing it when its request head is too slow or
    /// it sits idle, and shutting it down gracefully on a stop. It looks at
    /// the limits every quarter of the shorter one, so a connection is
    /// closed within 1.25 times its limit, and the socket path reads no
    /// clock.
    pub struct Supervised<C> {
        #[pin]
        connection: C,
        #[pin]
        tick: Sleep,
        #[pin]
        stop: OwnedNotified,
        open: Open,
        activity: Arc<Activity>,
        limits: Limits,
        every: Duration,
        moved: u64,
        last_active: Instant,
        head_since: Option<Instant>,
        registered: bool,
        stopping: bool,
    }
}

impl<C: Graceful> Supervised<C> {
    pub fn new(connection: C, activity: Arc<Activity>, limits: Limits, open: Open) -> Self {
        let every =
            (limits.header_timeout.min(limits.idle_timeout) / 4).max(Duration::from_millis(10));
        let now = Instant::now();
        let stop = open.0.stop.clone().notified_owned();
        Self {
            connection,
            tick: tokio::time::sleep_until(now + every),
            stop,
            open,
            activity,
            limits,
            every,
            moved: 0,
            last_active: now,
            head_since: None,
            registered: false,
            stopping: false,
        }
    }
}

impl<C: Graceful> Future for Supervised<C> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if !*this.registered {
            // Once: the task's waker stays the same, so after this the tick
            // and the stop wake it without being polled again.
            *this.registered = true;
            let _ = this.tick.as_mut().poll(cx);
            let _ = this.stop.as_mut().poll(cx);
        }
        if !*this.stopping && this.open.0.stopping.load(Ordering::Acquire) {
            *this.stopping = true;
            this.connection.as_mut().graceful_shutdown();
        }
        if this.connection.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if this.tick.is_elapsed() {
            let now = Instant::now();
            let moved = this.activity.moved.load(Ordering::Relaxed);
            if moved != *this.moved {
                *this.moved = moved;
                *this.last_active = now;
            }
            if this.activity.head_pending.load(Ordering::Relaxed) {
                let since = *this.head_since.get_or_insert(now);
                if now - since > this.limits.header_timeout {
                    tracing::debug!("closing a connection whose request head is too slow");
                    return Poll::Ready(());
                }
            } else {
                *this.head_since = None;
            }
            let idle =
                this.activity.in_flight.load(Ordering::Relaxed) == 0 && this.head_since.is_none();
            if idle && now - *this.last_active > this.limits.idle_timeout {
                tracing::debug!("closing an idle connection");
                return Poll::Ready(());
            }
            this.tick.as_mut().reset(now + *this.every);
            let _ = this.tick.as_mut().poll(cx);
        }
        Poll::Pending
    }
}
