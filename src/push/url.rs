//! The one place KIS (and messenger media) URLs and FHIR search strings are
//! built. Every value is escaped as a FHIR search value and then
//! percent-encoded, every path segment percent-encoded, so a message id
//! such as `a+b/c=d&e%f,g|h` never changes the meaning of a URL: it cannot
//! add a parameter, split into alternatives (`,`), move the system/code
//! boundary of a token (`|`), or match another resource.
//!
//! - FHIR R4 search, "Escaping Search Parameters" (§3.1.1.x,
//!   <https://hl7.org/fhir/R4/search.html#escaping>): in a value, `\`, `,`,
//!   `$` and `|` are escaped with a backslash.
//! - RFC 3986: everything outside the unreserved set (`A–Z a–z 0–9 - . _ ~`)
//!   is percent-encoded (UTF-8), in path segments and in query names and
//!   values alike (a space becomes `%20`, `+` becomes `%2B`).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Refuses an `http://` base URL (no TLS) whose host is not loopback unless
/// `allow_plaintext`; `https://` always passes. `setting` names the key in
/// the error.
pub fn check_transport(setting: &str, url: &str, allow_plaintext: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|_| format!("{setting} is not a URL"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => crate::transport::check_plaintext(
            setting,
            parsed.host_str().unwrap_or(""),
            allow_plaintext,
        ),
        _ => Err(format!("{setting} must be an http(s) URL")),
    }
}

/// Everything but RFC 3986 unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One search parameter value, before escaping and encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchValue<'a> {
    /// A token `{system}|{code}`: both parts escaped, joined by a bare `|`.
    Token { system: &'a str, code: &'a str },
    /// A single value (string, number, `_count`): escaped.
    Value(&'a str),
}

/// FHIR search escaping of one value: `\` `,` `$` `|` get a backslash.
pub fn escape_search(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '$' | '|') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// A search query without the `?`: `name=value&…`, each value escaped as a
/// FHIR search value, names and values percent-encoded. Used as the query
/// of a search URL, as an `If-None-Exist` header and as a transaction
/// entry's `request.ifNoneExist`.
pub fn query(params: &[(&str, SearchValue<'_>)]) -> String {
    params
        .iter()
        .map(|(name, value)| {
            let raw = match value {
                SearchValue::Token { system, code } => {
                    format!("{}|{}", escape_search(system), escape_search(code))
                }
                SearchValue::Value(v) => escape_search(v),
            };
            format!("{}={}", encode(name), encode(&raw))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `{base}/{segment}/…[?{query}]`: `base` as configured (a trailing `/` is
/// dropped), each segment percent-encoded, the query from [`query`]. An
/// empty `segments` gives the base itself (a FHIR transaction endpoint).
pub fn build(base: &str, segments: &[&str], params: &[(&str, SearchValue<'_>)]) -> String {
    let mut url = base.trim_end_matches('/').to_owned();
    for s in segments {
        url.push('/');
        url.push_str(&encode(s));
    }
    if !params.is_empty() {
        url.push('?');
        url.push_str(&query(params));
    }
    url
}

/// The segments of a relative literal reference, `Type/id` or
/// `Type/id/_history/v`, for [`build`].
pub fn reference_segments(reference: &str) -> Vec<&str> {
    reference.split('/').filter(|s| !s.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_then_percent_encoded() {
        assert_eq!(escape_search(r"a,b|c$d\e"), r"a\,b\|c\$d\\e");
        let q = query(&[(
            "identifier",
            SearchValue::Token {
                system: "urn:sys",
                code: "whatsapp:x+y/z=1&2%3,4|5 6",
            },
        )]);
        assert_eq!(
            q,
            "identifier=urn%3Asys%7Cwhatsapp%3Ax%2By%2Fz%3D1%262%253%5C%2C4%5C%7C5%206"
        );
        // Exactly one `&`-separated parameter and one unescaped `|`.
        assert_eq!(q.matches('&').count(), 0);
        let decoded = percent_encoding::percent_decode_str(q.split_once('=').unwrap().1)
            .decode_utf8()
            .unwrap();
        assert_eq!(decoded, r"urn:sys|whatsapp:x+y/z=1&2%3\,4\|5 6");
    }

    #[test]
    fn paths_encode_each_segment() {
        assert_eq!(
            build("http://kis/fhir/", &["Binary", "a/b c"], &[]),
            "http://kis/fhir/Binary/a%2Fb%20c"
        );
        assert_eq!(build("http://kis/fhir", &[], &[]), "http://kis/fhir");
        assert_eq!(
            build(
                "http://graph/v21.0",
                &["13762+23/=&?#"],
                &[("_count", SearchValue::Value("2"))]
            ),
            "http://graph/v21.0/13762%2B23%2F%3D%26%3F%23?_count=2"
        );
        assert_eq!(
            reference_segments("Communication/7/_history/2"),
            ["Communication", "7", "_history", "2"]
        );
    }
}
