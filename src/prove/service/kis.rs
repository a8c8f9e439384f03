//! Re-verification of archived content in the KIS (DSK II.2, I.12): read
//! the resource back, recompute its hashes, compare them with what the KIS
//! declares, what the ledger recorded and what the proof log holds.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

use super::{ServiceError, check_resource};
use crate::map::sha256_extension;
use crate::prove::ContentHashes;
use crate::prove::checkpoint::verify_checkpoint;
use crate::prove::leaf_v2::Leaf;
use crate::prove::merkle::{leaf_hash, verify_inclusion};
use crate::prove::pseudonym::{ProofKeys, salted};
use crate::push::{Kis, type_and_id};
use crate::store::audit_samples::{AuditFinding, AuditSample};
use crate::store::{Store, millis};
use chrono::Utc;

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    /// The values agree.
    Pass,
    /// They differ: the content or a record was altered.
    Fail,
    /// Not applicable or not possible yet (e.g. no checkpoint covers the leaf).
    Skipped,
}

/// One comparison of [`verify_against_kis`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `sha256-extension`, `attachment-sha1`, `ledger`, `log-leaf`, `checkpoint`.
    pub name: &'static str,
    /// The result.
    pub outcome: CheckOutcome,
    /// What was compared, hashes only.
    pub detail: String,
}

/// The result of checking one resource in the KIS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KisReport {
    /// `Type/id`.
    pub resource: String,
    /// The message as the store names it, `source/message-token`.
    pub message: String,
    /// SHA-256 of the content read back from the KIS, hex.
    pub content_sha256: String,
    /// Every comparison, in order.
    pub checks: Vec<Check>,
}

impl KisReport {
    /// Whether no check failed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.outcome != CheckOutcome::Fail)
    }
}

/// The content and the hashes the resource itself declares.
struct Declared {
    content: Vec<u8>,
    sha256_hex: Option<String>,
    sha1_b64: Option<String>,
}

fn malformed(resource: &str, what: &str) -> ServiceError {
    ServiceError::Inconsistent(format!("{resource} in the KIS has no {what}"))
}

async fn read_declared(kis: &Kis, resource: &str) -> Result<Declared, ServiceError> {
    let json = kis.read(resource).await?;
    if resource.starts_with("Communication/") {
        let payload = &json["payload"][0];
        let text = crate::map::payload_text(payload)
            .ok_or_else(|| malformed(resource, "payload[0].contentString"))?;
        return Ok(Declared {
            content: text,
            sha256_hex: sha256_extension(&payload["extension"]).map(str::to_owned),
            sha1_b64: None,
        });
    }
    let attachment = &json["content"][0]["attachment"];
    let url = attachment["url"]
        .as_str()
        .ok_or_else(|| malformed(resource, "content[0].attachment.url"))?;
    let binary_ref = type_and_id(url, kis.base_url())
        .filter(|r| r.starts_with("Binary/"))
        .ok_or_else(|| malformed(resource, "Binary reference in attachment.url"))?;
    let binary = kis.read(&binary_ref).await?;
    let content = binary["data"]
        .as_str()
        .and_then(crate::map::decode_base64_binary)
        .ok_or_else(|| malformed(&binary_ref, "base64 data"))?;
    Ok(Declared {
        content,
        sha256_hex: sha256_extension(&attachment["extension"]).map(str::to_owned),
        sha1_b64: attachment["hash"].as_str().map(str::to_owned),
    })
}

fn compare(name: &'static str, expected: Option<&str>, actual: &str) -> Check {
    match expected {
        None => Check {
            name,
            outcome: CheckOutcome::Fail,
            detail: format!("missing; content hashes to {actual}"),
        },
        Some(e) if e == actual => Check {
            name,
            outcome: CheckOutcome::Pass,
            detail: actual.to_owned(),
        },
        Some(e) => Check {
            name,
            outcome: CheckOutcome::Fail,
            detail: format!("recorded {e}, content hashes to {actual}"),
        },
    }
}

/// Reads `resource` (`DocumentReference/id` with its Binary, or
/// `Communication/id`) from the KIS, recomputes SHA-1 and SHA-256 and
/// compares them with `Attachment.hash`, the content-sha256 extension, the
/// ledger and the log leaf (a v2 leaf through its token and salt, from
/// `proof_keys`); then checks the leaf's inclusion in a signed
/// checkpoint, if one covers it. A mismatch is a failed [`Check`], not an
/// error; errors mean the check could not run.
pub async fn verify_against_kis(
    kis: &Kis,
    resource: &str,
    (store, proof_keys): (&Store, &ProofKeys),
) -> Result<KisReport, ServiceError> {
    check_resource(resource)?;
    if !(resource.starts_with("DocumentReference/") || resource.starts_with("Communication/")) {
        return Err(ServiceError::Request(
            "only DocumentReference/ID and Communication/ID hold archived content".into(),
        ));
    }
    let key = store
        .message_by_resource(resource)
        .await?
        .ok_or_else(|| ServiceError::NotArchived(resource.to_owned()))?;
    let declared = read_declared(kis, resource).await?;
    let hashes = ContentHashes::of(&declared.content);
    let sha256 = hashes.sha256_hex();
    let mut checks = vec![compare(
        "sha256-extension",
        declared.sha256_hex.as_deref(),
        &sha256,
    )];
    if resource.starts_with("DocumentReference/") {
        let sha1 = STANDARD.encode(hashes.sha1);
        checks.push(compare(
            "attachment-sha1",
            declared.sha1_b64.as_deref(),
            &sha1,
        ));
    }
    let ledger = store.message(&key).await?.and_then(|m| m.content_sha256);
    checks.push(compare("ledger", ledger.as_deref(), &sha256));

    let leaf = store
        .log_leaf(&key)
        .await?
        .ok_or_else(|| ServiceError::NotArchived(key.to_string()))?;
    let record = Leaf::decode(&leaf.leaf_data)
        .ok()
        .filter(|r| r.resource() == resource && leaf_hash(&leaf.leaf_data) == leaf.leaf_hash);
    checks.push(match record {
        Some(Leaf::V1(r)) if super::v1_names(proof_keys, r.message(), &key) => {
            compare("log-leaf", Some(&hex::encode(r.content_sha256())), &sha256)
        }
        Some(Leaf::V2(r)) if hex::encode(r.message_token) == key.token => {
            // The v2 leaf binds HMAC-SHA256(salt, SHA-256(content)).
            let salt = proof_keys.salt(&r.message_token);
            compare(
                "log-leaf",
                Some(&hex::encode(r.content_hmac)),
                &hex::encode(salted(&salt, &hashes.sha256)),
            )
        }
        _ => Check {
            name: "log-leaf",
            outcome: CheckOutcome::Fail,
            detail: format!("leaf {} is not this message's canonical record", leaf.index),
        },
    });
    checks.push(checkpoint_check(store, leaf.index, &leaf.leaf_hash).await?);
    Ok(KisReport {
        resource: resource.to_owned(),
        message: key.to_string(),
        content_sha256: sha256,
        checks,
    })
}

async fn checkpoint_check(
    store: &Store,
    index: u64,
    leaf: &[u8; 32],
) -> Result<Check, ServiceError> {
    let name = "checkpoint";
    let Some(cp) = store.checkpoint_covering(index).await? else {
        return Ok(Check {
            name,
            outcome: CheckOutcome::Skipped,
            detail: format!("no signed checkpoint covers leaf {index} yet"),
        });
    };
    let keys = store.signing_keys().await?;
    let path = store.log_inclusion(index, cp.size).await?;
    let result = verify_checkpoint(&cp.note, &keys)
        .map_err(|e| e.to_string())
        .and_then(|v| {
            verify_inclusion(leaf, index, cp.size, &path, &v.checkpoint.root)
                .map_err(|e| e.to_string())
        });
    Ok(match result {
        Ok(()) => Check {
            name,
            outcome: CheckOutcome::Pass,
            detail: format!(
                "leaf {index} included in signed checkpoint of size {}",
                cp.size
            ),
        },
        Err(e) => Check {
            name,
            outcome: CheckOutcome::Fail,
            detail: format!("checkpoint of size {}: {e}", cp.size),
        },
    })
}

/// The outcome of an audit over a random sample of archived content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Resources checked.
    pub checked: usize,
    /// Reports of resources whose checks all ran.
    pub reports: Vec<KisReport>,
    /// Resources whose check could not run (`Type/id`, reason).
    pub errors: Vec<(String, String)>,
}

impl AuditReport {
    /// Whether every sampled resource verified.
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.reports.iter().all(KisReport::ok)
    }
}

impl AuditReport {
    /// Resources whose checks ran and one failed.
    pub fn mismatched(&self) -> usize {
        self.reports.iter().filter(|r| !r.ok()).count()
    }

    /// The report as recorded in `audit_samples`: counts, and for each
    /// resource that did not verify the names of its failed checks (or why
    /// its check could not run), nothing else.
    pub fn summary(&self, (started_at, finished_at): (i64, i64), run_by: &str) -> AuditSample {
        let mut findings: Vec<AuditFinding> = self
            .reports
            .iter()
            .filter(|r| !r.ok())
            .map(|r| AuditFinding {
                resource: r.resource.clone(),
                failed: r
                    .checks
                    .iter()
                    .filter(|c| c.outcome == CheckOutcome::Fail)
                    .map(|c| c.name.to_owned())
                    .collect(),
            })
            .collect();
        findings.extend(self.errors.iter().map(|(resource, why)| AuditFinding {
            resource: resource.clone(),
            failed: vec![format!(
                "could not run: {}",
                why.chars().take(200).collect::<String>()
            )],
        }));
        let mismatched = self.mismatched();
        AuditSample {
            started_at,
            finished_at,
            run_by: run_by.to_owned(),
            checked: self.checked as u64,
            verified: (self.reports.len() - mismatched) as u64,
            mismatched: mismatched as u64,
            unchecked: self.errors.len() as u64,
            findings,
        }
    }
}

/// [`audit`], then its [`AuditReport::summary`] recorded in the store
/// (`audit_samples`, listed on the console's log page) as run by `run_by`
/// (`cli`, `schedule`). Errors: as [`audit`], and the store's when the
/// record cannot be written.
pub async fn audit_and_record(
    kis: &Kis,
    (store, proof_keys): (&Store, &ProofKeys),
    sample: u32,
    run_by: &str,
) -> Result<AuditReport, ServiceError> {
    let started = millis(Utc::now());
    let report = audit(kis, (store, proof_keys), sample).await?;
    let summary = report.summary((started, millis(Utc::now()).max(started)), run_by);
    crate::telemetry::measure::integrity_audit("verified", summary.verified);
    crate::telemetry::measure::integrity_audit("mismatched", summary.mismatched);
    crate::telemetry::measure::integrity_audit("unchecked", summary.unchecked);
    store.record_audit_sample(&summary).await?;
    Ok(report)
}

/// Verifies up to `sample` archived resources drawn at random.
pub async fn audit(
    kis: &Kis,
    (store, proof_keys): (&Store, &ProofKeys),
    sample: u32,
) -> Result<AuditReport, ServiceError> {
    let picked = store.archived_sample(sample).await?;
    let mut report = AuditReport {
        checked: picked.len(),
        reports: Vec::new(),
        errors: Vec::new(),
    };
    for (key, resource) in picked {
        match verify_against_kis(kis, &resource, (store, proof_keys)).await {
            Ok(r) => {
                if !r.ok() {
                    tracing::warn!(message = %key, "audit: archived content does not verify");
                }
                report.reports.push(r);
            }
            Err(e) => {
                tracing::warn!(message = %key, "audit: check could not run");
                report.errors.push((resource, e.to_string()));
            }
        }
    }
    Ok(report)
}
