//! The static backend list (flags or file) as one source of the set, and
//! reloading it without a restart: on SIGHUP, and when asked, whenever the
//! file changes. Changes go to the set as a `Discover` stream labelled
//! `static`, so that backends discovered elsewhere (DNS, etcd) are neither
//! claimed nor removed by a reload: membership is the union of sources.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tower::discover::Change;
use tower_lb::backend::Address;
use tower_lb::{Backend, BackendSet};

use crate::settings::File;

type Changes = mpsc::UnboundedSender<Change<Address, Backend>>;

/// Lists `backends` as the `static` source of `set` and, with a `path`,
/// follows the file. The stream's first changes are the static members
/// (no-ops for the set, which starts with them), so that later removals
/// find them.
pub fn spawn(
    set: BackendSet,
    backends: Vec<Backend>,
    path: Option<PathBuf>,
    watch: bool,
) -> std::io::Result<()> {
    let (changes, mut receiver) = mpsc::unbounded_channel();
    for backend in &backends {
        let _ = changes.send(Change::Insert(backend.address().clone(), backend.clone()));
    }
    let stream = futures_util::stream::poll_fn(move |cx| {
        receiver
            .poll_recv(cx)
            .map(|change| change.map(Ok::<_, std::convert::Infallible>))
    });
    let follower = set.clone();
    tokio::spawn(async move { follower.follow_source("static", stream).await });
    let Some(path) = path else {
        return Ok(());
    };
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        let mut listed = backends;
        let mut seen = modified(&path);
        loop {
            tokio::select! {
                _ = hangup.recv() => reload(&mut listed, &path, &changes, "SIGHUP"),
                () = tokio::time::sleep(Duration::from_secs(1)), if watch => {
                    let now = modified(&path);
                    if now != seen {
                        seen = now;
                        reload(&mut listed, &path, &changes, "file changed");
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

/// Re-reads the file and sends the difference from what it `listed` to
/// the set. A bad file is rejected whole: the running set stays as it is.
fn reload(listed: &mut Vec<Backend>, path: &Path, changes: &Changes, why: &str) {
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
    let mut added = 0;
    let mut removed = 0;
    let mut changed = 0;
    for member in listed.iter() {
        if wanted.iter().all(|w| w.address() != member.address()) {
            let _ = changes.send(Change::Remove(member.address().clone()));
            removed += 1;
        }
    }
    for backend in &wanted {
        match listed.iter().find(|b| b.address() == backend.address()) {
            Some(member)
                if member.weight() == backend.weight()
                    && member.protocol() == backend.protocol() => {}
            Some(_) => changed += 1,
            None => added += 1,
        }
        let _ = changes.send(Change::Insert(backend.address().clone(), backend.clone()));
    }
    *listed = wanted;
    tracing::info!(
        "reload ({why}): {added} added, {removed} removed (draining), {changed} changed; \
         other settings take effect on restart"
    );
}
