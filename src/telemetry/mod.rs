//! Logs and metrics. Each notable thing is one typed event
//! ([`events`], after vector's `internal_events`) that both logs (with
//! `tracing` key/values) and counts through the `metrics` facade; gauges and
//! histograms are in [`measure`]. No message content and no direct
//! identifiers are passed here: only sources, states, stages and reason
//! codes, and every label value is checked to look like a code
//! ([`code`]). Metrics are exported in the Prometheus text format by
//! `GET /metrics` (`crate::http`); nothing is pushed anywhere (DSK I.9).
//!
//! Every metric name starts with [`PREFIX`]; `docs/operations.md` lists
//! them with the alerts that read them.

pub mod events;
pub mod jobs;
pub mod measure;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

pub use events::*;
pub use jobs::{JobRan, LeadershipCampaign, LeadershipChanged};

/// Prefix of every metric name.
pub const PREFIX: &str = "chartbridge_";

/// Histogram buckets in seconds: 5 ms to 5 min (latencies of requests,
/// stages, downloads and publish→commit).
const SECONDS_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The process-wide Prometheus recorder, installed on first use (a test
/// binary, the worker and every command share it; installing twice is not
/// possible with `metrics`, so this is the one place that does).
static EXPORTER: LazyLock<Option<PrometheusHandle>> = LazyLock::new(|| {
    let installed = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .and_then(PrometheusBuilder::install_recorder);
    match installed {
        Ok(handle) => {
            measure::describe();
            Some(handle)
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed");
            None
        }
    }
});

/// Installs the metrics recorder if it is not yet (idempotent, cheap).
pub fn install() {
    LazyLock::force(&EXPORTER);
}

/// All metrics in the Prometheus text exposition format (version 0.0.4).
pub fn render() -> String {
    EXPORTER.as_ref().map(|h| h.render()).unwrap_or_default()
}

/// Drains histogram samples into their buckets; the worker calls it
/// periodically so that memory stays bounded between scrapes.
pub fn upkeep() {
    if let Some(h) = EXPORTER.as_ref() {
        h.run_upkeep();
    }
}

/// Counters as `name{label=value,…}` → value, the prefix and quotes
/// stripped (`messages_total{state=archived,reason=}`): read back from the
/// exposition text, so what tests and `status` see is what is scraped.
pub fn snapshot() -> BTreeMap<String, u64> {
    series("counter")
        .into_iter()
        .map(|(k, v)| (k, v as u64))
        .collect()
}

/// Gauges, keyed like [`snapshot`].
pub fn gauges() -> BTreeMap<String, i64> {
    series("gauge")
        .into_iter()
        .map(|(k, v)| (k, v as i64))
        .collect()
}

fn series(kind: &str) -> BTreeMap<String, f64> {
    install();
    let text = render();
    let mut out = BTreeMap::new();
    let mut current = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            current = rest.rsplit(' ').next().unwrap_or("");
            continue;
        }
        if line.starts_with('#') || current != kind {
            continue;
        }
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = name.strip_prefix(PREFIX).unwrap_or(name).replace('"', "");
        out.insert(name, value);
    }
    out
}

/// `value` if it looks like a code (`[A-Za-z][A-Za-z0-9_.:/-]*`, at most
/// 64 bytes, or a number of at most 4 digits such as an HL7 table 0357
/// code), else `"invalid"`: a label never carries free text, long numbers
/// (phone numbers, ids) or anything an identifier could hide in.
pub fn code(value: &str) -> String {
    let ok = value.is_empty()
        || (value.len() <= 4 && value.bytes().all(|b| b.is_ascii_digit()))
        || (value.len() <= 64
            && value.starts_with(|c: char| c.is_ascii_alphabetic())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:/-".contains(&b)));
    if ok {
        value.to_owned()
    } else {
        "invalid".to_owned()
    }
}

/// Installs the log subscriber (`RUST_LOG` filters, `json` for machines)
/// and the metrics recorder.
pub fn init(json: bool) {
    install();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_carry_codes_only() {
        for ok in [
            "unknown_patient",
            "archived",
            "",
            "DocumentReference",
            "v2.5",
            "207",
        ] {
            assert_eq!(code(ok), ok);
        }
        for bad in [
            "4915100731731",
            "12345",
            "@alice:hospital.example",
            "Wundkontrolle bei Frau X",
            "!room:hs",
            &"a".repeat(65),
        ] {
            assert_eq!(code(bad), "invalid", "{bad}");
        }
    }

    #[test]
    fn snapshot_reads_back_the_exposition() {
        events::emit(events::DeadLettered {
            code: "test_snapshot_code",
        });
        assert!(
            render().contains("chartbridge_dead_lettered_total{reason=\"test_snapshot_code\"}")
        );
        assert!(snapshot()["dead_lettered_total{reason=test_snapshot_code}"] >= 1);
    }
}
