#![no_main]
//! Proof bundles as a compliance officer hands them to `chartbridge verify`:
//! parse, then verify (with and without content), plus the leaf record and
//! checkpoint parsers on their own.

use chartbridge::prove::bundle::{ProofBundle, verify_bundle};
use chartbridge::prove::checkpoint::Checkpoint;
use chartbridge::prove::leaf::LeafRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = LeafRecord::decode(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Checkpoint::parse(text);
    let _ = Checkpoint::from_note_unverified(text);
    if let Ok(bundle) = ProofBundle::from_json(text) {
        let _ = verify_bundle(&bundle, None, None);
        let _ = verify_bundle(&bundle, Some(b"content"), Some(&bundle.keys));
        let _ = ProofBundle::from_json(&bundle.to_json());
    }
});
