//! The human status page: a card per backend with its history drawn in
//! sparklines, the recent events as a timeline, and, with a token, the
//! write routes as buttons.
//!
//! One self-contained document: the style and the small script are
//! inlined (`page.css`, `page.js`), so the page needs nothing but the
//! admin listener, works offline and behind any proxy, and a phone shows
//! it in one column. The script refreshes `<main>` in place from
//! `?part=main` every 2 s; without script a `<noscript>` refresh reloads
//! the page instead.

use std::fmt::Write;

use super::history::{History, SLOT, Series};
use super::sparkline::{self, Line, Mark};
use super::status::{BackendStatus, Figures, Status};
use super::timeline::{Entry, Tone};
use crate::clock::Nanos;

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// Events shown on the timeline (`/status` has all those kept).
const SHOWN_EVENTS: usize = 30;

/// The whole page.
pub(crate) fn render(status: &Status<'_>, history: &History) -> String {
    let mut html = String::with_capacity(16 * 1024);
    html.push_str(concat!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>",
        "<title>tower-lb status</title><style>"
    ));
    html.push_str(STYLE);
    html.push_str("</style></head><body>\n");
    if status.write_routes {
        html.push_str(concat!(
            // Never submitted as a form, even before the script runs: the
            // token must not land in a URL (and in whatever logs it).
            "<form id=\"token\" class=\"token\" autocomplete=\"off\" onsubmit=\"return false\">",
            "<span class=\"enter\"><label for=\"secret\">Admin token</label></span> ",
            "<input class=\"enter\" id=\"secret\" name=\"secret\" type=\"password\" ",
            "placeholder=\"Bearer token, for drain / weight / eject\">",
            "<button class=\"enter\" type=\"submit\">Use token</button>",
            "<span class=\"leave ok\">Token entered: the buttons change the live set.</span>",
            "<button class=\"leave\" type=\"button\">Forget token</button>",
            "<span id=\"message\" role=\"status\"></span></form>\n"
        ));
    }
    html.push_str("<main id=\"main\">");
    html.push_str(&render_main(status, history));
    html.push_str("</main>\n<script>");
    html.push_str(SCRIPT);
    html.push_str("</script></body></html>\n");
    html
}

/// What the script swaps in on each refresh.
pub(crate) fn render_main(status: &Status<'_>, history: &History) -> String {
    let mut html = String::with_capacity(12 * 1024);
    let eligible = status.backends.iter().filter(|b| b.healthy).count();
    let _ = write!(
        html,
        "<header class=\"summary\"><h1>tower-lb</h1><p>{eligible} of {} backends eligible \
         \u{b7} {} \u{b7} errors {} \u{b7} p99 {} \u{b7} set version {}</p>",
        status.backends.len(),
        rate_text(status.total.requests_per_s),
        percent_text(status.total.error_rate),
        ms_text(status.total.p99_ms),
        status.version,
    );
    if let Some(queue) = &status.queue {
        let _ = write!(
            html,
            "<p class=\"queue\" data-pending=\"{}\">queue: {} of {} waiting \u{b7} {} waited \
             \u{b7} {} timed out \u{b7} {} refused full</p>",
            queue.pending,
            queue.pending,
            queue.max_pending,
            queue.waited_total,
            queue.timeouts_total,
            queue.rejected_total,
        );
    }
    html.push_str("<div class=\"charts total\">");
    charts(&mut html, history.total(), &status.total, &[]);
    html.push_str("</div></header>\n<section class=\"backends\">\n");
    for backend in &status.backends {
        card(&mut html, backend, status, history);
    }
    html.push_str("</section>\n");
    timeline(&mut html, &status.events);
    html.push_str(
        "<footer><a data-rel=\"status\" href=\"status\">/status (JSON)</a> \u{b7} \
         <a data-rel=\"metrics\" href=\"metrics\">/metrics</a> \u{b7} \
         history: 5 minutes in 2 s slots</footer>",
    );
    html
}

fn card(html: &mut String, b: &BackendStatus, status: &Status<'_>, history: &History) {
    let (class, word) = state_text(b);
    let url = escape(&b.url);
    let _ = write!(
        html,
        "<article class=\"backend s-{}\" data-backend=\"{url}\" data-state=\"{}\">\
         <h2><span class=\"url\">{url}{tls}{tier}</span><span class=\"badge {class}\">{word}</span></h2>",
        b.state,
        b.state,
        tls = if b.tls {
            " <span class=\"badge info\" title=\"spoken to over TLS\">TLS</span>"
        } else {
            ""
        },
        tier = if b.priority > 0 {
            format!(
                " <span class=\"badge info\" title=\"priority tier: a backup\">tier {}</span>",
                b.priority
            )
        } else {
            String::new()
        },
    );
    let weight = if (b.effective_weight - f64::from(b.weight)).abs() > 0.01 {
        format!("{:.1} of {}", b.effective_weight, b.weight)
    } else {
        b.weight.to_string()
    };
    let source = if b.sources.is_empty() {
        "\u{2013}".to_owned()
    } else {
        b.sources.join(", ")
    };
    let facts: [(&str, String); 8] = [
        ("verdict", b.verdict.to_owned()),
        ("weight", weight),
        ("share", format!("{:.0} %", b.share * 100.0)),
        ("in flight", b.in_flight.to_string()),
        (
            "traffic, 1 min",
            format!("{:.0} %", b.recent_traffic * 100.0),
        ),
        ("requests", b.requests.to_string()),
        ("failures", b.failures.to_string()),
        ("source", source),
    ];
    let penalty = b
        .overload_remaining_ms
        .map(|ms| ("overload penalty", format!("{} s left", ms.div_ceil(1000))));
    let sticky = (b.sticky_kept + b.sticky_issued + b.sticky_reissued > 0).then(|| {
        (
            "sticky",
            format!(
                "{} kept \u{b7} {} new \u{b7} {} moved here",
                b.sticky_kept, b.sticky_issued, b.sticky_reissued
            ),
        )
    });
    html.push_str("<dl class=\"facts\">");
    for (name, value) in facts.into_iter().chain(penalty).chain(sticky) {
        let _ = write!(
            html,
            "<div><dt>{name}</dt><dd>{}</dd></div>",
            escape(&value)
        );
    }
    html.push_str("</dl>");
    if let Some(error) = &b.last_probe_error {
        let _ = write!(
            html,
            "<p class=\"problem down\">last probe: {}</p>",
            escape(error)
        );
    }
    let marks = marks(status, &b.url, history.last());
    html.push_str("<div class=\"charts\">");
    match history.of(b.id) {
        Some(series) => charts(html, series, &b.figures, &marks),
        None => charts(html, &Series::default(), &b.figures, &marks),
    }
    html.push_str("</div>");
    if status.write_routes {
        let _ = write!(html, "<div class=\"actions\" data-backend=\"{url}\">");
        let toggle = if b.state == "draining" {
            ("undrain", "Undrain")
        } else {
            ("drain", "Drain")
        };
        let eject = if b.ejected {
            ("readmit", "Readmit")
        } else {
            ("eject", "Eject\u{2026}")
        };
        for (action, label) in [toggle, ("weight", "Weight\u{2026}"), eject] {
            let _ = write!(
                html,
                "<button type=\"button\" data-action=\"{action}\" data-weight=\"{}\">{label}</button>",
                b.weight
            );
        }
        html.push_str("</div>");
    }
    html.push_str("</article>\n");
}

/// Requests per second, error rate, and p50 with p99.
fn charts(html: &mut String, series: &Series, figures: &Figures, marks: &[Mark]) {
    let figure = |html: &mut String, caption: &str, value: String| {
        let _ = write!(
            html,
            "<figure><figcaption><span>{caption}</span><b>{value}</b></figcaption>"
        );
    };
    figure(html, "req/s", rate_text(figures.requests_per_s));
    let rate = [Line {
        ring: &series.rate,
        class: "rate",
    }];
    sparkline::draw(
        html,
        "rate",
        "requests per second, last 5 minutes",
        &rate,
        1.0,
        true,
        marks,
    );
    html.push_str("</figure>");
    figure(html, "errors", percent_text(figures.error_rate));
    let errors = [Line {
        ring: &series.errors,
        class: "errors",
    }];
    sparkline::draw(
        html,
        "errors",
        "error rate, last 5 minutes",
        &errors,
        0.05,
        false,
        marks,
    );
    html.push_str("</figure>");
    figure(
        html,
        "p50 / p99",
        format!("{} / {}", ms_text(figures.p50_ms), ms_text(figures.p99_ms)),
    );
    let latency = [
        Line {
            ring: &series.p99,
            class: "p99",
        },
        Line {
            ring: &series.p50,
            class: "p50",
        },
    ];
    sparkline::draw(
        html,
        "latency",
        "p50 and p99 latency, last 5 minutes",
        &latency,
        1.0,
        false,
        marks,
    );
    html.push_str("</figure>");
}

/// The events of backend `url` as marks on its sparklines.
fn marks(status: &Status<'_>, url: &str, last: Option<Nanos>) -> Vec<Mark> {
    let Some(last) = last else {
        return Vec::new();
    };
    let slot = SLOT.as_nanos() as f64;
    status
        .events
        .iter()
        .filter(|e| e.backend == url)
        .map(|e| Mark {
            slots_ago: ((last as f64 - e.at as f64) / slot) as f32,
            tone: e.tone,
            title: e.text.clone(),
        })
        .collect()
}

fn timeline(html: &mut String, events: &[&Entry]) {
    html.push_str("<section class=\"timeline\"><h2>Recent events</h2>");
    if events.is_empty() {
        html.push_str(
            "<p class=\"muted\">Nothing has happened since the admin service started.</p>",
        );
    } else {
        html.push_str("<ol>");
        for event in events.iter().take(SHOWN_EVENTS) {
            let (iso, clock) = utc(event.at_ms);
            let _ = write!(
                html,
                "<li class=\"{}\" data-event=\"{}\"><time datetime=\"{iso}\" data-ms=\"{}\">{clock}</time> \
                 <span class=\"url\">{}</span> <span class=\"text\">{}</span>",
                event.tone.class(),
                event.event,
                event.at_ms,
                escape(&event.backend),
                escape(&event.text),
            );
            if let Some(by) = &event.by {
                let _ = write!(html, " <span class=\"by\">by {}</span>", escape(by));
            }
            html.push_str("</li>");
        }
        html.push_str("</ol>");
    }
    html.push_str("</section>\n");
}

fn state_text(b: &BackendStatus) -> (&'static str, String) {
    match b.state {
        "removed" => ("warn", format!("removed, {} in flight", b.in_flight)),
        "draining" => ("warn", format!("draining, {} in flight", b.in_flight)),
        "ejected" => match b.overload_remaining_ms {
            // Paused as the backend asked: deliberate, not a failure.
            Some(ms) => ("warn", format!("overloaded, {} s left", ms.div_ceil(1000))),
            None => {
                let seconds = b.ejection_remaining_ms.unwrap_or(0).div_ceil(1000);
                ("down", format!("ejected, {seconds} s left"))
            }
        },
        "unhealthy" => ("down", "unhealthy".to_owned()),
        "ramping" => ("warn", format!("ramping, {:.0} %", b.share * 100.0)),
        _ => (Tone::Good.class(), "healthy".to_owned()),
    }
}

fn rate_text(rate: f64) -> String {
    if rate >= 100.0 {
        format!("{rate:.0}/s")
    } else {
        format!("{rate:.1}/s")
    }
}

fn percent_text(rate: Option<f64>) -> String {
    rate.map_or_else(|| "\u{2013}".to_owned(), |r| format!("{:.1} %", r * 100.0))
}

fn ms_text(ms: Option<f64>) -> String {
    match ms {
        None => "\u{2013}".to_owned(),
        Some(ms) if ms >= 1000.0 => format!("{:.1} s", ms / 1000.0),
        Some(ms) if ms >= 10.0 => format!("{ms:.0} ms"),
        Some(ms) => format!("{ms:.1} ms"),
    }
}

/// `ms` since the epoch as an ISO 8601 instant and as `HH:MM:SS UTC` (the
/// script shows local time instead).
fn utc(ms: u64) -> (String, String) {
    let seconds = ms / 1000;
    let (h, m, s) = (seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    // Howard Hinnant's days-to-civil, for days since 1970-01-01.
    let z = (seconds / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z"),
        format!("{h:02}:{m:02}:{s:02} UTC"),
    )
}

/// Escapes text for HTML (probe errors can hold any bytes a backend sent).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(
            utc(0),
            ("1970-01-01T00:00:00Z".into(), "00:00:00 UTC".into())
        );
        // 2024-02-29 13:05:09 UTC, a leap day.
        assert_eq!(utc(1_709_211_909_000).0, "2024-02-29T13:05:09Z");
    }

    #[test]
    fn figures_read_short() {
        assert_eq!(rate_text(0.0), "0.0/s");
        assert_eq!(rate_text(1234.4), "1234/s");
        assert_eq!(percent_text(Some(0.0123)), "1.2 %");
        assert_eq!(percent_text(None), "\u{2013}");
        assert_eq!(ms_text(Some(2.345)), "2.3 ms");
        assert_eq!(ms_text(Some(2500.0)), "2.5 s");
    }
}
