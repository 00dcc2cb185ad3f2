//! Following a `Discover` stream of backend changes.

use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::Hash;
use std::pin::pin;
use std::task::Poll;

use tower::discover::{Change, Discover};

use super::{Address, Backend, BackendSet, Update};

impl BackendSet {
    /// Applies the changes of a [`Discover`] stream to the set until the
    /// stream ends (`Ok`) or fails (the error). Spawn it as a task.
    ///
    /// Keys are the stream's own; `Change::Remove(key)` removes the backend
    /// last inserted under `key`. Changes that are ready together are applied
    /// as one update, so a burst (a DNS answer, a reloaded file) rebuilds the
    /// balancers' tables once.
    ///
    /// ```
    /// use tower::discover::Change;
    /// use tower_lb::{Backend, BackendSet};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_lb::Error> {
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
        let mut discover = pin!(discover);
        let mut keys: HashMap<D::Key, Address> = HashMap::new();
        loop {
            let mut updates = Vec::new();
            let end = poll_fn(|cx| {
                loop {
                    match discover.as_mut().poll_discover(cx) {
                        Poll::Ready(Some(Ok(change))) => updates.push(change),
                        Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                        Poll::Ready(None) => return Poll::Ready(Some(Ok(()))),
                        Poll::Pending if updates.is_empty() => return Poll::Pending,
                        Poll::Pending => return Poll::Ready(None),
                    }
                }
            })
            .await;
            let batch: Vec<Update> = updates
                .into_iter()
                .flat_map(|change| to_updates(&mut keys, change))
                .collect();
            self.apply(batch);
            if let Some(end) = end {
                return end;
            }
        }
    }
}

fn to_updates<K: Hash + Eq>(
    keys: &mut HashMap<K, Address>,
    change: Change<K, Backend>,
) -> Vec<Update> {
    match change {
        Change::Insert(key, backend) => {
            let mut updates = Vec::with_capacity(2);
            let address = backend.address().clone();
            if let Some(old) = keys.insert(key, address.clone())
                && old != address
            {
                updates.push(Update::Remove(old));
            }
            updates.push(Update::Insert(backend));
            updates
        }
        Change::Remove(key) => keys.remove(&key).map(Update::Remove).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
