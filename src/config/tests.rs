use std::path::PathBuf;
use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
    [broker]
    url = "amqp://guest:guest@127.0.0.1:5672/%2f"
    [store]
    key_file = "k"
    [kis]
    base_url = "http://127.0.0.1:8090"
"#;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_parts(
        Path::new("test.toml"),
        text,
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

#[test]
fn defaults_are_private_and_short() {
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(c.broker.prefetch, 64);
    assert!(c.store.url.expose().starts_with("sqlite:"));
    assert_eq!(c.kis.confidentiality.code, "R");
}

#[test]
fn unknown_key_is_rejected_by_name() {
    let err = load(&format!("{MINIMAL}\n[kis2]\nx = 1"), &[]).unwrap_err();
    assert!(err.to_string().contains("kis2"), "{err}");
    let err = load(MINIMAL, &[("CHARTBRIDGE_KIS__BASEURL", "x")]).unwrap_err();
    assert!(err.to_string().contains("baseurl"), "{err}");
}

#[test]
fn env_overrides_file_and_keeps_types() {
    let c = load(
        MINIMAL,
        &[
            ("CHARTBRIDGE_KIS__BASE_URL", "https://kis.invalid/fhir"),
            ("CHARTBRIDGE_BROKER__PREFETCH", "7"),
            ("CHARTBRIDGE_CONFIG", "ignored.toml"),
            ("OTHER__X", "ignored"),
        ],
    )
    .unwrap();
    assert_eq!(c.kis.base_url, "https://kis.invalid/fhir");
    assert_eq!(c.broker.prefetch, 7);
}

#[test]
fn ii3_identity_defaults_are_cautious() {
    let c = load(MINIMAL, &[]).unwrap();
    assert!(!c.adt.enabled);
    assert_eq!(c.resolve.phone_match, PhoneMatch::Quarantine);
    assert_eq!(c.resolve.unknown_encounter, UnknownEncounter::Quarantine);
    let c = load(
        &format!(
            "{MINIMAL}\n[adt]\nenabled = true\n[adt.patient_authorities]\nKIS = \"urn:x\"\n[resolve]\nphone_match = \"accept\""
        ),
        &[("CHARTBRIDGE_RESOLVE__UNKNOWN_ENCOUNTER", "patient_only")],
    )
    .unwrap();
    assert!(c.adt.enabled);
    assert_eq!(c.adt.patient_authorities["KIS"], "urn:x");
    assert_eq!(c.resolve.phone_match, PhoneMatch::Accept);
    assert_eq!(c.resolve.unknown_encounter, UnknownEncounter::PatientOnly);
    assert!(
        load(
            &format!("{MINIMAL}\n[resolve]\nphone_match = \"maybe\""),
            &[]
        )
        .is_err()
    );
}

#[test]
fn secrets_are_masked() {
    let c = load(MINIMAL, &[("CHARTBRIDGE_KIS__BEARER_TOKEN", "tok-123")]).unwrap();
    let shown = c.to_masked_toml();
    assert!(!shown.contains("guest:guest"), "{shown}");
    assert!(!shown.contains("tok-123"), "{shown}");
    assert!(!format!("{c:?}").contains("tok-123"));
    assert_eq!(c.kis.bearer_token.unwrap().expose(), "tok-123");
}

#[test]
fn invalid_cron_is_explained() {
    let err = load(
        &format!("{MINIMAL}\n[schedule]\nretention_sweep = \"*/5 * * * *\""),
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("retention_sweep"), "{err}");
}

#[test]
fn deletion_adapters_are_chosen_per_source() {
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(c.deletion.matrix.adapter, AdapterKind::None);
    assert_eq!(c.deletion.stuck_after, Duration::from_secs(3600));
    let err = load(
        &format!("{MINIMAL}\n[deletion.matrix]\nadapter = \"whatsapp\""),
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("deletion.matrix.adapter"), "{err}");
    let err = load(
        &format!("{MINIMAL}\n[deletion.matrix]\nadapter = \"matrix\""),
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("matrix.homeserver_url"), "{err}");
    let c = load(
        &format!(
            "{MINIMAL}\n[deletion]\nstuck_after = \"10m\"\n[deletion.matrix]\nadapter = \"matrix\"\n\
             [matrix]\nhomeserver_url = \"http://127.0.0.1:8448\"\naccess_token = \"syt_x\""
        ),
        &[("CHARTBRIDGE_DELETION__WHATSAPP__ADAPTER", "none")],
    )
    .unwrap();
    assert_eq!(c.deletion.matrix.adapter, AdapterKind::Matrix);
    assert_eq!(c.deletion.stuck_after, Duration::from_secs(600));
    assert!(!c.to_masked_toml().contains("syt_x"));
}

#[test]
fn i13_schedules_default_to_short_retention_and_refuse_bad_cron() {
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(
        c.schedule.metadata_retention,
        Duration::from_secs(7 * 86_400)
    );
    assert_eq!(c.schedule.split_wait, Duration::from_secs(900));
    let c = load(
        &format!("{MINIMAL}\n[schedule]\nmetadata_purge = \"0 0 * * * *\"\nmetadata_retention = \"2d\"\nsplit_wait = \"90s\""),
        &[("CHARTBRIDGE_SCHEDULE__SPLIT_SWEEP", "*/10 * * * * *")],
    )
    .unwrap();
    assert_eq!(
        c.schedule.metadata_retention,
        Duration::from_secs(2 * 86_400)
    );
    assert_eq!(c.schedule.split_wait, Duration::from_secs(90));
    assert_eq!(c.schedule.split_sweep, "*/10 * * * * *");
    for key in ["metadata_purge", "split_sweep"] {
        let err = load(
            &format!("{MINIMAL}\n[schedule]\n{key} = \"every day\""),
            &[],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("schedule.{key}")), "{text}");
        assert!(text.contains("seconds first"), "{text}");
    }
    let err = load(
        &format!("{MINIMAL}\n[schedule]\nsplit_wait = \"soon\""),
        &[],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("split_wait") || err.to_string().contains("soon"),
        "{err}"
    );
}

#[test]
fn example_config_loads() {
    let text = include_str!("../../deploy/chartbridge.example.toml");
    let c = load(text, &[]).unwrap();
    assert_eq!(c.schedule.split_sweep, "0 * * * * *");
}

#[test]
fn proofs_default_to_unsigned_every_ten_minutes() {
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(c.proofs.origin, "chartbridge.invalid/log");
    assert_eq!(c.proofs.signing_key_file, None);
    assert_eq!(c.proofs.checkpoint_schedule, "0 */10 * * * *");
    let c = load(
        &format!("{MINIMAL}\n[proofs]\norigin = \"kis.example/log\"\nsigning_key_file = \"s.key\""),
        &[],
    )
    .unwrap();
    assert_eq!(c.proofs.origin, "kis.example/log");
    assert_eq!(c.proofs.signing_key_file, Some(PathBuf::from("s.key")));
    let err = load(&format!("{MINIMAL}\n[proofs]\nsigning_key = \"x\""), &[]).unwrap_err();
    assert!(err.to_string().contains("signing_key"), "{err}");
    let err = load(&format!("{MINIMAL}\n[proofs]\norigin = \"a b\""), &[]).unwrap_err();
    assert!(err.to_string().contains("proofs.origin"), "{err}");
}

#[test]
fn matrix_e2ee_section() {
    let c = load(MINIMAL, &[]).unwrap();
    assert!(c.matrix.e2ee.is_none());
    let c = load(
        &format!("{MINIMAL}\n[matrix.e2ee]\nstore_dir = \"sdk\"\ntrust = \"tofu\""),
        &[],
    )
    .unwrap();
    let e = c.matrix.e2ee.unwrap();
    assert_eq!(e.store_dir, PathBuf::from("sdk"));
    assert_eq!(e.trust, TrustPolicy::Tofu);
    assert_eq!(e.undecryptable_after, Duration::from_secs(86_400));
    assert_eq!(e.recovery_key_file, None);
    let c = load(
        &format!("{MINIMAL}\n[matrix.e2ee]\nstore_dir = \"sdk\""),
        &[],
    )
    .unwrap();
    assert_eq!(c.matrix.e2ee.unwrap().trust, TrustPolicy::Verified);
    for bad in ["trust = \"maybe\"", "unknown = 1"] {
        assert!(
            load(
                &format!("{MINIMAL}\n[matrix.e2ee]\nstore_dir = \"sdk\"\n{bad}"),
                &[]
            )
            .is_err(),
            "{bad}"
        );
    }
}

#[test]
fn intake_fails_closed_by_default_and_in_the_example() {
    use crate::config::AuthPolicy;
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(c.intake.policy("whatsapp").0, AuthPolicy::Required);
    assert_eq!(c.intake.policy("import").0, AuthPolicy::Required);
    let c = load(include_str!("../../deploy/chartbridge.example.toml"), &[]).unwrap();
    for source in ["whatsapp", "matrix"] {
        let (policy, publishers) = c.intake.policy(source);
        assert_eq!(policy, AuthPolicy::Required, "{source}");
        assert!(!publishers.is_empty(), "{source}");
    }
    assert_eq!(c.intake.default_auth, AuthPolicy::Required);
    let err = load(&format!("{MINIMAL}\n[intake]\nsign_with = \"absent\""), &[]).unwrap_err();
    assert!(err.to_string().contains("intake.sign_with"), "{err}");
}

#[test]
fn secrets_come_from_files_and_systemd_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("amqp-url");
    std::fs::write(&url, "amqps://gw:s3cret@mq.example:5671/%2f\n").unwrap();
    let media = dir.path().join("media-token");
    std::fs::write(&media, "0123456789").unwrap();
    let c = load(
        MINIMAL,
        &[
            ("CHARTBRIDGE_BROKER__URL_FILE", url.to_str().unwrap()),
            (
                "CHARTBRIDGE_MEDIA__ACCESS_TOKEN_FILE",
                media.to_str().unwrap(),
            ),
            (
                "CHARTBRIDGE_STORE__KEY_FILE",
                "/etc/chartbridge/at-rest.key",
            ),
        ],
    )
    .unwrap();
    assert_eq!(
        c.broker.url.expose(),
        "amqps://gw:s3cret@mq.example:5671/%2f"
    );
    assert_eq!(
        c.media.access_token.as_ref().map(Secret::expose),
        Some("0123456789"),
        "a numeric secret stays a string"
    );
    assert_eq!(c.store.key_file, Path::new("/etc/chartbridge/at-rest.key"));
    let missing = load(
        MINIMAL,
        &[("CHARTBRIDGE_BROKER__URL_FILE", "/nonexistent/x")],
    );
    assert!(
        matches!(&missing, Err(ConfigError::Env { var, .. }) if var == "CHARTBRIDGE_BROKER__URL_FILE"),
        "{missing:?}"
    );

    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("broker.url"), "amqps://from-credential\n").unwrap();
    std::fs::write(creds.path().join("store.key_file"), "root AAAA\n").unwrap();
    std::fs::write(creds.path().join("unrelated"), "x").unwrap();
    let dir_text = creds.path().to_str().unwrap();
    let c = load(MINIMAL, &[("CREDENTIALS_DIRECTORY", dir_text)]).unwrap();
    assert_eq!(c.broker.url.expose(), "amqps://from-credential");
    assert_eq!(c.store.key_file, creds.path().join("store.key_file"));
    // An explicit environment override wins over a credential.
    let c = load(
        MINIMAL,
        &[
            ("CREDENTIALS_DIRECTORY", dir_text),
            ("CHARTBRIDGE_BROKER__URL", "amqps://from-env"),
        ],
    )
    .unwrap();
    assert_eq!(c.broker.url.expose(), "amqps://from-env");
}
