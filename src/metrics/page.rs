//! The human status page: one table, readable at a glance, no JavaScript.

use std::fmt::Write;

use super::status::{BackendStatus, Status};

/// Renders the status as an HTML page that refreshes itself every 2 s.
pub(crate) fn render(status: &Status) -> String {
    let healthy = status.backends.iter().filter(|b| b.healthy).count();
    let mut html = String::with_capacity(4096);
    html.push_str(concat!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"refresh\" content=\"2\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>tower-lb status</title><style>",
        "body{font:14px system-ui,sans-serif;margin:2em;color:#222}",
        "table{border-collapse:collapse}th,td{padding:.4em .8em;text-align:left;border-bottom:1px solid #ddd}",
        "th{font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}",
        ".ok{color:#176b2c}.down{color:#b3261e}.warn{color:#8a5a00}",
        ".tls{font-size:.75em;border:1px solid #3b6fd4;color:#3b6fd4;padding:0 .2em}",
        ".bar{background:#eee;width:12em;height:.9em}.bar div{background:#3b6fd4;height:100%}",
        "</style></head><body>\n"
    ));
    let _ = write!(
        html,
        "<h1>tower-lb</h1>\n<p>{healthy} of {} backends eligible \u{b7} set version {}</p>\n",
        status.backends.len(),
        status.version
    );
    html.push_str(concat!(
        "<table>\n<tr><th>backend</th><th>source</th><th>health</th><th>recent traffic</th>",
        "<th>weight</th><th>in flight</th><th>requests</th><th>failures</th>",
        "<th>latency</th><th>last probe error</th></tr>\n"
    ));
    for backend in &status.backends {
        row(&mut html, backend);
    }
    html.push_str("</table>\n<p><a href=\"status\">JSON</a> \u{b7} <a href=\"metrics\">metrics</a></p>\n</body></html>\n");
    html
}

fn row(html: &mut String, b: &BackendStatus) {
    let (class, health) = if b.draining {
        ("warn", "draining".to_owned())
    } else if b.ejected {
        let seconds = b.ejection_remaining_ms.unwrap_or(0) / 1000;
        ("down", format!("ejected ({seconds} s left)"))
    } else if !b.healthy {
        ("down", b.verdict.to_owned())
    } else if b.share < 1.0 {
        ("warn", format!("ramping ({:.0} %)", b.share * 100.0))
    } else {
        ("ok", "healthy".to_owned())
    };
    let percent = b.recent_traffic * 100.0;
    let tls = if b.tls {
        " <span class=\"tls\" title=\"spoken to over TLS\">TLS</span>"
    } else {
        ""
    };
    let latency = b
        .latency_ms
        .map_or_else(|| "\u{2013}".to_owned(), |ms| format!("{ms:.1} ms"));
    let weight = if (b.effective_weight - f64::from(b.weight)).abs() > 0.01 {
        format!("{:.1} of {}", b.effective_weight, b.weight)
    } else {
        b.weight.to_string()
    };
    let _ = writeln!(
        html,
        "<tr><td>{}{tls}</td><td>{}</td><td class=\"{class}\">{health}</td>\
         <td><div class=\"bar\" title=\"{percent:.0} %\"><div style=\"width:{percent:.1}%\"></div></div> {percent:.0} %</td>\
         <td class=\"n\">{weight}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{latency}</td><td>{}</td></tr>",
        escape(&b.url),
        escape(&b.sources.join(", ")),
        b.in_flight,
        b.requests,
        b.failures,
        escape(b.last_probe_error.as_deref().unwrap_or("")),
    );
}

/// Escapes text for HTML (probe errors can hold any bytes a backend sent).
fn escape(text: &str) -> String {
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
}
