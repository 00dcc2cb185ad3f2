//! The admin service's write routes: what each one changes, and how its
//! query is read.
//!
//! Each route is one of the backend set's explicit operator methods
//! ([`BackendSet::drain`] and its kin), so an admin change is the same
//! change a test or a program makes, with the same event; the route adds
//! only the reading of its query and the name of who made it.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::backend::{Address, BackendSet};

/// The longest operator ejection: a day. Longer is a removal, which
/// belongs in the backend list.
const MAX_EJECTION: Duration = Duration::from_secs(24 * 3600);

/// A write route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Drain,
    Undrain,
    Weight,
    Eject,
    Readmit,
}

impl Action {
    /// The route at `path` (`/backends/drain`, ...), if it is one.
    pub(crate) fn at(path: &str) -> Option<Self> {
        Some(match path.strip_prefix("/backends/")? {
            "drain" => Action::Drain,
            "undrain" => Action::Undrain,
            "weight" => Action::Weight,
            "eject" => Action::Eject,
            "readmit" => Action::Readmit,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Action::Drain => "drain",
            Action::Undrain => "undrain",
            Action::Weight => "weight",
            Action::Eject => "eject",
            Action::Readmit => "readmit",
        }
    }

    /// The query parameters the route reads besides `backend`.
    fn parameters(self) -> &'static [&'static str] {
        match self {
            Action::Weight => &["value"],
            Action::Eject => &["for"],
            _ => &[],
        }
    }
}

/// Why a change was not made: a status and a reason for the operator.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) reason: String,
}

fn bad(reason: impl Into<String>) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        reason: reason.into(),
    }
}

/// A change done: the backend it was made to, and whether it changed
/// anything (`false`: drained already, that weight already, ...).
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) address: Address,
    pub(crate) changed: bool,
}

/// Reads `query` for `action` and makes the change on `set` as `actor`.
pub(crate) fn apply(
    set: &BackendSet,
    action: Action,
    query: Option<&str>,
    actor: &Arc<str>,
) -> Result<Done, Refusal> {
    let query = Query::parse(query.unwrap_or(""), action.parameters())?;
    let text = query
        .backend
        .as_deref()
        .ok_or_else(|| bad("backend= is missing (write backend=http://HOST:PORT)"))?;
    let address: Address = text.parse().map_err(|e| bad(format!("backend=: {e}")))?;
    if set.snapshot().get(&address).is_none() {
        return Err(Refusal {
            status: StatusCode::NOT_FOUND,
            reason: format!("no backend {address} in the set"),
        });
    }
    let actor = Some(actor);
    let changed = match action {
        Action::Drain => set.drain_by(&address, actor),
        Action::Undrain => set.undrain_by(&address, actor),
        Action::Readmit => set.readmit_by(&address, actor),
        Action::Weight => {
            let text = query
                .value
                .as_deref()
                .ok_or_else(|| bad("value= is missing (write value=N)"))?;
            let weight: u32 = text
                .parse()
                .map_err(|_| bad(format!("value=: `{text}` is not a whole number")))?;
            set.set_weight_by(&address, weight, actor)
                .map_err(|e| bad(format!("value=: {e}")))?
        }
        Action::Eject => {
            let text = query
                .duration
                .as_deref()
                .ok_or_else(|| bad("for= is missing (write e.g. for=5m)"))?;
            let duration = parse_duration(text).map_err(|why| bad(format!("for=: {why}")))?;
            set.eject_by(&address, duration, actor)
        }
    };
    // A backend removed between the lookup and the change: nothing changed.
    if !changed && set.snapshot().get(&address).is_none() {
        return Err(Refusal {
            status: StatusCode::NOT_FOUND,
            reason: format!("no backend {address} in the set"),
        });
    }
    Ok(Done { address, changed })
}

/// The parameters of a write route's query.
#[derive(Debug, Default)]
struct Query {
    backend: Option<String>,
    value: Option<String>,
    duration: Option<String>,
}

impl Query {
    /// Reads `backend` and the `allowed` others; anything else, or a
    /// parameter given twice, is refused (a typo must not pass unseen).
    fn parse(text: &str, allowed: &[&str]) -> Result<Self, Refusal> {
        let mut query = Query::default();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name).ok_or_else(|| bad("the query is not valid UTF-8"))?;
            let value = decode(value).ok_or_else(|| bad(format!("{name}= is not valid UTF-8")))?;
            let slot = match name.as_str() {
                "backend" => &mut query.backend,
                "value" if allowed.contains(&"value") => &mut query.value,
                "for" if allowed.contains(&"for") => &mut query.duration,
                other => return Err(bad(format!("unknown parameter `{other}`"))),
            };
            if slot.replace(value).is_some() {
                return Err(bad(format!("{name}= is given twice")));
            }
        }
        Ok(query)
    }
}

/// Percent-decodes a query component (`+` is a space, as browsers write
/// forms); `None` when the bytes are not UTF-8.
fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = match bytes[i] {
            b'+' => b' ',
            b'%' => {
                let digit = |at: usize| bytes.get(at).copied().and_then(hex);
                match (digit(i + 1), digit(i + 2)) {
                    (Some(high), Some(low)) => {
                        i += 2;
                        high << 4 | low
                    }
                    _ => b'%',
                }
            }
            other => other,
        };
        out.push(byte);
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Parses `30s`, `500ms`, `5m`, `2h`, `1h30m`: numbers each with a unit
/// (`ms`, `s`, `m`, `h`), above zero and at most a day.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let explain = || format!("`{text}` is not a duration (write e.g. 30s, 5m, 1h30m)");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(explain());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let number: u64 = rest[..digits].parse().map_err(|_| explain())?;
        rest = &rest[digits..];
        let unit = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let part = match &rest[..unit] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" | "min" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            _ => return Err(explain()),
        };
        rest = &rest[unit..];
        total = total.saturating_add(part);
    }
    if total.is_zero() {
        return Err("must be above zero (to end an ejection, call readmit)".into());
    }
    if total > MAX_EJECTION {
        return Err("at most 24h (for longer, take the backend out of the list)".into());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> BackendSet {
        BackendSet::new(["http://127.0.0.1:1".parse().unwrap()])
    }

    fn run(set: &BackendSet, action: Action, query: &str) -> Result<Done, Refusal> {
        apply(set, action, Some(query), &Arc::from("ops"))
    }

    #[test]
    fn routes_are_named_paths() {
        assert_eq!(Action::at("/backends/eject"), Some(Action::Eject));
        assert_eq!(Action::at("/backends/nope"), None);
        assert_eq!(Action::at("/drain"), None);
        assert_eq!(Action::Readmit.name(), "readmit");
    }

    #[test]
    fn changes_reach_the_set_and_say_whether_they_changed_it() {
        let set = set();
        let encoded = "backend=http%3A%2F%2F127.0.0.1%3A1";
        let done = run(&set, Action::Drain, encoded).unwrap();
        assert!(done.changed);
        assert!(!run(&set, Action::Drain, encoded).unwrap().changed);
        assert!(set.snapshot().backends()[0].state().is_draining());
        let done = run(&set, Action::Weight, "backend=http://127.0.0.1:1&value=7").unwrap();
        assert!(done.changed);
        assert_eq!(set.snapshot().backends()[0].weight(), 7);
        assert!(
            run(&set, Action::Eject, "backend=http://127.0.0.1:1&for=1m30s")
                .unwrap()
                .changed
        );
        assert!(
            run(&set, Action::Readmit, "backend=http://127.0.0.1:1")
                .unwrap()
                .changed
        );
        assert!(
            run(&set, Action::Undrain, "backend=http://127.0.0.1:1")
                .unwrap()
                .changed
        );
    }

    #[test]
    fn bad_queries_are_400_with_the_reason_and_strangers_404() {
        let set = set();
        let cases = [
            (Action::Drain, "", "backend= is missing"),
            (Action::Drain, "backend=ftp://x", "scheme must be http"),
            (
                Action::Drain,
                "backend=http://127.0.0.1:1&value=3",
                "unknown parameter `value`",
            ),
            (
                Action::Drain,
                "backend=http://127.0.0.1:1&backend=http://127.0.0.1:1",
                "given twice",
            ),
            (
                Action::Weight,
                "backend=http://127.0.0.1:1",
                "value= is missing",
            ),
            (
                Action::Weight,
                "backend=http://127.0.0.1:1&value=-2",
                "not a whole number",
            ),
            (
                Action::Weight,
                "backend=http://127.0.0.1:1&value=0",
                "weight must be 1 to",
            ),
            (
                Action::Weight,
                "backend=http://127.0.0.1:1&value=99999",
                "weight must be 1 to",
            ),
            (
                Action::Eject,
                "backend=http://127.0.0.1:1",
                "for= is missing",
            ),
            (
                Action::Eject,
                "backend=http://127.0.0.1:1&for=soon",
                "not a duration",
            ),
            (
                Action::Eject,
                "backend=http://127.0.0.1:1&for=0s",
                "above zero",
            ),
            (
                Action::Eject,
                "backend=http://127.0.0.1:1&for=25h",
                "at most 24h",
            ),
        ];
        for (action, query, reason) in cases {
            let refusal = run(&set, action, query).unwrap_err();
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST, "{query}");
            assert!(
                refusal.reason.contains(reason),
                "{query}: {}",
                refusal.reason
            );
        }
        let refusal = run(&set, Action::Drain, "backend=http://127.0.0.1:2").unwrap_err();
        assert_eq!(refusal.status, StatusCode::NOT_FOUND);
        assert!(
            refusal.reason.contains("no backend http://127.0.0.1:2"),
            "{}",
            refusal.reason
        );
        assert!(
            set.snapshot().backends()[0].state().is_eligible(),
            "nothing changed"
        );
    }

    #[test]
    fn queries_decode_like_a_browser_writes_them() {
        assert_eq!(decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(decode("100%").as_deref(), Some("100%"));
        assert_eq!(decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(decode("%ff"), None);
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5").is_err());
    }
}
