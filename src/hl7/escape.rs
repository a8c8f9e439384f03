//! Field values: escape sequences, the null value, encoding characters.

use super::*;

/// The null value of HL7 v2: the sender asks to delete the stored value.
pub(super) const NULL: &str = "\"\"";

pub(super) fn raw<'a>(field: Option<&'a Field<'a>>) -> &'a str {
    field.map(|f| f.raw_value()).unwrap_or("")
}

/// Decodes the escape sequences of a value (HL7 v2 chapter 2, "Use of
/// escape sequences in text fields"): `\F\ \S\ \T\ \R\ \E\`, `\P\` (the
/// v2.7 truncation character), `\Xhh…\` (bytes in the message's character
/// set: UTF-8 when they form UTF-8, else 8859/1), `.br` (a line break).
/// Highlighting (`\H\ \N\`), character set switches (`\C…\ \M…\`),
/// locally defined (`\Z…\`) and other formatting escapes carry no text
/// and are dropped. `Err` with the text so far when an escape sequence is
/// not terminated (a value cut inside an escape).
pub(super) fn unescape(enc: &Encoding, value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find(enc.escape) {
        out.push_str(&rest[..start]);
        let after = &rest[start + enc.escape.len_utf8()..];
        let Some(end) = after.find(enc.escape) else {
            return Err(out);
        };
        let seq = &after[..end];
        match seq {
            "F" => out.push(enc.field),
            "R" => out.push(enc.repetition),
            "S" => out.push(enc.component),
            "T" => out.push(enc.subcomponent),
            "E" => out.push(enc.escape),
            "P" => out.push(enc.truncation.unwrap_or('#')),
            ".br" => out.push('\r'),
            "H" | "N" => {}
            s if s.starts_with('X') && s.len() > 1 && s.len() % 2 == 1 => {
                match hex::decode(&s[1..]) {
                    Ok(bytes) => match String::from_utf8(bytes) {
                        Ok(t) => out.push_str(&t),
                        Err(e) => out.extend(e.into_bytes().iter().map(|&b| b as char)),
                    },
                    Err(_) => out.push_str(s),
                }
            }
            s if s.starts_with(['C', 'M', 'Z', '.']) => {}
            other => out.push_str(other),
        }
        rest = &after[end + enc.escape.len_utf8()..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
pub(super) fn encoding_of(seps: &Separators) -> Encoding {
    Encoding {
        field: seps.field,
        component: seps.component,
        repetition: seps.repetition,
        escape: seps.escape,
        subcomponent: seps.subcomponent,
        truncation: None,
    }
}

/// Decodes the escape sequences of a field (`\F\`, `\S\`, …), leniently: an
/// unterminated escape drops the rest. Our own: hl7-parser 0.3's decoder
/// slices by character count and panics on non-ASCII text before an escape
/// (found by fuzzing, `fuzz/regressions/hl7_adt/`).
#[cfg(test)]
pub(super) fn decoded(seps: &Separators, value: &str) -> String {
    unescape(&encoding_of(seps), value).unwrap_or_else(|partial| partial)
}
