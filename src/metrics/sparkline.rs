//! Sparklines: a history ring drawn as a small inline SVG.
//!
//! Inline SVG because the page must stand alone (no script library, no
//! request for an asset) and stay sharp on any screen. The x axis is the
//! five minutes of the rings, one unit per slot, now at the right edge; a
//! backend seen for less than that starts further right. The y axis runs
//! from 0 to the window's largest value (or `floor`, so that noise on an
//! idle backend does not fill the chart). Slots without data (NaN) break
//! the line rather than draw a zero that did not happen.

use std::fmt::Write;

use super::history::{Ring, SLOTS};
use super::timeline::Tone;

/// The drawing's height in SVG units (its width is [`SLOTS`]).
const HEIGHT: f32 = 32.0;

/// A line to draw, with its CSS class.
pub(crate) struct Line<'a> {
    pub(crate) ring: &'a Ring,
    pub(crate) class: &'static str,
}

/// A moment to mark: slots back from the right edge, a tone, a title.
pub(crate) struct Mark {
    pub(crate) slots_ago: f32,
    pub(crate) tone: Tone,
    pub(crate) title: String,
}

/// Appends an `<svg class="spark" data-series="{series}">` drawing of
/// `lines` on a common scale. The first line is filled beneath when
/// `area` is set.
pub(crate) fn draw(
    out: &mut String,
    series: &str,
    label: &str,
    lines: &[Line<'_>],
    floor: f32,
    area: bool,
    marks: &[Mark],
) {
    let top = lines
        .iter()
        .flat_map(|line| line.ring.values())
        .filter(|v| v.is_finite())
        .fold(floor, f32::max);
    let _ = write!(
        out,
        "<svg class=\"spark\" data-series=\"{series}\" viewBox=\"0 0 {SLOTS} {HEIGHT}\" \
         preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{label}\">\
         <line class=\"base\" x1=\"0\" y1=\"{y}\" x2=\"{SLOTS}\" y2=\"{y}\"/>",
        y = HEIGHT - 0.5,
    );
    for mark in marks {
        let x = SLOTS as f32 - mark.slots_ago;
        if !(0.0..=SLOTS as f32).contains(&x) {
            continue;
        }
        let _ = write!(
            out,
            "<line class=\"mark {}\" x1=\"{x:.1}\" y1=\"0\" x2=\"{x:.1}\" y2=\"{HEIGHT}\"><title>{}</title></line>",
            mark.tone.class(),
            super::page::escape(&mark.title),
        );
    }
    for (index, line) in lines.iter().enumerate() {
        let path = path(line.ring, top);
        if path.is_empty() {
            continue;
        }
        if area && index == 0 {
            let _ = write!(
                out,
                "<path class=\"area {}\" d=\"{}\"/>",
                line.class,
                area_path(line.ring, top)
            );
        }
        let _ = write!(out, "<path class=\"line {}\" d=\"{path}\"/>", line.class);
    }
    out.push_str("</svg>");
}

/// Where value `i` of a ring of `len` values sits.
fn x(i: usize, len: usize) -> f32 {
    (SLOTS - len + i) as f32 + 0.5
}

fn y(value: f32, top: f32) -> f32 {
    let inner = HEIGHT - 2.0;
    let scaled = if top > 0.0 { value / top } else { 0.0 };
    HEIGHT - 1.0 - scaled.clamp(0.0, 1.0) * inner
}

/// The line through a ring's values, broken where a slot has none.
fn path(ring: &Ring, top: f32) -> String {
    let len = ring.len();
    let mut d = String::new();
    let mut pen_down = false;
    for (i, value) in ring.values().enumerate() {
        if !value.is_finite() {
            pen_down = false;
            continue;
        }
        let command = if pen_down { 'L' } else { 'M' };
        let _ = write!(d, "{command}{:.1} {:.1}", x(i, len), y(value, top));
        pen_down = true;
    }
    d
}

/// The area beneath a ring with no gaps (a rate: zero is a value).
fn area_path(ring: &Ring, top: f32) -> String {
    let len = ring.len();
    let mut d = format!("M{:.1} {HEIGHT}", x(0, len));
    for (i, value) in ring.values().enumerate() {
        let value = if value.is_finite() { value } else { 0.0 };
        let _ = write!(d, "L{:.1} {:.1}", x(i, len), y(value, top));
    }
    let _ = write!(d, "L{:.1} {HEIGHT}Z", x(len.saturating_sub(1), len));
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(values: &[f32]) -> Ring {
        let mut ring = Ring::default();
        for &v in values {
            ring.push(v);
        }
        ring
    }

    #[test]
    fn lines_sit_at_the_right_edge_and_break_at_gaps() {
        let ring = ring(&[1.0, 2.0, f32::NAN, 2.0]);
        let d = path(&ring, 2.0);
        // Four values end at the right edge: x = 146.5 .. 149.5.
        assert_eq!(d, "M146.5 16.0L147.5 1.0M149.5 1.0");
        let mut svg = String::new();
        let line = Line {
            ring: &ring,
            class: "rate",
        };
        let mark = Mark {
            slots_ago: 2.0,
            tone: Tone::Bad,
            title: "ejected <5 min>".into(),
        };
        draw(
            &mut svg,
            "rate",
            "requests per second",
            &[line],
            1.0,
            true,
            &[mark],
        );
        assert!(
            svg.starts_with("<svg class=\"spark\" data-series=\"rate\""),
            "{svg}"
        );
        assert!(
            svg.contains("<path class=\"area rate\" d=\"M146.5 32L"),
            "{svg}"
        );
        assert!(
            svg.contains("<line class=\"mark down\" x1=\"148.0\""),
            "{svg}"
        );
        assert!(svg.contains("ejected &lt;5 min&gt;"), "{svg}");
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn the_floor_keeps_idle_noise_flat() {
        let ring = ring(&[0.1, 0.1]);
        assert_eq!(path(&ring, 10.0), "M148.5 30.7L149.5 30.7");
        assert_eq!(path(&Ring::default(), 1.0), "");
    }
}
