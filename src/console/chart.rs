//! Server-rendered SVG charts for the operations page: no script, no
//! library, nothing from another host. Every value drawn is a number or a
//! fixed state name, and each bar carries its count in `data-count` and a
//! `<title>` (what a screen reader or a hover shows); the page also gives
//! the same numbers as a table.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::store::StateTimeline;

/// The states drawn, bottom to top, with their colours.
pub const STATES: [(&str, &str); 3] = [
    ("archived", "#1a7f37"),
    ("not_relevant", "#6e7781"),
    ("quarantined", "#bc4c00"),
];

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;

fn clock(ms: i64, with_day: bool) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| {
            t.format(if with_day { "%m-%d %H:%M" } else { "%H:%M" })
                .to_string()
        })
        .unwrap_or_default()
}

/// A round step for the value axis: 1, 2 or 5 × 10ⁿ, about four lines.
fn step(max: i64) -> i64 {
    let rough = (max as f64 / 4.0).max(1.0);
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * magnitude);
    step as i64
}

/// Stacked bars of messages per bucket and state (`svg#timeline`; each
/// `rect` has `data-bucket`, `data-state`, `data-count`).
pub fn timeline(t: &StateTimeline) -> String {
    let n = t.buckets.len().max(1);
    let max = t
        .buckets
        .iter()
        .map(|b| b.values().sum::<i64>())
        .max()
        .unwrap_or(0);
    let step = step(max);
    let top = ((max + step - 1) / step).max(1) * step;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let slot = (WIDTH - LEFT) / n as f64;
    let bar = (slot * 0.8).max(1.0);
    let y_of = |v: i64| TOP + plot_h - plot_h * v as f64 / top as f64;
    let with_day = t.bucket_ms * n as i64 > 86_400_000;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" aria-labelledby="timeline-title"><title id="timeline-title">Messages per {} min by the state they reached, {} to {} UTC</title>"#,
        t.bucket_ms / 60_000,
        clock(t.since_ms, true),
        clock(t.since_ms + t.bucket_ms * n as i64, true),
    );
    let mut v = 0;
    while v <= top {
        let y = y_of(v);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{WIDTH}" y1="{y:.1}" y2="{y:.1}" stroke="#d0d7de" stroke-width="1"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#57606a">{v}</text>"##,
            LEFT - 6.0,
            y + 4.0,
        );
        v += step;
    }
    for (i, b) in t.buckets.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
        let start = t.since_ms + t.bucket_ms * i as i64;
        let mut base = 0;
        for (state, colour) in STATES {
            let count = b.get(state).copied().unwrap_or(0);
            if count == 0 {
                continue;
            }
            let (y0, y1) = (y_of(base), y_of(base + count));
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{y1:.1}" width="{bar:.1}" height="{:.1}" fill="{colour}" data-bucket="{i}" data-state="{state}" data-count="{count}"><title>{} UTC: {count} {state}</title></rect>"#,
                y0 - y1,
                clock(start, with_day),
            );
            base += count;
        }
        let every = (n / 8).max(1);
        if i % every == 0 {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#57606a">{}</text>"##,
                x + bar / 2.0,
                HEIGHT - 8.0,
                clock(start, with_day),
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// Horizontal bars of every message by state (`svg#totals`; each `rect`
/// has `data-state`, `data-count`).
pub fn totals(t: &StateTimeline) -> String {
    let max = t.totals.values().copied().max().unwrap_or(0).max(1);
    let row = 28.0;
    let height = row * STATES.len() as f64 + 8.0;
    let label = 120.0;
    let width = WIDTH - label - 80.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="totals" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" aria-labelledby="totals-title"><title id="totals-title">Every message recorded, by state</title>"#
    );
    for (i, (state, colour)) in STATES.iter().enumerate() {
        let count = t.totals.get(*state).copied().unwrap_or(0);
        let y = 4.0 + row * i as f64;
        let w = width * count as f64 / max as f64;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end" fill="#24292f">{state}</text><rect x="{label}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{colour}" data-state="{state}" data-count="{count}"><title>{count} {state}</title></rect><text x="{:.1}" y="{:.1}" font-size="12" fill="#24292f">{count}</text>"##,
            label - 8.0,
            y + 15.0,
            row - 8.0,
            label + w + 6.0,
            y + 15.0,
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn steps_are_round() {
        assert_eq!(step(0), 1);
        assert_eq!(step(3), 1);
        assert_eq!(step(9), 5);
        assert_eq!(step(40), 10);
        assert_eq!(step(1000), 500);
    }

    #[test]
    fn every_count_is_drawn_once() {
        let mut b = BTreeMap::new();
        b.insert("archived".to_owned(), 3);
        b.insert("quarantined".to_owned(), 2);
        let t = StateTimeline {
            since_ms: 0,
            bucket_ms: 3_600_000,
            buckets: vec![BTreeMap::new(), b.clone()],
            totals: b,
        };
        let svg = timeline(&t);
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains(r#"data-bucket="1" data-state="archived" data-count="3""#));
        assert!(totals(&t).contains(r#"data-state="not_relevant" data-count="0""#));
    }
}
