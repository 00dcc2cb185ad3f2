//! Reloading the backend list without a restart: on SIGHUP, and when asked,
//! whenever the file changes. Changes go to the set as a `Discover` stream.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tower::discover::Change;
use tower_lb::backend::Address;
use tower_lb::{Backend, BackendSet};

use crate::settings::File;

type Changes = mpsc::UnboundedSender<Change<Address, Backend>>;

/// Starts following `path`. The set learns the current members as the
/// stream's first changes (no-ops), so that later removals find them.
pub fn spawn(set: BackendSet, path: PathBuf, watch: bool) -> std::io::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    let (changes, mut receiver) = mpsc::unbounded_channel();
    for backend in set.snapshot().backends() {
        let _ = changes.send(Change::Insert(backend.address().clone(), backend.clone()));
    }
    let stream = futures_util::stream::poll_fn(move |cx| {
        receiver
            .poll_recv(cx)
            .map(|change| change.map(Ok::<_, std::convert::Infallible>))
    });
    let follower = set.clone();
    tokio::spawn(async move { follower.follow(stream).await });
    tokio::spawn(async move {
        let mut seen = modified(&path);
        loop {
            tokio::select! {
                _ = hangup.recv() => reload(&set, &path, &changes, "SIGHUP"),
                () = tokio::time::sleep(Duration::from_secs(1)), if watch => {
                    let now = modified(&path);
                    if now != seen {
                        seen = now;
                        reload(&set, &path, &changes, "file changed");
                    }
                }
            }
        }
    });
    Ok(())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Re-reads the file and sends the difference to the set. A bad file is
/// rejected whole: the running set stays as it is.
fn reload(set: &BackendSet, path: &Path, changes: &Changes, why: &str) {
    let wanted = match File::read(path).and_then(|file| file.backends()) {
        Ok(backends) => backends,
        Err(error) => {
            tracing::error!("reload ({why}) rejected, keeping the running backends: {error}");
            return;
        }
    };
    if wanted.is_empty() {
        tracing::error!("reload ({why}) rejected: the file lists no backend");
        return;
    }
    let current = set.snapshot();
    let mut added = 0;
    let mut removed = 0;
    let mut changed = 0;
    for member in current.backends() {
        if wanted.iter().all(|w| w.address() != member.address()) {
            let _ = changes.send(Change::Remove(member.address().clone()));
            removed += 1;
        }
    }
    for backend in wanted {
        match current.get(backend.address()) {
            Some(member)
                if member.weight() == backend.weight()
                    && member.protocol() == backend.protocol() => {}
            Some(_) => changed += 1,
            None => added += 1,
        }
        let _ = changes.send(Change::Insert(backend.address().clone(), backend));
    }
    tracing::info!(
        "reload ({why}): {added} added, {removed} removed (draining), {changed} changed; \
         other settings take effect on restart"
    );
}
