//! Backends from an etcd key prefix (feature `etcd`, on etcd-client).

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, KeyValue, WatchOptions, WatchStream,
};
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use tower::discover::Change;

use super::backoff::Backoff;
use super::listing::Listing;
use crate::{Backend, ConfigError};

/// An etcd prefix whose keys are backends.
///
/// Each key under the prefix is one backend; its value is a backend as the
/// example proxy's `--backend` flag writes it (`http://10.0.0.1:8000,weight=2`).
/// A value that does not parse is logged with its key and lists nothing.
///
/// ```no_run
/// use tower_lb::BackendSet;
/// use tower_lb::discover::Etcd;
///
/// # async fn run() -> Result<(), tower_lb::ConfigError> {
/// let set = BackendSet::default();
/// let web = Etcd::new(["http://127.0.0.1:2379"], "/services/web/").discover()?;
/// tokio::spawn(async move { set.follow_source("etcd:web", web).await });
/// // elsewhere: etcdctl put /services/web/a 'http://10.0.0.1:8000,weight=2'
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Etcd {
    endpoints: Vec<String>,
    prefix: String,
    connect_timeout: Duration,
    keep_alive: Duration,
}

impl Etcd {
    /// The keys under `prefix` at the etcd cluster reachable at `endpoints`
    /// (`http://host:port`).
    pub fn new<E: Into<String>>(
        endpoints: impl IntoIterator<Item = E>,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: prefix.into(),
            connect_timeout: Duration::from_secs(2),
            keep_alive: Duration::from_secs(2),
        }
    }

    /// How long connecting (and the first read) may take. Default 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The HTTP/2 keep-alive interval, and the time an unanswered ping
    /// waits: how soon a watch on an etcd that went away (a crash, a cut
    /// network) is noticed. Default 2 s.
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval;
        self
    }

    /// The label status views show: `etcd:ENDPOINT/PREFIX`, as the example
    /// proxy's flag reads.
    pub fn label(&self) -> String {
        let endpoint = self.endpoints.first().map_or("", String::as_str);
        let slash = if self.prefix.starts_with('/') {
            ""
        } else {
            "/"
        };
        format!(
            "etcd:{}{slash}{}",
            endpoint.trim_end_matches('/'),
            self.prefix
        )
    }

    /// The source: a [`Discover`](tower::discover::Discover) stream keyed by
    /// etcd key, to [`follow`](crate::BackendSet::follow_source).
    ///
    /// It reads the prefix, sends the difference from what it listed, then
    /// watches from the revision after that read, so no change is missed
    /// or applied twice. When etcd goes away it keeps what it listed
    /// (logged), reconnects with a back-off of 1 s doubling to 30 s, and
    /// reads again (a resync: again only the difference). A watch whose
    /// revision was compacted away is read afresh the same way.
    ///
    /// # Errors
    ///
    /// No endpoint, or an empty prefix (which would make every key in
    /// etcd a backend).
    pub fn discover(self) -> Result<EtcdDiscover, ConfigError> {
        let label = self.label();
        if self.endpoints.is_empty() {
            return Err(ConfigError::new(format!("{label}: no etcd endpoint")));
        }
        if self.prefix.is_empty() {
            return Err(ConfigError::new(format!(
                "{label}: an empty prefix would make every key in etcd a backend"
            )));
        }
        let watcher = Watcher {
            etcd: self,
            label: Arc::from(label.as_str()),
            listing: Listing::default(),
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            state: State::Disconnected {
                wait: Duration::ZERO,
            },
        };
        let changes = stream::unfold(watcher, |mut watcher| async move {
            let changes = watcher.next_changes().await;
            Some((stream::iter(changes), watcher))
        })
        .flatten()
        .boxed();
        Ok(EtcdDiscover { label, changes })
    }
}

/// The changes of one etcd prefix: a [`Discover`](tower::discover::Discover)
/// stream keyed by etcd key, that never ends and never fails (failures are
/// logged; what was listed stays). Made by [`Etcd::discover`].
pub struct EtcdDiscover {
    label: String,
    changes: BoxStream<'static, Change<String, Backend>>,
}

impl EtcdDiscover {
    /// The source's label (see [`Etcd::label`]).
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Stream for EtcdDiscover {
    type Item = Result<Change<String, Backend>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.changes
            .poll_next_unpin(cx)
            .map(|change| change.map(Ok))
    }
}

impl fmt::Debug for EtcdDiscover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdDiscover")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

enum State {
    /// Connect, read and watch after `wait`.
    Disconnected { wait: Duration },
    /// Watching; the client is kept for as long as its watch.
    Watching {
        _client: Box<Client>,
        watch: Box<WatchStream>,
    },
}

struct Watcher {
    etcd: Etcd,
    label: Arc<str>,
    listing: Listing<String>,
    backoff: Backoff,
    state: State,
}

impl Watcher {
    /// Waits for the next read or watch event that changes something.
    async fn next_changes(&mut self) -> Vec<Change<String, Backend>> {
        loop {
            let changes = match &mut self.state {
                State::Disconnected { wait } => {
                    tokio::time::sleep(*wait).await;
                    match self.resync().await {
                        Ok((changes, state)) => {
                            self.state = state;
                            changes
                        }
                        Err(error) => {
                            let wait = self.backoff.fail();
                            tracing::warn!(
                                source = %self.label,
                                %error,
                                retry_in = ?wait,
                                kept = self.listing.len(),
                                "etcd unreachable; keeping the backends it listed"
                            );
                            self.state = State::Disconnected { wait };
                            Vec::new()
                        }
                    }
                }
                State::Watching { watch, .. } => match watch.message().await {
                    Ok(Some(response))
                        if response.canceled() || response.compact_revision() > 0 =>
                    {
                        tracing::info!(
                            source = %self.label,
                            compacted = response.compact_revision(),
                            reason = response.cancel_reason(),
                            "etcd watch canceled; reading the prefix afresh"
                        );
                        self.state = State::Disconnected {
                            wait: Duration::ZERO,
                        };
                        Vec::new()
                    }
                    Ok(Some(response)) => response
                        .events()
                        .iter()
                        .filter_map(|event| {
                            let kv = event.kv()?;
                            match event.event_type() {
                                EventType::Put => self.put(kv),
                                EventType::Delete => self.listing.delete(&key_of(kv)),
                            }
                        })
                        .collect(),
                    Ok(None) | Err(_) => {
                        let wait = self.backoff.fail();
                        tracing::warn!(
                            source = %self.label,
                            retry_in = ?wait,
                            kept = self.listing.len(),
                            "etcd watch ended; keeping the backends it listed, reconnecting"
                        );
                        self.state = State::Disconnected { wait };
                        Vec::new()
                    }
                },
            };
            if !changes.is_empty() {
                tracing::info!(
                    source = %self.label,
                    changes = changes.len(),
                    backends = self.listing.len(),
                    "etcd listing changed"
                );
                return changes;
            }
        }
    }

    /// Connects, reads the prefix and starts watching from the revision
    /// after the read: the difference from what was listed, and the watch.
    async fn resync(
        &mut self,
    ) -> Result<(Vec<Change<String, Backend>>, State), etcd_client::Error> {
        let options = ConnectOptions::new()
            .with_connect_timeout(self.etcd.connect_timeout)
            .with_keep_alive(self.etcd.keep_alive, self.etcd.keep_alive)
            .with_keep_alive_while_idle(true);
        let limit = self.etcd.connect_timeout;
        let timed_out = || etcd_client::Error::WatchError(format!("no answer within {limit:?}"));
        let mut client =
            tokio::time::timeout(limit, Client::connect(&self.etcd.endpoints, Some(options)))
                .await
                .map_err(|_| timed_out())??;
        let prefix = self.etcd.prefix.clone();
        let read = tokio::time::timeout(
            limit,
            client.get(prefix.clone(), Some(GetOptions::new().with_prefix())),
        )
        .await
        .map_err(|_| timed_out())??;
        let revision = read.header().map_or(0, |header| header.revision());
        let next: HashMap<String, Backend> = read
            .kvs()
            .iter()
            .filter_map(|kv| Some((key_of(kv), self.parse(kv)?)))
            .collect();
        let watch = client
            .watch(
                prefix,
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            )
            .await?;
        self.backoff.reset();
        tracing::debug!(source = %self.label, revision, keys = next.len(), "etcd prefix read");
        Ok((
            self.listing.replace(next),
            State::Watching {
                _client: Box::new(client),
                watch: Box::new(watch),
            },
        ))
    }

    /// A put: the key lists its backend, or nothing when the value is bad.
    fn put(&mut self, kv: &KeyValue) -> Option<Change<String, Backend>> {
        let key = key_of(kv);
        match self.parse(kv) {
            Some(backend) => self.listing.put(key, backend),
            None => self.listing.delete(&key),
        }
    }

    /// The backend a key's value names; a bad value is logged with its key.
    fn parse(&self, kv: &KeyValue) -> Option<Backend> {
        let parsed = match kv.value_str() {
            Ok(text) => text.trim().parse::<Backend>().map_err(|e| e.to_string()),
            Err(_) => Err("the value is not UTF-8".to_owned()),
        };
        parsed
            .map_err(|error| {
                tracing::error!(
                    source = %self.label,
                    key = %key_of(kv),
                    %error,
                    "etcd: bad backend value; the key lists nothing"
                );
            })
            .ok()
    }
}

fn key_of(kv: &KeyValue) -> String {
    String::from_utf8_lossy(kv.key()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_bad_configurations() {
        let etcd = Etcd::new(["http://127.0.0.1:2379/"], "/services/web/");
        assert_eq!(etcd.label(), "etcd:http://127.0.0.1:2379/services/web/");
        let relative = Etcd::new(["http://127.0.0.1:2379"], "web");
        assert_eq!(relative.label(), "etcd:http://127.0.0.1:2379/web");
        let empty = Etcd::new(["http://127.0.0.1:2379"], "")
            .discover()
            .unwrap_err();
        assert!(empty.to_string().contains("empty prefix"), "{empty}");
        let none = Etcd::new(Vec::<String>::new(), "/x")
            .discover()
            .unwrap_err();
        assert!(none.to_string().contains("no etcd endpoint"), "{none}");
    }
}
