//! The outcomes as a markdown table and as an SVG chart.

use std::fmt::Write;
use std::time::Duration;

use super::run::{Layers, Outcome, strategies};

/// The markdown table: a row per scenario, strategy and layers.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| scenario | strategy | layers | p50 ms | p99 ms | p99.9 ms | errors % | retries | ejections | shares % |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for o in outcomes {
        let shares: Vec<String> = o
            .shares()
            .iter()
            .map(|s| format!("{:.0}", s * 100.0))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {} |",
            o.scenario,
            o.strategy,
            o.layers.name(),
            millis(o.percentile(0.5)),
            millis(o.percentile(0.99)),
            millis(o.percentile(0.999)),
            o.error_rate() * 100.0,
            o.retries,
            o.ejections,
            shares.join("/"),
        );
    }
    out
}

/// The summary: p99 (ms) per scenario and strategy, with the error rate
/// where there were errors; a row for each set of layers.
pub fn summary(outcomes: &[Outcome]) -> String {
    let strategies = strategies();
    let mut out = String::from("| scenario | layers |");
    for strategy in &strategies {
        let _ = write!(out, " {strategy} |");
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---:|".repeat(strategies.len()));
    out.push('\n');
    let mut scenarios: Vec<&str> = Vec::new();
    for o in outcomes {
        if !scenarios.contains(&o.scenario) {
            scenarios.push(o.scenario);
        }
    }
    for scenario in scenarios {
        for layers in Layers::ALL {
            let _ = write!(out, "| {scenario} | {} |", layers.name());
            for strategy in &strategies {
                let found = outcomes.iter().find(|o| {
                    o.scenario == scenario && o.strategy == *strategy && o.layers == layers
                });
                match found {
                    Some(o) if o.error_rate() >= 0.0005 => {
                        let _ = write!(
                            out,
                            " {} ({:.1} % err) |",
                            millis(o.percentile(0.99)),
                            o.error_rate() * 100.0
                        );
                    }
                    Some(o) => {
                        let _ = write!(out, " {} |", millis(o.percentile(0.99)));
                    }
                    None => out.push_str(" |"),
                }
            }
            out.push('\n');
        }
    }
    out
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

const PANEL_W: f64 = 320.0;
const PANEL_H: f64 = 230.0;
const COLUMNS: usize = 3;
/// Room for the title and the legend.
const HEADER: f64 = 50.0;
/// The chart's latency axis, log scale: 10 ms to 20 s.
const LOW: f64 = 0.010;
const HIGH: f64 = 20.0;

/// A strategy's name where the chart has little room.
fn short(strategy: &str) -> &str {
    match strategy {
        "round-robin" => "rr",
        "weighted-round-robin" => "wrr",
        "least-connections" => "lc",
        "ip-hash" => "hash",
        "random" => "rand",
        other => other,
    }
}

/// The chart: a panel per scenario; in each, per strategy, a bar from p50
/// to p99 and a whisker to p99.9, without (blue) and with (orange) the
/// health layers, and the error rate in red where there are errors. Log
/// scale from 10 ms to 20 s.
pub fn svg(outcomes: &[Outcome]) -> String {
    let mut scenarios: Vec<&str> = Vec::new();
    for o in outcomes {
        if !scenarios.contains(&o.scenario) {
            scenarios.push(o.scenario);
        }
    }
    let rows = scenarios.len().div_ceil(COLUMNS).max(1);
    let width = PANEL_W * COLUMNS as f64;
    let height = PANEL_H * rows as f64 + HEADER;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="white"/>
<text x="10" y="18" font-size="13">Latency per strategy: bar p50 to p99, whisker to p99.9 (log scale); red: share of requests failed</text>
<rect x="10" y="28" width="10" height="10" fill="#4477aa"/><text x="24" y="37">balancer alone</text>
<rect x="120" y="28" width="10" height="10" fill="#ee7733"/><text x="134" y="37">+ passive health, failover, slow start</text>"##
    );
    for (k, scenario) in scenarios.iter().enumerate() {
        let x0 = PANEL_W * (k % COLUMNS) as f64;
        let y0 = HEADER + PANEL_H * (k / COLUMNS) as f64;
        panel(&mut out, outcomes, scenario, x0, y0);
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, outcomes: &[Outcome], scenario: &str, x0: f64, y0: f64) {
    let (left, top, bottom) = (x0 + 44.0, y0 + 22.0, y0 + PANEL_H - 30.0);
    let right = x0 + PANEL_W - 10.0;
    let y = |seconds: f64| {
        let clamped = seconds.clamp(LOW, HIGH);
        bottom - (clamped / LOW).ln() / (HIGH / LOW).ln() * (bottom - top)
    };
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" font-size="12" font-weight="bold">{scenario}</text>"##,
        left,
        y0 + 14.0
    );
    for (value, label) in [(0.01, "10ms"), (0.1, "100ms"), (1.0, "1s"), (10.0, "10s")] {
        let yy = y(value);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{right}" y2="{yy:.1}" stroke="#dddddd"/><text x="{}" y="{:.1}" text-anchor="end" fill="#666666">{label}</text>"##,
            left - 4.0,
            yy + 4.0
        );
    }
    let strategies = strategies();
    let step = (right - left) / strategies.len() as f64;
    for (i, strategy) in strategies.iter().enumerate() {
        let cx = left + step * (i as f64 + 0.5);
        let _ = writeln!(
            out,
            r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            bottom + 14.0,
            short(strategy)
        );
        for (j, layers) in Layers::ALL.iter().enumerate() {
            let Some(o) = outcomes
                .iter()
                .find(|o| o.scenario == scenario && o.strategy == *strategy && o.layers == *layers)
            else {
                continue;
            };
            let x = cx + if j == 0 { -7.0 } else { 7.0 };
            let color = if j == 0 { "#4477aa" } else { "#ee7733" };
            let (p50, p99, p999) = (
                o.percentile(0.5).as_secs_f64(),
                o.percentile(0.99).as_secs_f64(),
                o.percentile(0.999).as_secs_f64(),
            );
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{color}" stroke-width="1.5"/><rect x="{:.1}" y="{:.1}" width="10" height="{:.1}" fill="{color}"><title>{scenario} {strategy} {}: p50 {} ms, p99 {} ms, p99.9 {} ms, errors {:.2} %</title></rect>"##,
                y(p99),
                y(p999),
                x - 5.0,
                y(p99),
                (y(p50) - y(p99)).max(1.5),
                layers.name(),
                o.percentile(0.5).as_millis(),
                o.percentile(0.99).as_millis(),
                o.percentile(0.999).as_millis(),
                o.error_rate() * 100.0,
            );
            if o.error_rate() >= 0.0005 {
                let (tx, ty) = (x + 3.0, y(p999) - 3.0);
                let _ = writeln!(
                    out,
                    r##"<text x="{tx:.1}" y="{ty:.1}" font-size="9" fill="#cc3311" transform="rotate(-90 {tx:.1} {ty:.1})">{:.1}% err</text>"##,
                    o.error_rate() * 100.0
                );
            }
        }
    }
}
