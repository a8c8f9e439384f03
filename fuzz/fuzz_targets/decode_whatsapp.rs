#![no_main]
//! The WhatsApp Business webhook decoder.

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::decode_forcing(data, "object", "whatsapp_business_account".into());
});
