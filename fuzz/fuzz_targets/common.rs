//! Shared by the decode targets: feed the raw bytes, then the same bytes as a
//! JSON object forced into one format (so the fuzzer explores that decoder
//! instead of stopping at format sniffing).

use chartbridge::event;

/// The limit the worker applies by default (`broker.max_event_bytes`).
pub const MAX: usize = 1 << 20;

/// Decodes `data`; when it is a JSON object, also decodes it with `key` set
/// to `value`. Refusals are values: any panic is a finding.
pub fn decode_forcing(data: &[u8], key: &str, value: serde_json::Value) {
    let _ = event::decode(data, MAX);
    if let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_slice(data) {
        obj.insert(key.to_owned(), value);
        if let Ok(bytes) = serde_json::to_vec(&obj) {
            let _ = event::decode(&bytes, MAX);
        }
    }
}
