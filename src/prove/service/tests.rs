//! Parsing of targets and key files; no panics on bad input.

use std::path::Path;

use super::*;
use crate::prove::note::Signer;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn targets_parse_or_explain() {
    assert_eq!(
        ProofTarget::message("whatsapp:wamid.X:1").unwrap(),
        ProofTarget::Message(MessageKey {
            source: "whatsapp".into(),
            message_id: "wamid.X:1".into()
        })
    );
    for bad in ["", "whatsapp", ":x", "x:"] {
        assert!(matches!(
            ProofTarget::message(bad),
            Err(ServiceError::Request(_))
        ));
    }
    assert!(ProofTarget::resource("DocumentReference/1").is_ok());
    for bad in ["DocumentReference", "/1", "A/", "A/1/2", "A/1 2"] {
        assert!(
            matches!(ProofTarget::resource(bad), Err(ServiceError::Request(_))),
            "{bad}"
        );
    }
}

#[test]
fn key_files_are_values_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::from_seed("log.test", &[7; 32]).unwrap();
    let vkey = signer.verifier().to_string();
    let lines = write(
        dir.path(),
        "keys.txt",
        &format!("# operator key\n\n{vkey}\n"),
    );
    let keys = load_trusted_keys(&lines).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].check_signing_time(0), Ok(()));
    let list = vec![KeyInfo::new(&signer.verifier(), 5)];
    let json = write(
        dir.path(),
        "keys.json",
        &serde_json::to_string(&list).unwrap(),
    );
    assert_eq!(load_trusted_keys(&json).unwrap(), list);
    for (name, text) in [
        ("empty", ""),
        ("garbage", "not a key"),
        ("badjson", "[{\"name\": 1}]"),
        ("private", &signer.to_private_key_string()),
    ] {
        let p = write(dir.path(), name, text);
        assert!(
            matches!(load_trusted_keys(&p), Err(ServiceError::File { .. })),
            "{name}"
        );
    }
    assert!(load_trusted_keys(&dir.path().join("missing")).is_err());
    assert!(load_signer(&lines).is_err());
}

#[test]
fn signer_files_round_trip_and_never_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signer.key");
    let made = generate_signer_file("log.test", &path).unwrap();
    assert_eq!(load_signer(&path).unwrap().verifier(), made.verifier());
    assert!(generate_signer_file("log.test", &path).is_err());
    assert!(generate_signer_file("bad name", &dir.path().join("x")).is_err());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "signer key readable by others");
    }
}

#[test]
fn bad_bundle_files_fail_at_format() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("a", &b"{"[..]),
        ("b", &[0xff, 0xfe][..]),
        ("c", &b"{\"format\":1}"[..]),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let v = verify_bundle_files(&p, None, None).unwrap();
        assert!(!v.verified);
        assert_eq!(v.failed_step, Some(crate::prove::bundle::Step::Format));
        assert!(v.human().starts_with("FAIL Format"), "{}", v.human());
    }
    assert!(verify_bundle_files(&dir.path().join("none"), None, None).is_err());
}
