#![no_main]
//! The Matrix room event decoder.

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::decode_forcing(data, "type", "m.room.message".into());
});
