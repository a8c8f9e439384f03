//! Transcripts (`kis.output = "document_reference_only"`, DSK I.6): the text
//! messages of a conversation are archived together, one text/plain
//! document per conversation and window, instead of one Communication each.
//!
//! A relevant, resolved text message is held (sealed, durable, not yet
//! terminal) in its window: `kis.transcript_window` long, aligned to UTC
//! (`1d` = one calendar day), keyed by a keyed token of source,
//! conversation, patient and window start. The transcript closer
//! (`schedule.transcript_close`, in `crate::pipeline`) renders a window that ended,
//! archives it as Binary + DocumentReference through the media mapping
//! (`map::transaction`), checks it by read-back, and only then records every
//! included message archived — resource = the transcript DocumentReference —
//! with its deletion command, in the transaction that appends the
//! transcript's one proof leaf. Media go as Binary + DocumentReference each.
//!
//! This module's functions are pure; `crate::pipeline` holds texts and
//! closes windows.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{Body, Media, MediaLocation, Message, MessageKey, Party, Role};
use crate::seal::Sealer;

/// What one closer run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloseSummary {
    /// Transcripts archived (their messages archived, deletions queued).
    pub archived: usize,
    /// Messages included in them.
    pub messages: usize,
    /// Windows whose close hit a failure (retried next run).
    pub deferred: usize,
}

/// How long a claimed window is reserved for one closer.
pub const LEASE_MS: i64 = 120_000;

/// The media type of a transcript.
pub const MIME_TYPE: &str = "text/plain; charset=utf-8";

/// A message's window: `[start, end)` in Unix milliseconds, aligned to
/// multiples of `window_ms` since the epoch (UTC midnight for a day).
pub fn window_of(sent_at: DateTime<Utc>, window_ms: i64) -> (i64, i64) {
    let w = window_ms.max(1000);
    let start = sent_at.timestamp_millis().div_euclid(w) * w;
    (start, start + w)
}

/// The store's key of a window: conversation and patient never appear in
/// the table, and two patients of one conversation never share a
/// transcript; nor do two encounters (`Encounter/id`) of one patient (a
/// discharge and readmission within the window): each transcript is filed
/// under the encounter of every line it holds.
pub fn window_token(
    sealer: &Sealer,
    m: &Message,
    patient: &str,
    encounter: Option<&str>,
    start_ms: i64,
) -> String {
    let start = start_ms.to_string();
    let mut parts = vec![
        "transcript-window",
        &m.key.source,
        &m.conversation,
        patient,
        &start,
    ];
    // Without an encounter the token is what it was before encounters
    // were part of it: such a window held across the upgrade stays one.
    // A window with an encounter held across it gets a second window for
    // the texts that arrive after (CHANGELOG, upgrade notes).
    if let Some(encounter) = encounter {
        parts.push(encounter);
    }
    sealer.token(&parts)
}

/// The window of a message that arrived after its window was claimed: a
/// transcript of its own (closed by the next run).
pub fn late_token(sealer: &Sealer, window_token: &str, m: &Message) -> String {
    sealer.token(&["transcript-late", window_token, &m.key.message_id])
}

/// The key the transcript is known by: its KIS identifier, stable ids of
/// its Binary and DocumentReference and its proof-log leaf.
pub fn transcript_key(source: &str, window_token: &str) -> MessageKey {
    MessageKey {
        source: source.to_owned(),
        message_id: format!("transcript-{}", &window_token[..window_token.len().min(40)]),
    }
}

/// What is held per message, sealed: the event and what resolution found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldText {
    pub event: serde_json::Value,
    pub patient: String,
    pub encounter: Option<String>,
    pub rule: String,
}

/// One line of a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    pub sent_at: DateTime<Utc>,
    pub role: Role,
    pub text: &'a str,
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Clinician => "clinician",
        Role::Patient => "patient",
        Role::Relative => "relative",
        Role::Colleague => "colleague",
        Role::Unknown => "unknown",
    }
}

/// The transcript's text: a header with the window, then one line per
/// message, `{time, RFC 3339 UTC} [{sender role}] {text}`; continuation
/// lines of a multi-line text are indented by four spaces after every
/// line terminator a viewer may honour (CR LF, CR, LF, VT, FF, NEL, LS,
/// PS; Unicode UAX #14 mandatory breaks), which stays as sent: a text can
/// never start a line that looks like another message. Sender
/// identifiers (phone numbers, Matrix ids) never appear.
pub fn render(source: &str, start_ms: i64, end_ms: i64, lines: &[Line<'_>]) -> String {
    let at = |ms: i64| {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    };
    let mut out = format!(
        "Transcript of a {source} conversation, {} to {} (UTC)\n",
        at(start_ms),
        at(end_ms)
    );
    for l in lines {
        out.push_str(&l.sent_at.to_rfc3339_opts(SecondsFormat::Secs, true));
        out.push_str(" [");
        out.push_str(role_name(l.role));
        out.push_str("] ");
        push_indented(&mut out, l.text);
        out.push('\n');
    }
    out
}

/// Appends `text` with four spaces after each of its line terminators
/// (see [`render`]); the terminators themselves are kept.
fn push_indented(out: &mut String, text: &str) {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        let ends_line = match c {
            '\r' => {
                if let Some(lf) = chars.next_if_eq(&'\n') {
                    out.push(lf);
                }
                true
            }
            '\n' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}' => true,
            _ => false,
        };
        if ends_line {
            out.push_str("    ");
        }
    }
}

/// The message the media mapping archives a transcript as: a text/plain
/// medium under the transcript key, authored by the conversation.
pub fn as_message(key: MessageKey, start_ms: i64, end_ms: i64, bytes: Vec<u8>) -> Message {
    let start = DateTime::<Utc>::from_timestamp_millis(start_ms).unwrap_or_default();
    let end = DateTime::<Utc>::from_timestamp_millis(end_ms).unwrap_or_default();
    let caption = format!(
        "Transcript {} – {} (UTC)",
        start.to_rfc3339_opts(SecondsFormat::Secs, true),
        end.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let source = key.source.clone();
    Message {
        event_id: key.message_id.clone(),
        conversation: String::new(),
        sender: Party {
            id: "conversation".into(),
            role: Role::Unknown,
            display: Some(format!("{source} conversation")),
        },
        recipients: Vec::new(),
        sent_at: start,
        received_at: None,
        in_reply_to: None,
        replaces: None,
        body: Body::Media(Media {
            mime_type: MIME_TYPE.into(),
            file_name: None,
            caption: Some(caption),
            declared_size: None,
            declared_sha256: None,
            location: MediaLocation::Inline(bytes),
        }),
        part: None,
        case: None,
        mark: None,
        kind: None,
        forwarded: None,
        key,
    }
}

#[cfg(test)]
mod tests;
