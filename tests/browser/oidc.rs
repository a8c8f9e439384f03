//! A private instance of the dev OpenID Provider (deploy/dev/oauth/server.mjs,
//! oidc-provider) on a free port, with the console client's redirect URI
//! pointing at the test's console. Its node packages come from
//! `$CHARTBRIDGE_CACHE/oauth-server` (`deploy/dev/oauth-server.sh` installs them).

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::{Child, Command};

pub struct Provider {
    pub issuer: String,
    _child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the provider; `redirect_uri` is the console's callback.
pub async fn start(redirect_uri: &str) -> Provider {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cache = std::env::var_os("CHARTBRIDGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/chartbridge")
        });
    let modules = cache.join("oauth-server/node_modules");
    if !modules.join("oidc-provider").is_dir() {
        let ok = std::process::Command::new("bash")
            .arg(repo.join("deploy/dev/oauth-server.sh"))
            .arg("install")
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok && modules.join("oidc-provider").is_dir(),
            "oidc-provider packages: run deploy/dev/oauth-server.sh start once"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo.join("deploy/dev/oauth/server.mjs"),
        dir.path().join("server.mjs"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&modules, dir.path().join("node_modules")).unwrap();
    let port = free_port();
    let child = Command::new("node")
        .arg("server.mjs")
        .current_dir(dir.path())
        .env("OAUTH_PORT", port.to_string())
        .env("OAUTH_KEYS_DIR", repo.join("fixtures/oauth"))
        .env("OAUTH_CONSOLE_REDIRECT_URIS", redirect_uri)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs the dev OpenID Provider");
    let issuer = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{issuer}/.well-known/openid-configuration"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Provider {
                issuer,
                _child: child,
                _dir: dir,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the dev OpenID Provider did not start");
}
