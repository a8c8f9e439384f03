//! Relevance and document type, decided by the rules in `mappings/`.
//! Pure: a message and whether its conversation is linked go in, a
//! [`Decision`] comes out.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::{Body, Mark, Message, MessageKind, Role};

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rules file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("rules file {path}: {message}")]
    Invalid { path: String, message: String },
}

/// A KDL document class (`http://dvmd.de/fhir/CodeSystem/kdl`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentType {
    pub code: String,
    pub display: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    default: Default,
    #[serde(default)]
    document_types: BTreeMap<String, DocumentType>,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Default {
    relevant: bool,
    #[serde(default, with = "humantime_serde")]
    retention: Option<Duration>,
    #[serde(default)]
    document_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    #[serde(default)]
    source: Option<Vec<String>>,
    #[serde(default)]
    mark: Option<MarkCondition>,
    #[serde(default)]
    content: Option<Vec<String>>,
    #[serde(default)]
    kind: Option<Vec<MessageKind>>,
    #[serde(default)]
    forwarded: Option<bool>,
    #[serde(default)]
    sender_role: Option<Vec<Role>>,
    #[serde(default)]
    linked: Option<bool>,
    relevant: bool,
    #[serde(default)]
    document_type: Option<String>,
    #[serde(default, with = "humantime_serde")]
    retention: Option<Duration>,
    /// Hold relevant content sealed for a reviewer's redaction before archive.
    #[serde(default)]
    review_before_archive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum MarkCondition {
    Relevant,
    NotRelevant,
    None,
}

/// What a rule decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Archive; media are filed under `document_type`.
    Relevant { document_type: DocumentType },
    /// Do not archive; request deletion of the messenger copy after `retention`.
    NotRelevant { retention: Duration },
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    source: Option<Vec<String>>,
    mark: Option<MarkCondition>,
    content: Option<Vec<String>>,
    kind: Option<Vec<MessageKind>>,
    forwarded: Option<bool>,
    sender_role: Option<Vec<Role>>,
    linked: Option<bool>,
    outcome: Outcome,
    review: bool,
}

/// The loaded rule set.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<Rule>,
    default: Rule,
}

/// The rule name of the `[default]` fallthrough in a [`Decision`]; no
/// `[[rule]]` may carry it, so a decision under this name is never a named
/// rule's.
pub const DEFAULT_RULE: &str = "default";

/// The rule name recorded for messages of a conversation a reviewer
/// dismissed as not relevant.
pub const DISMISSED_RULE: &str = "conversation-dismissed";

/// The decision for one message and the rule that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub rule: String,
    pub outcome: Outcome,
}

impl Rules {
    pub fn load(path: &Path) -> Result<Self, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| RulesError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and checks a rules file: every named document type exists,
    /// relevant media rules name one, not-relevant rules have a retention.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: RulesFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let fallback_type = file
            .document_types
            .get("other")
            .or_else(|| file.document_types.values().next())
            .cloned()
            .ok_or("at least one [document_types] entry is required")?;
        let outcome = |name: &str,
                       relevant: bool,
                       document_type: Option<String>,
                       retention: Option<Duration>|
         -> Result<Outcome, String> {
            if relevant {
                let document_type =
                    match document_type {
                        Some(key) => file.document_types.get(&key).cloned().ok_or_else(|| {
                            format!("rule '{name}': unknown document_type '{key}'")
                        })?,
                        None => fallback_type.clone(),
                    };
                Ok(Outcome::Relevant { document_type })
            } else {
                let retention = retention
                    .ok_or_else(|| format!("rule '{name}': not relevant needs a retention"))?;
                Ok(Outcome::NotRelevant { retention })
            }
        };
        let mut rules = Vec::with_capacity(file.rules.len());
        for spec in file.rules {
            if spec.name == DEFAULT_RULE {
                return Err(format!(
                    "rule name '{DEFAULT_RULE}' is reserved for [default]"
                ));
            }
            if let Some(patterns) = &spec.content
                && let Some(bad) = patterns.iter().find(|p| !p.contains('/'))
            {
                return Err(format!(
                    "rule '{}': '{bad}' is not a media type pattern",
                    spec.name
                ));
            }
            let outcome = outcome(
                &spec.name,
                spec.relevant,
                spec.document_type,
                spec.retention,
            )?;
            if spec.review_before_archive && !spec.relevant {
                return Err(format!(
                    "rule '{}': review_before_archive needs relevant = true",
                    spec.name
                ));
            }
            rules.push(Rule {
                review: spec.review_before_archive,
                name: spec.name,
                source: spec.source,
                mark: spec.mark,
                content: spec.content,
                kind: spec.kind,
                forwarded: spec.forwarded,
                sender_role: spec.sender_role,
                linked: spec.linked,
                outcome,
            });
        }
        let d = file.default;
        let default = Rule {
            name: DEFAULT_RULE.into(),
            source: None,
            mark: None,
            content: None,
            kind: None,
            forwarded: None,
            sender_role: None,
            linked: None,
            outcome: outcome("default", d.relevant, d.document_type, d.retention)?,
            review: false,
        };
        Ok(Self { rules, default })
    }

    /// The `[default]` retention when `[default]` is not relevant.
    pub fn default_retention(&self) -> Option<Duration> {
        match self.default.outcome {
            Outcome::NotRelevant { retention } => Some(retention),
            Outcome::Relevant { .. } => None,
        }
    }

    /// Whether the rule named `rule` holds relevant content for a
    /// reviewer's redaction before archive (`review_before_archive`).
    pub fn review_before_archive(&self, rule: &str) -> bool {
        self.rules.iter().any(|r| r.review && r.name == rule)
    }

    /// The first matching rule's decision, or the default's.
    pub fn classify(&self, message: &Message, linked: bool) -> Decision {
        let rule = self
            .rules
            .iter()
            .find(|r| r.matches(message, linked))
            .unwrap_or(&self.default);
        Decision {
            rule: rule.name.clone(),
            outcome: rule.outcome.clone(),
        }
    }
}

impl Rule {
    fn matches(&self, m: &Message, linked: bool) -> bool {
        let source_ok = self
            .source
            .as_ref()
            .is_none_or(|s| s.contains(&m.key.source));
        let mark_ok = self.mark.is_none_or(|c| {
            matches!(
                (c, m.mark),
                (MarkCondition::Relevant, Some(Mark::Relevant))
                    | (MarkCondition::NotRelevant, Some(Mark::NotRelevant))
                    | (MarkCondition::None, None)
            )
        });
        let content_type = match &m.body {
            Body::Text(_) => "text/plain",
            Body::Media(media) => media.mime_type.as_str(),
        };
        let content_ok = self
            .content
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| media_type_matches(p, content_type)));
        let kind_ok = self.kind.as_ref().is_none_or(|ks| ks.contains(&m.kind()));
        let forwarded_ok = self.forwarded.is_none_or(|f| f == m.forwarded.is_some());
        let role_ok = self
            .sender_role
            .as_ref()
            .is_none_or(|rs| rs.contains(&m.sender.role));
        let linked_ok = self.linked.is_none_or(|l| l == linked);
        source_ok && mark_ok && content_ok && kind_ok && forwarded_ok && role_ok && linked_ok
    }
}

/// `image/*` matches every image type; otherwise the whole type must match.
fn media_type_matches(pattern: &str, media_type: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(top) => media_type
            .split_once('/')
            .is_some_and(|(t, _)| t.eq_ignore_ascii_case(top)),
        None => pattern.eq_ignore_ascii_case(media_type),
    }
}

#[cfg(test)]
mod tests;
