//! HL7 v2.5 MDM^T02 (original document notification and content) for KIS
//! that take no FHIR, rendered from the FHIR transaction that [`super::transaction`]
//! built: one mapping, two wire formats. Pure.
//!
//! Segments: MSH, EVN, PID (patient id from the literal `Patient/{id}`),
//! PV1 (visit number from `Encounter/{id}`, if any), TXA (document type =
//! KDL code, unique document number = the DocumentReference master
//! identifier or the message identifier, status AU), OBX 1 with the content
//! (TX for text, ED Base64 for media), OBX 2 with the content's SHA-256,
//! then one OBX each for what the FHIR record carries beside the content:
//! `NOTE` (TX, a forward's note on a text), `DESCRIPTION` (TX, a medium's
//! caption or the forward's note and caption, as
//! `DocumentReference.description`) and `FILENAME` (ST, the attachment's
//! title), numbered from 3.

use chrono::{DateTime, Utc};

use super::{MapError, Primary, Transaction, sha256_extension};

/// Header fields of the v2 messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdmSettings {
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    /// Assigning authority of PID-3 and PV1-19 (the KIS's namespace).
    pub assigning_authority: String,
}

fn err(message: &str) -> MapError {
    MapError::Build {
        resource: "MDM^T02",
        message: message.into(),
    }
}

/// HL7 v2 escaping of a field value (v2.5 chapter 2.7): the delimiters
/// `|^~\&` as `\F\ \S\ \R\ \E\ \T\`, and every control character but
/// TAB (CR, LF, the MLLP block bytes 0x0B and 0x1C, NUL, ESC, DEL, C1) as
/// hexadecimal data `\Xhh…\` of its UTF-8 bytes (2.7.5): a raw 0x1C CR
/// would end the MLLP frame inside the text (MLLP release 2: the content
/// never holds the block bytes), and the receiver would file what came
/// before it.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\E\\"),
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '&' => out.push_str("\\T\\"),
            '~' => out.push_str("\\R\\"),
            '\t' => out.push(c),
            c if c.is_control() => {
                out.push_str("\\X");
                let mut utf8 = [0; 4];
                for b in c.encode_utf8(&mut utf8).as_bytes() {
                    out.push_str(&format!("{b:02X}"));
                }
                out.push('\\');
            }
            c => out.push(c),
        }
    }
    out
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y%m%d%H%M%S+0000").to_string()
}

fn ts_of(fhir: &str) -> Option<String> {
    DateTime::parse_from_rfc3339(fhir)
        .ok()
        .map(|t| ts(t.with_timezone(&Utc)))
}

fn id_of<'a>(reference: &'a str, resource_type: &str) -> Option<&'a str> {
    reference
        .strip_prefix(resource_type)?
        .strip_prefix('/')
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// The MDM^T02 for `tx` with message control id `control_id`, created at
/// `now`. Segments end with CR, as MLLP carries them.
pub fn mdm_t02(
    tx: &Transaction,
    document_type: Option<&super::DocumentType>,
    settings: &MdmSettings,
    control_id: &str,
    now: DateTime<Utc>,
) -> Result<String, MapError> {
    let entries = tx.bundle["entry"]
        .as_array()
        .ok_or_else(|| err("bundle without entries"))?;
    let primary = &entries
        .get(tx.primary_entry)
        .ok_or_else(|| err("no primary entry"))?["resource"];
    let patient_ref = primary["subject"]["reference"]
        .as_str()
        .ok_or_else(|| err("no subject"))?;
    let patient =
        id_of(patient_ref, "Patient").ok_or_else(|| err("subject is not Patient/{id}"))?;
    let encounter_ref = match tx.primary {
        Primary::Communication => primary["encounter"]["reference"].as_str(),
        Primary::DocumentReference => primary["context"]["encounter"][0]["reference"].as_str(),
    };
    let encounter = encounter_ref.and_then(|e| id_of(e, "Encounter"));
    let auth = escape(&settings.assigning_authority);

    // What the FHIR record says beside the content (a medium's caption and
    // file name, a forward's note): NTE-free OBX rows of their own, so the
    // KIS keeps all of it (the messenger copy is deleted after the AA).
    let mut notes: Vec<(&str, &str, &str)> = Vec::new();
    let (doc_type, activity, unique, obx, sha256) = match tx.primary {
        Primary::Communication => {
            let payload = &primary["payload"][0];
            let text = super::communication::payload_text(payload)
                .and_then(|t| String::from_utf8(t).ok())
                .ok_or_else(|| err("no text"))?;
            let text = text.as_str();
            let identifier = primary["identifier"][0]["value"]
                .as_str()
                .ok_or_else(|| err("no identifier"))?;
            // Every note: a forward's, a split group's "incomplete" marker.
            for note in primary["note"].as_array().into_iter().flatten() {
                if let Some(text) = note["text"].as_str() {
                    notes.push(("TX", "NOTE^Note^L", text));
                }
            }
            let kdl = document_type.map_or_else(
                || "ED190199^Sonstiger elektronischer Schriftverkehr^KDL".to_owned(),
                |d| format!("{}^{}^KDL", escape(&d.code), escape(&d.display)),
            );
            (
                kdl.clone(),
                primary["sent"].as_str().and_then(ts_of),
                identifier.to_owned(),
                format!("OBX|1|TX|{kdl}||{}||||||F", escape(text)),
                sha256_extension(&payload["extension"]).map(str::to_owned),
            )
        }
        Primary::DocumentReference => {
            let coding = &primary["type"]["coding"][0];
            let code = coding["code"].as_str().ok_or_else(|| err("no type code"))?;
            let display = coding["display"].as_str().unwrap_or_default();
            let att = &primary["content"][0]["attachment"];
            let mime = att["contentType"]
                .as_str()
                .ok_or_else(|| err("no contentType"))?;
            let (main, sub) = mime.split_once('/').unwrap_or(("application", mime));
            let binary = entries
                .iter()
                .map(|e| &e["resource"])
                .find(|r| r["resourceType"] == "Binary")
                .ok_or_else(|| err("no Binary"))?;
            let data = binary["data"].as_str().ok_or_else(|| err("no data"))?;
            let unique = primary["masterIdentifier"]["value"]
                .as_str()
                .ok_or_else(|| err("no masterIdentifier"))?;
            if let Some(description) = primary["description"].as_str() {
                notes.push(("TX", "DESCRIPTION^Description^L", description));
            }
            if let Some(title) = att["title"].as_str() {
                notes.push(("ST", "FILENAME^File name^L", title));
            }
            let kind = if main == "image" || main == "video" {
                "IM"
            } else {
                "AP"
            };
            (
                format!("{}^{}^KDL", escape(code), escape(display)),
                att["creation"].as_str().and_then(ts_of),
                unique.to_owned(),
                format!(
                    "OBX|1|ED|{}^{}^KDL||^{kind}^{}^Base64^{data}||||||F",
                    escape(code),
                    escape(display),
                    escape(sub),
                ),
                sha256_extension(&att["extension"]).map(str::to_owned),
            )
        }
    };
    let sha256 = sha256.ok_or_else(|| err("no content-sha256"))?;
    let now_ts = ts(now);
    let mut segments = vec![
        format!(
            "MSH|^~\\&|{}|{}|{}|{}|{now_ts}||MDM^T02^MDM_T02|{}|P|2.5||||||UNICODE UTF-8",
            escape(&settings.sending_application),
            escape(&settings.sending_facility),
            escape(&settings.receiving_application),
            escape(&settings.receiving_facility),
            escape(control_id),
        ),
        format!("EVN|T02|{now_ts}"),
        format!("PID|1||{}^^^{auth}^PI", escape(patient)),
        match encounter {
            Some(e) => format!("PV1|1|U|||||||||||||||||{}^^^{auth}^VN", escape(e)),
            None => "PV1|1|U".to_owned(),
        },
        format!(
            "TXA|1|{doc_type}|{}|{}|||{now_ts}|||||{}||||||AU",
            if tx.primary == Primary::Communication {
                "TX"
            } else {
                "ED"
            },
            activity.unwrap_or_else(|| now_ts.clone()),
            escape(&unique),
        ),
        obx,
        format!("OBX|2|ST|SHA256^Content SHA-256^L||{sha256}||||||F"),
    ];
    for (i, (value_type, id, value)) in notes.into_iter().enumerate() {
        segments.push(format!(
            "OBX|{}|{value_type}|{id}||{}||||||F",
            i + 3,
            escape(value)
        ));
    }
    let mut out = segments.join("\r");
    out.push('\r');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_delimiters_out_of_fields() {
        assert_eq!(
            escape("a|b^c&d~e\\f\r\ng"),
            "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\X0D\\\\X0A\\g"
        );
        // Control characters never reach the frame raw: the MLLP block
        // bytes, NUL, ESC, DEL and C1 as hexadecimal data; TAB stays.
        assert_eq!(
            escape("5 mg\u{1c}\rweiter\u{0b}a\u{0}\u{1b}\u{7f}\u{85}\tb"),
            "5 mg\\X1C\\\\X0D\\weiter\\X0B\\a\\X00\\\\X1B\\\\X7F\\\\XC285\\\tb"
        );
        assert!(!escape("a\u{1c}\u{0b}b").contains(['\u{1c}', '\u{0b}']));
        assert_eq!(id_of("Patient/12", "Patient"), Some("12"));
        assert_eq!(id_of("Patient/12/_history/1", "Patient"), None);
        assert_eq!(id_of("Encounter/1", "Patient"), None);
    }
}
