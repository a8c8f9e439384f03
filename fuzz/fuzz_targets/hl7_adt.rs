#![no_main]
//! The HL7 v2 ADT feed's parser: header extraction (for the ACK) and the
//! full ADT parse, on any bytes that are UTF-8 or Latin-1.

use chartbridge::hl7;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = match std::str::from_utf8(data) {
        Ok(t) => t.to_owned(),
        Err(_) => data.iter().map(|&b| b as char).collect(),
    };
    let _ = hl7::header(&text);
    let _ = hl7::parse_adt(&text, "49");
});
