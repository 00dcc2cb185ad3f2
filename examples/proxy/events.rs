//! Health and membership events, logged.

use tower_lb::BackendSet;
use tower_lb::health::HealthEventKind;

/// Logs every event of `set` until it is dropped.
pub async fn log(set: BackendSet) {
    let mut events = set.events();
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "health events came too fast to log");
                continue;
            }
            Err(_) => return,
        };
        let backend = event.backend().address().as_str();
        // Who made an operator's change (an admin token's name).
        let by = event.actor();
        match event.kind() {
            HealthEventKind::Verdict {
                to,
                error: Some(error),
                ..
            } => {
                tracing::info!(backend, "health: {to:?} ({error})")
            }
            HealthEventKind::Verdict { to, .. } => tracing::info!(backend, "health: {to:?}"),
            HealthEventKind::Ejected { duration, count } => {
                tracing::warn!(backend, by, "ejected for {duration:?} (ejection #{count})")
            }
            HealthEventKind::Overloaded { duration } => {
                tracing::warn!(
                    backend,
                    "asked for a pause: no new requests for {duration:?}"
                )
            }
            HealthEventKind::Returned => tracing::info!(backend, by, "let back after ejection"),
            HealthEventKind::Share { share } => {
                tracing::info!(backend, "share of traffic now {:.0} %", share * 100.0)
            }
            HealthEventKind::Joined => tracing::info!(backend, "joined"),
            HealthEventKind::Left => tracing::info!(backend, "left; draining"),
            other => tracing::info!(backend, by, "{other:?}"),
        }
    }
}
