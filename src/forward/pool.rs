//! Pooled HTTP/1.1 connections to backends, on hyper's `client::conn`.
//!
//! hyper-util's legacy client pools connections too, but pays for being a
//! general client on every request: a pool checkout future, a mutex around
//! the pool, connector and executor indirections. A load balancer knows its
//! backends and only speaks HTTP/1.1 to most of them, so this pool is the
//! minimum: per backend, a lock-free queue of idle connections
//! (crossbeam's `SegQueue`, which grows in blocks as needed, so a thousand
//! backends cost nothing until they are used), found through a map that is
//! read without a lock and copied on the rare insert of a new backend.
//!
//! A connection is checked out for one exchange and returned when the
//! response body has been read to its end (HTTP/1.1 cannot start another
//! exchange before). A body dropped half-read closes the connection, as
//! hyper does. A request that a reused connection could not send (the
//! backend had closed it while idle) goes out on the next connection, the
//! way hyper-util's client retries such requests.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crossbeam_queue::SegQueue;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustc_hash::FxHashMap;
use tokio::net::TcpStream;

use crate::clock::{self, Nanos};
use crate::{BoxError, Error, ErrorKind};

/// The pool of one forwarder.
pub(crate) struct Pool<B> {
    hosts: ArcSwap<FxHashMap<Authority, Arc<Host<B>>>>,
    connect_timeout: Duration,
    idle_timeout: Nanos,
    max_idle: usize,
}

/// One backend's idle connections.
pub(crate) struct Host<B> {
    authority: Authority,
    idle: SegQueue<Idle<B>>,
    /// Idle connections queued (the queue itself keeps no exact count).
    idle_count: AtomicUsize,
    max_idle: usize,
    idle_timeout: Nanos,
}

struct Idle<B> {
    sender: SendRequest<B>,
    since: Nanos,
}

/// A connection lent to one exchange; back to the pool when the response
/// body ends.
pub(crate) struct Lease<B> {
    host: Arc<Host<B>>,
    sender: SendRequest<B>,
    /// When the exchange began; stands for the start of the idle time, so
    /// returning the connection reads no clock (a long exchange only makes
    /// the connection look idle longer than it was).
    since: Nanos,
}

impl<B> Lease<B> {
    /// Returns the connection to the pool (or closes it when the pool is
    /// full).
    pub(crate) fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        if self.host.idle_count.fetch_add(1, Relaxed) >= self.host.max_idle {
            self.host.idle_count.fetch_sub(1, Relaxed);
            return;
        }
        self.host.idle.push(Idle {
            sender: self.sender,
            since: self.since,
        });
    }
}

impl<B> Pool<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Self {
        Self {
            hosts: ArcSwap::default(),
            connect_timeout,
            idle_timeout: clock::nanos(idle_timeout),
            max_idle: max_idle.max(1),
        }
    }

    /// The pool of `authority`, made on first use.
    fn host(&self, authority: &Authority) -> Arc<Host<B>> {
        if let Some(host) = self.hosts.load().get(authority) {
            return Arc::clone(host);
        }
        let made = Arc::new(Host {
            authority: authority.clone(),
            idle: SegQueue::new(),
            idle_count: AtomicUsize::new(0),
            max_idle: self.max_idle,
            idle_timeout: self.idle_timeout,
        });
        let previous = self.hosts.rcu(|hosts| {
            let mut hosts = FxHashMap::clone(hosts);
            hosts
                .entry(authority.clone())
                .or_insert_with(|| Arc::clone(&made));
            hosts
        });
        // Another thread may have added it first: use the one in the map.
        previous.get(authority).cloned().unwrap_or(made)
    }

    /// Sends `request` (whose URI names the backend) on an idle connection
    /// or a new one.
    pub(crate) async fn send(
        &self,
        mut request: Request<B>,
    ) -> Result<(Response<Incoming>, Lease<B>), Error> {
        let Some(authority) = request.uri().authority().cloned() else {
            return Err(
                Error::new(ErrorKind::Upstream).with_message("request URI names no backend")
            );
        };
        origin_form(&mut request, &authority);
        let host = self.host(&authority);
        let now = clock::now();
        while let Some(idle) = host.idle.pop() {
            host.idle_count.fetch_sub(1, Relaxed);
            if now.saturating_sub(idle.since) > host.idle_timeout || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            // Ready at once, unless the last exchange's end is still being
            // processed by the connection's task.
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lease = Lease {
                        host,
                        sender,
                        since: now,
                    };
                    return Ok((response, lease));
                }
                Err(mut failed) => match failed.take_message() {
                    // Never sent: the connection had died while idle.
                    Some(unsent) => request = unsent,
                    None => return Err(upstream(failed.into_error())),
                },
            }
        }
        let mut sender = host.connect(self.connect_timeout).await?;
        match sender.try_send_request(request).await {
            Ok(response) => Ok((
                response,
                Lease {
                    host,
                    sender,
                    since: now,
                },
            )),
            // A fresh connection that could not take the request: the
            // backend never saw it.
            Err(failed) if failed.message().is_some() => {
                Err(Error::new(ErrorKind::Connect).with_source(failed.into_error()))
            }
            Err(failed) => Err(upstream(failed.into_error())),
        }
    }
}

impl<B> Host<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn connect(&self, timeout: Duration) -> Result<SendRequest<B>, Error> {
        let port = self.authority.port_u16().unwrap_or(80);
        let connect = TcpStream::connect((self.authority.host(), port));
        let stream = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(Error::new(ErrorKind::Connect).with_source(error)),
            Err(_) => {
                return Err(Error::new(ErrorKind::Connect)
                    .with_message(format!("connect timed out after {timeout:?}")));
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::new(ErrorKind::Connect).with_source(e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "backend connection ended");
            }
        });
        Ok(sender)
    }
}

/// HTTP/1.1 to a backend is origin-form (`/path?query`) with a `Host`.
fn origin_form<B>(request: &mut Request<B>, authority: &Authority) {
    if !request.headers().contains_key(HOST)
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(HOST, host);
    }
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *request.uri_mut() = Uri::from(path);
}

/// A failed exchange: the client's when its own request body failed (hyper
/// reports the body's error as a user error: a bad chunk, a body cut short),
/// the backend's otherwise.
fn upstream(error: hyper::Error) -> Error {
    let kind = if error.is_user() {
        ErrorKind::Client
    } else {
        ErrorKind::Upstream
    };
    Error::new(kind).with_source(error)
}

impl<B> fmt::Debug for Pool<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts = self.hosts.load();
        let mut d = f.debug_map();
        for (authority, host) in hosts.iter() {
            d.entry(&authority.as_str(), &host.idle.len());
        }
        d.finish()
    }
}

impl<B> fmt::Debug for Lease<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("backend", &self.host.authority.as_str())
            .finish()
    }
}
