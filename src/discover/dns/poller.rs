//! The schedule of one DNS source: look up, turn the answer into changes,
//! wait for the TTL (within bounds) or a back-off, again.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, BoxStream, StreamExt};
use tower::discover::Change;

use super::super::backoff::Backoff;
use super::super::listing::Listing;
use crate::backend::Address;
use crate::{Backend, BoxError};

pub(super) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One good answer: the backends, and how long it may be kept (seconds).
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) backends: Vec<Backend>,
    pub(super) ttl: u32,
}

/// Looks up again and again, each time when the last answer's TTL runs
/// out, and turns answers into changes.
pub(super) struct Poller<R> {
    resolve: R,
    label: Arc<str>,
    bounds: (Duration, Duration),
    listing: Listing<Address>,
    backoff: Backoff,
    wait: Duration,
}

impl<R> Poller<R>
where
    R: FnMut() -> BoxFuture<Result<Answer, BoxError>> + Send + 'static,
{
    pub(super) fn new(resolve: R, label: Arc<str>, bounds: (Duration, Duration)) -> Self {
        Self {
            resolve,
            label,
            bounds,
            listing: Listing::default(),
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            wait: Duration::ZERO,
        }
    }

    pub(super) fn into_stream(self) -> BoxStream<'static, Change<Address, Backend>> {
        stream::unfold(self, |mut poller| async move {
            let changes = poller.next_changes().await;
            Some((stream::iter(changes), poller))
        })
        .flatten()
        .boxed()
    }

    /// Waits for the next lookup that changes something; its changes.
    pub(super) async fn next_changes(&mut self) -> Vec<Change<Address, Backend>> {
        loop {
            tokio::time::sleep(self.wait).await;
            match (self.resolve)().await {
                Ok(answer) => {
                    self.backoff.reset();
                    let (min, max) = self.bounds;
                    self.wait = Duration::from_secs(u64::from(answer.ttl)).clamp(min, max);
                    let next: HashMap<Address, Backend> = answer
                        .backends
                        .into_iter()
                        .map(|b| (b.address().clone(), b))
                        .collect();
                    let changes = self.listing.replace(next);
                    if !changes.is_empty() {
                        tracing::info!(
                            source = %self.label,
                            backends = self.listing.len(),
                            next_lookup = ?self.wait,
                            "DNS answer changed"
                        );
                        return changes;
                    }
                }
                Err(error) => {
                    self.wait = self.backoff.fail();
                    tracing::warn!(
                        source = %self.label,
                        %error,
                        retry_in = ?self.wait,
                        kept = self.listing.len(),
                        "DNS lookup failed; keeping the last answer"
                    );
                }
            }
        }
    }
}
