//! Offline verification of bundle files and the reports the CLI prints.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use super::{AuditReport, CheckOutcome, KisReport, ServiceError, load_trusted_keys};
use crate::prove::bundle::{ProofBundle, Report, Step, verify_bundle};
use crate::prove::leaf::format_rfc3339_millis;

/// The outcome of verifying a bundle file, for humans and machines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleVerdict {
    /// Whether every step passed.
    pub verified: bool,
    /// The step that failed.
    pub failed_step: Option<Step>,
    /// Why it failed.
    pub error: Option<String>,
    /// The full report when verified.
    pub report: Option<Report>,
}

fn read(path: &Path) -> Result<Vec<u8>, ServiceError> {
    std::fs::read(path).map_err(|e| ServiceError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Verifies the bundle in `bundle` against the content in `content` (if
/// given) and the trusted keys in `keys` (if given; else the bundle's own).
/// Errors mean a file could not be read; a bad bundle is a failed verdict.
pub fn verify_bundle_files(
    bundle: &Path,
    content: Option<&Path>,
    keys: Option<&Path>,
) -> Result<BundleVerdict, ServiceError> {
    let json = read(bundle)?;
    let content = content.map(read).transpose()?;
    let keys = keys.map(load_trusted_keys).transpose()?;
    let result = std::str::from_utf8(&json)
        .map_err(|_| crate::prove::bundle::VerifyError::Format("bundle is not UTF-8".into()))
        .and_then(ProofBundle::from_json)
        .and_then(|b| verify_bundle(&b, content.as_deref(), keys.as_deref()));
    Ok(match result {
        Ok(report) => BundleVerdict {
            verified: true,
            failed_step: None,
            error: None,
            report: Some(report),
        },
        Err(e) => BundleVerdict {
            verified: false,
            failed_step: Some(e.step()),
            error: Some(e.to_string()),
            report: None,
        },
    })
}

impl BundleVerdict {
    /// A short report: one line per passed step, then the verdict.
    pub fn human(&self) -> String {
        let mut out = String::new();
        if let Some(report) = &self.report {
            for p in &report.passed {
                let _ = writeln!(out, "PASS {:?}: {}", p.step, p.detail);
            }
            for w in &report.warnings {
                let _ = writeln!(out, "WARNING: {w}");
            }
            let _ = writeln!(
                out,
                "VERIFIED: leaf {} of {} in {} (root {}), signed by {} at {}",
                report.leaf_index,
                report.tree_size,
                report.origin,
                report.root_hex,
                report.signed_by.join(", "),
                format_rfc3339_millis(report.signed_at_ms).unwrap_or_default()
            );
        }
        if let (Some(step), Some(error)) = (&self.failed_step, &self.error) {
            let _ = writeln!(out, "FAIL {step:?}: {error}");
        }
        out
    }
}

impl KisReport {
    /// One line per check, then the verdict.
    pub fn human(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let tag = match c.outcome {
                CheckOutcome::Pass => "PASS",
                CheckOutcome::Fail => "FAIL",
                CheckOutcome::Skipped => "SKIP",
            };
            let _ = writeln!(out, "{tag} {}: {}", c.name, c.detail);
        }
        let verdict = if self.ok() { "VERIFIED" } else { "MISMATCH" };
        let _ = writeln!(out, "{verdict}: {} ({})", self.resource, self.message);
        out
    }
}

impl AuditReport {
    /// One line per resource, then a summary.
    pub fn human(&self) -> String {
        let mut out = String::new();
        for r in &self.reports {
            let failed: Vec<&str> = r
                .checks
                .iter()
                .filter(|c| c.outcome == CheckOutcome::Fail)
                .map(|c| c.name)
                .collect();
            if failed.is_empty() {
                let _ = writeln!(out, "OK       {}", r.resource);
            } else {
                let _ = writeln!(out, "MISMATCH {} ({})", r.resource, failed.join(", "));
            }
        }
        for (resource, e) in &self.errors {
            let _ = writeln!(out, "ERROR    {resource}: {e}");
        }
        let bad = self.reports.iter().filter(|r| !r.ok()).count() + self.errors.len();
        let _ = writeln!(out, "audited {}, {} failed", self.checked, bad);
        out
    }
}
