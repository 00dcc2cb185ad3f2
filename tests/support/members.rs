//! What the discovery tests read of a set: its members, and waiting for them.

use std::time::Duration;

use tokio::time::Instant;
use tower_lb::BackendSet;

/// The set's members as `address weight`, sorted.
pub fn members(set: &BackendSet) -> Vec<String> {
    let mut out: Vec<String> = set
        .snapshot()
        .backends()
        .iter()
        .map(|b| format!("{} {}", b.address().as_str(), b.weight()))
        .collect();
    out.sort();
    out
}

/// Waits until the members are `want`; how long it took.
pub async fn until(set: &BackendSet, want: &[&str], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if members(set) == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "members {:?}, wanted {want:?}",
            members(set)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
