//! The recent health events, kept for the status page and `/status`.
//!
//! [`HealthEvent`]s are a broadcast: whoever is not listening when one is
//! sent never sees it. The admin service listens from its creation and
//! keeps the newest [`KEEP`], each with the time it was seen, so that the
//! page can tell what happened before it was opened.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::backend::{HealthEvent, HealthEventKind, Verdict};
use crate::clock::Nanos;

/// Events kept.
pub(crate) const KEEP: usize = 100;

/// How an event reads: what colour the page gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Tone {
    /// Back to health.
    Good,
    /// Out of rotation against the backend's will (probes, ejections).
    Bad,
    /// Out of rotation by choice, or less traffic (drains, ramp-down).
    Warn,
    /// Membership and weights.
    Info,
}

impl Tone {
    pub(crate) fn class(self) -> &'static str {
        match self {
            Tone::Good => "ok",
            Tone::Bad => "down",
            Tone::Warn => "warn",
            Tone::Info => "info",
        }
    }
}

/// One event as the views show it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Entry {
    /// Wall-clock time it was seen, ms since the Unix epoch.
    pub(crate) at_ms: u64,
    /// The crate's clock, to place it on the sparklines.
    #[serde(skip)]
    pub(crate) at: Nanos,
    pub(crate) backend: String,
    /// A stable name of the kind: `joined`, `left`, `verdict`, `ejected`,
    /// `returned`, `drained`, `undrained`, `reweighted`, `share`, `missed`.
    pub(crate) event: &'static str,
    /// What happened, in words.
    pub(crate) text: String,
    /// Who made the change (an admin token's name), for an operator's.
    pub(crate) by: Option<String>,
    pub(crate) tone: Tone,
}

/// The newest events, newest last.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    entries: VecDeque<Entry>,
}

impl Timeline {
    /// Keeps `event`, seen at `at`.
    pub(crate) fn push(&mut self, event: &HealthEvent, at: Nanos) {
        let (name, tone, text) = describe(event.kind());
        self.keep(Entry {
            at_ms: wall_ms(),
            at,
            backend: event.backend().address().as_str().to_owned(),
            event: name,
            text,
            by: event.actor().map(str::to_owned),
            tone,
        });
    }

    /// Notes that `count` events came too fast to keep.
    pub(crate) fn missed(&mut self, count: u64, at: Nanos) {
        self.keep(Entry {
            at_ms: wall_ms(),
            at,
            backend: String::new(),
            event: "missed",
            text: format!("{count} events came too fast to keep"),
            by: None,
            tone: Tone::Warn,
        });
    }

    fn keep(&mut self, entry: Entry) {
        if self.entries.len() == KEEP {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// The events kept, newest first.
    pub(crate) fn newest_first(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().rev()
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The kind's stable name, its tone and a sentence.
fn describe(kind: &HealthEventKind) -> (&'static str, Tone, String) {
    match kind {
        HealthEventKind::Joined => ("joined", Tone::Info, "joined the set".into()),
        HealthEventKind::Left => ("left", Tone::Warn, "left the set; draining".into()),
        HealthEventKind::Verdict { to, error, .. } => {
            let (tone, text) = match to {
                Verdict::Healthy => (Tone::Good, "probes pass: healthy".to_owned()),
                Verdict::Unhealthy => (Tone::Bad, "probes fail: unhealthy".to_owned()),
                _ => (Tone::Info, "verdict unknown".to_owned()),
            };
            let text = match error {
                Some(error) => format!("{text} ({error})"),
                None => text,
            };
            ("verdict", tone, text)
        }
        HealthEventKind::Ejected { duration, count } => {
            let text = if *count == 0 {
                format!("ejected for {} by an operator", duration_text(*duration))
            } else {
                format!(
                    "ejected for {} (outlier, ejection #{count})",
                    duration_text(*duration)
                )
            };
            ("ejected", Tone::Bad, text)
        }
        HealthEventKind::Returned => ("returned", Tone::Good, "back in rotation".into()),
        HealthEventKind::Drained => ("drained", Tone::Warn, "drained: no new requests".into()),
        HealthEventKind::Undrained => ("undrained", Tone::Good, "undrained".into()),
        HealthEventKind::Reweighted { from, to } => (
            "reweighted",
            Tone::Info,
            format!("weight {from} \u{2192} {to}"),
        ),
        HealthEventKind::Share { share } => {
            let tone = if *share >= 1.0 {
                Tone::Good
            } else {
                Tone::Warn
            };
            let text = format!("share of traffic now {:.0} %", share * 100.0);
            ("share", tone, text)
        }
        // Kinds added later read as their debug form until described here.
        #[allow(unreachable_patterns)]
        other => ("other", Tone::Info, format!("{other:?}")),
    }
}

/// `90s` as "1 min 30 s", `300ms` as "300 ms": how the views say a duration.
pub(crate) fn duration_text(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds == 0 {
        return format!("{} ms", duration.as_millis());
    }
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, 0, _) => format!("{h} h"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::BackendSet;

    #[test]
    fn events_are_kept_newest_first_up_to_the_cap() {
        let set = BackendSet::new(["http://127.0.0.1:1".parse().unwrap()]);
        let mut events = set.events();
        let address = "http://127.0.0.1:1".parse().unwrap();
        let mut timeline = Timeline::default();
        for _ in 0..(KEEP / 2 + 1) {
            set.drain(&address);
            set.undrain(&address);
        }
        let mut at = 0;
        while let Ok(event) = events.try_recv() {
            at += 1;
            timeline.push(&event, at);
        }
        let kept: Vec<&Entry> = timeline.newest_first().collect();
        assert_eq!(kept.len(), KEEP);
        assert_eq!(kept[0].event, "undrained");
        assert_eq!(kept[0].at, at);
        assert_eq!(kept[1].event, "drained");
        assert_eq!(kept[1].tone, Tone::Warn);
        assert_eq!(kept[0].backend, "http://127.0.0.1:1");
    }

    #[test]
    fn kinds_read_as_sentences() {
        let verdict = HealthEventKind::Verdict {
            from: Verdict::Healthy,
            to: Verdict::Unhealthy,
            error: Some(Arc::from("status 500")),
        };
        assert_eq!(
            describe(&verdict),
            (
                "verdict",
                Tone::Bad,
                "probes fail: unhealthy (status 500)".to_owned()
            )
        );
        let ejected = HealthEventKind::Ejected {
            duration: Duration::from_secs(300),
            count: 0,
        };
        assert_eq!(describe(&ejected).2, "ejected for 5 min by an operator");
        let weight = HealthEventKind::Reweighted { from: 1, to: 5 };
        assert_eq!(describe(&weight).2, "weight 1 \u{2192} 5");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        let cases = [
            (Duration::from_millis(300), "300 ms"),
            (Duration::from_secs(42), "42 s"),
            (Duration::from_secs(300), "5 min"),
            (Duration::from_secs(90), "1 min 30 s"),
            (Duration::from_secs(7200), "2 h"),
            (Duration::from_secs(5400), "1 h 30 min"),
        ];
        for (duration, text) in cases {
            assert_eq!(duration_text(duration), text);
        }
    }
}
