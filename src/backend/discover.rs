//! Following a `Discover` stream of backend changes.

use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::Hash;
use std::pin::pin;
use std::task::Poll;

use std::sync::Arc;

use tower::discover::{Change, Discover};

use super::{Address, Backend, BackendSet, Claim, Source, SourceId};

impl BackendSet {
    /// Applies the changes of a [`Discover`] stream to the set until the
    /// stream ends (`Ok`) or fails (the error). Spawn it as a task.
    ///
    /// The same as [`follow_source`](Self::follow_source) with the label
    /// `discover`.
    ///
    /// ```
    /// use tower::discover::Change;
    /// use tower_lb::{Backend, BackendSet};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_lb::ConfigError> {
    /// let set = BackendSet::default();
    /// let changes = futures_util::stream::iter([
    ///     Ok::<_, std::convert::Infallible>(Change::Insert("a", "http://127.0.0.1:9001".parse::<Backend>()?)),
    ///     Ok(Change::Insert("b", "http://127.0.0.1:9002".parse()?)),
    ///     Ok(Change::Remove("a")),
    /// ]);
    /// set.follow(changes).await.unwrap();
    /// assert_eq!(set.snapshot().backends()[0].address().as_str(), "http://127.0.0.1:9002");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn follow<D>(&self, discover: D) -> Result<(), D::Error>
    where
        D: Discover<Service = Backend>,
        D::Key: Hash + Clone,
    {
        self.follow_source("discover", discover).await
    }

    /// Applies the changes of one discovery source, named `label` (what
    /// status views show as the backend's source), until the stream ends
    /// (`Ok`) or fails (the error). Spawn it as a task.
    ///
    /// Keys are the stream's own; `Change::Remove(key)` withdraws what the
    /// stream last inserted under `key`. Several sources may follow into
    /// one set: membership is their union, and each source owns its keys,
    /// so a backend listed by two sources stays until both drop it (when
    /// they disagree on its weight, the source that started first wins).
    /// What a source listed stays listed after its stream ends or fails.
    ///
    /// Changes that are ready together are applied as one update, so a
    /// burst (a DNS answer, a reloaded file, an etcd resync) rebuilds the
    /// balancers' tables once.
    ///
    /// ```
    /// use tower::discover::Change;
    /// use tower_lb::{Backend, BackendSet};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_lb::ConfigError> {
    /// let set = BackendSet::default();
    /// let shared: Backend = "http://127.0.0.1:9001".parse()?;
    /// let dns = futures_util::stream::iter([
    ///     Ok::<_, std::convert::Infallible>(Change::Insert("x", shared.clone())),
    ///     Ok(Change::Remove("x")),
    /// ]);
    /// let file = futures_util::stream::iter([
    ///     Ok::<_, std::convert::Infallible>(Change::Insert("y", shared.clone())),
    /// ]);
    /// set.follow_source("file", file).await.unwrap();
    /// set.follow_source("dns", dns).await.unwrap();
    /// // dns dropped it, but the file still lists it.
    /// assert_eq!(set.snapshot().len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn follow_source<D>(&self, label: &str, discover: D) -> Result<(), D::Error>
    where
        D: Discover<Service = Backend>,
        D::Key: Hash + Clone,
    {
        let source = Source {
            id: SourceId::next(),
            label: Arc::from(label),
        };
        let mut discover = pin!(discover);
        let mut listed = Listed::default();
        loop {
            let mut changes = Vec::new();
            let end = poll_fn(|cx| {
                loop {
                    match discover.as_mut().poll_discover(cx) {
                        Poll::Ready(Some(Ok(change))) => changes.push(change),
                        Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                        Poll::Ready(None) => return Poll::Ready(Some(Ok(()))),
                        Poll::Pending if changes.is_empty() => return Poll::Pending,
                        Poll::Pending => return Poll::Ready(None),
                    }
                }
            })
            .await;
            let claims: Vec<Claim> = changes
                .into_iter()
                .flat_map(|change| listed.change(change))
                .collect();
            if !claims.is_empty() {
                self.apply_claims(&source, claims);
            }
            if let Some(end) = end {
                return end;
            }
        }
    }
}

/// What one source lists: its keys, and how many of its keys name each
/// address (two keys may name one backend; it stays until both go).
struct Listed<K> {
    keys: HashMap<K, Address>,
    addresses: HashMap<Address, usize>,
}

impl<K> Default for Listed<K> {
    fn default() -> Self {
        Self {
            keys: HashMap::new(),
            addresses: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> Listed<K> {
    fn change(&mut self, change: Change<K, Backend>) -> Vec<Claim> {
        match change {
            Change::Insert(key, backend) => {
                let mut claims = Vec::with_capacity(2);
                let address = backend.address().clone();
                match self.keys.insert(key, address.clone()) {
                    Some(old) if old == address => {}
                    Some(old) => {
                        claims.extend(self.release(old));
                        *self.addresses.entry(address).or_default() += 1;
                    }
                    None => *self.addresses.entry(address).or_default() += 1,
                }
                claims.push(Claim::Insert(backend));
                claims
            }
            Change::Remove(key) => match self.keys.remove(&key) {
                Some(address) => self.release(address).into_iter().collect(),
                None => Vec::new(),
            },
        }
    }

    /// One key fewer names `address`: withdrawn when none is left.
    fn release(&mut self, address: Address) -> Option<Claim> {
        let count = self.addresses.get_mut(&address)?;
        *count -= 1;
        if *count > 0 {
            return None;
        }
        self.addresses.remove(&address);
        Some(Claim::Remove(address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_keys_naming_one_backend_keep_it_until_both_go() {
        let mut listed = Listed::default();
        let shared: Backend = "http://127.0.0.1:7".parse().unwrap();
        let other: Backend = "http://127.0.0.1:8".parse().unwrap();
        let kinds = |claims: Vec<Claim>| -> Vec<String> {
            claims
                .iter()
                .map(|c| match c {
                    Claim::Insert(b) => format!("+{}", b.address().as_str()),
                    Claim::Remove(a) => format!("-{}", a.as_str()),
                })
                .collect()
        };
        assert_eq!(
            kinds(listed.change(Change::Insert("a", shared.clone()))),
            ["+http://127.0.0.1:7"]
        );
        assert_eq!(
            kinds(listed.change(Change::Insert("b", shared.clone()))),
            ["+http://127.0.0.1:7"]
        );
        assert!(
            listed.change(Change::Remove("a")).is_empty(),
            "key b still names it"
        );
        // Key b moves to another backend: the shared one is withdrawn.
        assert_eq!(
            kinds(listed.change(Change::Insert("b", other))),
            ["-http://127.0.0.1:7", "+http://127.0.0.1:8"]
        );
        assert_eq!(
            kinds(listed.change(Change::Remove("b"))),
            ["-http://127.0.0.1:8"]
        );
        assert!(listed.keys.is_empty() && listed.addresses.is_empty());
        assert!(listed.change(Change::Remove("zz")).is_empty());
    }

    #[tokio::test]
    async fn a_burst_is_published_once_and_errors_end_the_follow() {
        let set = BackendSet::default();
        let backend =
            |port: u16| -> Backend { format!("http://127.0.0.1:{port}").parse().unwrap() };
        let changes = futures_util::stream::iter([
            Ok(Change::Insert(1, backend(1))),
            Ok(Change::Insert(2, backend(2))),
            Ok(Change::Insert(1, backend(3))),
            Err("resolver failed"),
        ]);
        assert_eq!(set.follow(changes).await, Err("resolver failed"));
        let snapshot = set.snapshot();
        assert_eq!(snapshot.version(), 1, "one publication for the burst");
        let ports: Vec<_> = snapshot
            .backends()
            .iter()
            .map(|b| b.address().authority().port_u16().unwrap())
            .collect();
        assert_eq!(ports, [2, 3], "key 1 moved from port 1 to port 3");
    }
}
