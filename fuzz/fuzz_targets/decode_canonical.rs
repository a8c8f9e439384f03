#![no_main]
//! The canonical event decoder (schema validation, then parsing).

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::decode_forcing(data, "schema", chartbridge::event::SCHEMA_ID.into());
});
