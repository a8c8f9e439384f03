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
mod tests {
    use super::*;
    use crate::event::{Media, MediaLocation, MessageKey, Party};

    fn rules() -> Rules {
        Rules::parse(include_str!("../../mappings/rules.toml")).expect("shipped rules parse")
    }

    fn message(body: Body, mark: Option<Mark>) -> Message {
        Message {
            key: MessageKey {
                source: "whatsapp".into(),
                message_id: "m".into(),
            },
            event_id: "e".into(),
            conversation: "c".into(),
            sender: Party {
                id: "s".into(),
                role: Role::Unknown,
                display: None,
            },
            recipients: vec![],
            sent_at: chrono::DateTime::UNIX_EPOCH,
            received_at: None,
            in_reply_to: None,
            replaces: None,
            body,
            part: None,
            case: None,
            mark,
            kind: None,
            forwarded: None,
        }
    }

    fn image() -> Body {
        Body::Media(Media {
            mime_type: "image/jpeg".into(),
            file_name: None,
            caption: None,
            declared_size: None,
            declared_sha256: None,
            location: MediaLocation::Inline(vec![1]),
        })
    }

    fn check(body: Body, mark: Option<Mark>, linked: bool, rule: &str, relevant: bool) {
        let d = rules().classify(&message(body, mark), linked);
        assert_eq!(d.rule, rule);
        assert_eq!(matches!(d.outcome, Outcome::Relevant { .. }), relevant);
    }

    #[test]
    fn shipped_rules_decide_as_documented() {
        let text = || Body::Text("x".into());
        check(
            image(),
            Some(Mark::NotRelevant),
            true,
            "marked-not-relevant",
            false,
        );
        check(
            image(),
            Some(Mark::Relevant),
            false,
            "marked-relevant-image",
            true,
        );
        check(text(), Some(Mark::Relevant), false, "marked-relevant", true);
        check(image(), None, true, "linked-images", true);
        check(text(), None, true, "linked-text", true);
        check(text(), None, false, "default", false);
        check(image(), None, false, "default", false);
    }

    fn media(mime: &str) -> Body {
        Body::Media(Media {
            mime_type: mime.into(),
            file_name: None,
            caption: None,
            declared_size: None,
            declared_sha256: None,
            location: MediaLocation::Reference("M".into()),
        })
    }

    fn decide(body: Body, kind: Option<MessageKind>, mark: Option<Mark>, linked: bool) -> Decision {
        let mut m = message(body, mark);
        m.kind = kind;
        rules().classify(&m, linked)
    }

    fn code(d: &Decision) -> &str {
        match &d.outcome {
            Outcome::Relevant { document_type } => &document_type.code,
            Outcome::NotRelevant { .. } => "-",
        }
    }

    #[test]
    fn kinds_decide_stickers_voice_notes_audio_and_video() {
        let sticker = || media("image/webp");
        let d = decide(sticker(), Some(MessageKind::Sticker), None, true);
        assert_eq!((d.rule.as_str(), code(&d)), ("stickers", "-"));
        // A clinician's mark still archives a sticker; an image stays a photo.
        let d = decide(
            sticker(),
            Some(MessageKind::Sticker),
            Some(Mark::Relevant),
            true,
        );
        assert_eq!(d.rule, "marked-relevant-image");
        let d = decide(sticker(), Some(MessageKind::Image), None, true);
        assert_eq!((d.rule.as_str(), code(&d)), ("linked-images", "ED020199"));
        for kind in [Some(MessageKind::Voice), Some(MessageKind::Audio), None] {
            let d = decide(media("audio/ogg"), kind, None, true);
            assert_eq!(
                (d.rule.as_str(), code(&d)),
                ("linked-audio", "ED010199"),
                "{kind:?}"
            );
        }
        let d = decide(media("audio/ogg"), Some(MessageKind::Voice), None, false);
        assert_eq!(d.rule, "default");
        let d = decide(media("video/mp4"), Some(MessageKind::Video), None, true);
        assert_eq!((d.rule.as_str(), code(&d)), ("linked-images", "ED020199"));
        for kind in [
            MessageKind::Interactive,
            MessageKind::Location,
            MessageKind::Contacts,
        ] {
            let d = decide(Body::Text("x".into()), Some(kind), None, true);
            assert_eq!(d.rule, "linked-text", "{kind:?}");
        }
    }

    #[test]
    fn forwarded_condition_matches_forwarded_messages() {
        let base = "[default]\nrelevant = false\nretention = \"24h\"\n[document_types.a]\ncode = \"X\"\ndisplay = \"Y\"\n";
        let rules = Rules::parse(&format!(
            "{base}[[rule]]\nname = \"fw\"\nforwarded = true\nrelevant = false\nretention = \"1h\"\n"
        ))
        .unwrap();
        let mut m = message(Body::Text("x".into()), None);
        assert_eq!(rules.classify(&m, true).rule, "default");
        m.forwarded = Some(crate::event::Forwarded::Frequently);
        assert_eq!(rules.classify(&m, true).rule, "fw");
    }

    #[test]
    fn kind_conditions_parse_and_refuse_unknown_kinds() {
        let base = "[default]\nrelevant = false\nretention = \"1h\"\n[document_types.a]\ncode = \"X\"\ndisplay = \"Y\"\n";
        let rules = Rules::parse(&format!(
            "{base}[[rule]]\nname = \"v\"\nkind = [\"voice\", \"interactive\"]\nrelevant = true\n"
        ))
        .unwrap();
        let mut m = message(Body::Text("x".into()), None);
        m.kind = Some(MessageKind::Interactive);
        assert_eq!(rules.classify(&m, false).rule, "v");
        m.kind = None;
        assert_eq!(rules.classify(&m, false).rule, "default");
        let err = Rules::parse(&format!(
            "{base}[[rule]]\nname = \"w\"\nkind = [\"gif\"]\nrelevant = true\n"
        ))
        .unwrap_err();
        assert!(err.contains("gif"), "{err}");
    }

    #[test]
    fn image_rule_files_as_kdl_photo() {
        let d = rules().classify(&message(image(), None), true);
        let Outcome::Relevant { document_type } = d.outcome else {
            panic!("not relevant")
        };
        assert_eq!(document_type.code, "ED020199");
    }

    #[test]
    fn bad_rules_are_refused_with_the_rule_name() {
        let base = "[default]\nrelevant = false\nretention = \"1h\"\n[document_types.a]\ncode = \"X\"\ndisplay = \"Y\"\n";
        let err = Rules::parse(&format!(
            "{base}[[rule]]\nname = \"r1\"\nrelevant = true\ndocument_type = \"nope\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("r1") && err.contains("nope"), "{err}");
        let err = Rules::parse(&format!(
            "{base}[[rule]]\nname = \"r2\"\nrelevant = false\n"
        ))
        .unwrap_err();
        assert!(err.contains("r2"), "{err}");
        let err =
            Rules::parse(&format!("{base}[[rule]]\nname = \"r3\"\nrelevnt = true\n")).unwrap_err();
        assert!(err.contains("relevnt"), "{err}");
    }

    #[test]
    fn media_type_patterns() {
        assert!(media_type_matches("image/*", "image/png"));
        assert!(!media_type_matches("image/*", "application/pdf"));
        assert!(media_type_matches("application/pdf", "application/pdf"));
    }
}
