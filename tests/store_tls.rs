//! PostgreSQL over TLS with `sslmode=verify-full` against a private cluster
//! that accepts TLS only (deploy/dev/tls-postgres.sh, port 5439, a server
//! certificate for `localhost` made here): the store connects and runs its
//! migrations when the server proves its name under the configured CA, and
//! refuses a server of another CA or of another name. A plaintext mode
//! towards a remote host is refused by the configuration.

mod common;

use std::path::Path;
use std::process::Command;

use chartbridge::config::Config;
use chartbridge::store::Store;
use common::pki::{Pki, write};

const PORT: u16 = 5439;

struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    fn script(&self, args: &[&str]) -> std::process::Output {
        Command::new(common::repo().join("deploy/dev/tls-postgres.sh"))
            .args(args)
            .env("TLS_PG_PORT", PORT.to_string())
            .env("TLS_PG_DIR", self.dir.path().join("pg"))
            .env("TLS_PG_CERT_DIR", self.dir.path().join("certs"))
            .output()
            .unwrap()
    }

    fn start(pki: &Pki) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // The server runs as the postgres user: it must reach its directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        let server = pki.server(&["localhost"]);
        write(&certs, "server.pem", &server.pem);
        write(&certs, "server.key", &server.key);
        let cluster = Self { dir };
        let out = cluster.script(&["start"]);
        assert!(
            out.status.success(),
            "private PostgreSQL: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.script(&["stop"]);
    }
}

/// The store URL as the configuration makes it.
fn store_url(url: &str) -> Result<String, String> {
    let text = format!(
        "[broker]\nurl = \"amqp://127.0.0.1\"\n[store]\nurl = \"{url}\"\nkey_file = \"k\"\n\
         [kis]\nbase_url = \"http://127.0.0.1:1\"\n"
    );
    Config::from_parts(Path::new("t.toml"), &text, [])
        .map(|c| c.store.url.expose().to_owned())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_full_against_a_tls_only_server() {
    let hospital = Pki::new("hospital test CA");
    let cluster = Cluster::start(&hospital);
    let ca = write(cluster.dir.path(), "ca.pem", &hospital.ca_pem());
    let url = |host: &str, ca: &Path, mode: &str| {
        format!(
            "postgres://postgres@{host}:{PORT}/postgres?sslmode={mode}&sslrootcert={}",
            ca.display()
        )
    };

    // The server proves its name under the hospital CA: connected over TLS,
    // migrations run.
    let store = Store::connect(
        &store_url(&url("localhost", &ca, "verify-full")).unwrap(),
        2,
    )
    .await
    .unwrap();
    store.close().await;
    let pool = sqlx::PgPool::connect(&url("localhost", &ca, "verify-full"))
        .await
        .unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(ssl, "the connection is encrypted");
    pool.close().await;

    // Another CA, or a name the certificate does not carry: refused.
    let stranger = write(
        cluster.dir.path(),
        "other-ca.pem",
        &Pki::new("other CA").ca_pem(),
    );
    assert!(
        Store::connect(&url("localhost", &stranger, "verify-full"), 1)
            .await
            .is_err()
    );
    assert!(
        Store::connect(&url("127.0.0.1", &ca, "verify-full"), 1)
            .await
            .is_err()
    );
    // The server itself refuses plaintext.
    assert!(
        Store::connect(&url("localhost", &ca, "disable"), 1)
            .await
            .is_err()
    );
    drop(cluster);
}

#[test]
fn a_remote_postgres_gets_verify_full_and_plaintext_needs_consent() {
    assert_eq!(
        store_url("postgres://cb@db.hospital.invalid/cb").unwrap(),
        "postgres://cb@db.hospital.invalid/cb?sslmode=verify-full"
    );
    let err = store_url("postgres://cb@db.hospital.invalid/cb?sslmode=prefer").unwrap_err();
    assert!(err.contains("store.allow_plaintext"), "{err}");
    let text = "[broker]\nurl = \"amqp://127.0.0.1\"\n[store]\n\
                url = \"postgres://cb@db.hospital.invalid/cb?sslmode=disable\"\n\
                key_file = \"k\"\nallow_plaintext = true\n[kis]\nbase_url = \"http://127.0.0.1:1\"\n";
    assert!(Config::from_parts(Path::new("t.toml"), text, []).is_ok());
}
