//! A console on a free loopback port with its own OpenID Provider, and
//! logging in through the provider's form.

use std::net::SocketAddr;
use std::sync::Arc;

use chartbridge::config::{Config, Secret};
use chartbridge::console::{ConsoleConfig, ConsoleState, OidcConfig, router};
use chartbridge::health::Health;
use chartbridge::pipeline::Pipeline;
use chartbridge::seal::Sealer;
use chartbridge::store::Store;
use fantoccini::{Client, Locator};

pub struct Console {
    pub addr: SocketAddr,
    pub provider: super::oidc::Provider,
}

impl Console {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The audit actor of `user`.
    pub fn actor(&self, user: &str) -> String {
        format!("oidc:{}#{user}", self.provider.issuer)
    }
}

/// Serves the console over `store` (and `pipeline`, for releases).
pub async fn start(
    store: Store,
    sealer: Sealer,
    pipeline: Option<Arc<Pipeline>>,
    worker: Option<(Arc<Config>, Health)>,
) -> Console {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let redirect = format!("http://{addr}/console/callback");
    let provider = super::oidc::start(&redirect).await;
    let config = ConsoleConfig {
        enabled: true,
        oidc: Some(OidcConfig {
            issuer: provider.issuer.clone(),
            client_id: "chartbridge-console".into(),
            client_secret: Secret::new("test-console-secret-not-for-production"),
            redirect_uri: redirect,
            roles_claim: "roles".into(),
        }),
        ..ConsoleConfig::default()
    };
    let state = ConsoleState::new(&config, Some(store), Some(sealer), pipeline, worker).await;
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    Console { addr, provider }
}

/// Logs `user` in through the provider's login form (a new browser
/// session first logs the previous user out of the console and provider).
pub async fn log_in(c: &Client, console: &Console, user: &str) {
    c.delete_all_cookies().await.unwrap();
    c.goto(&format!(
        "{}/.well-known/openid-configuration",
        console.provider.issuer
    ))
    .await
    .unwrap();
    c.delete_all_cookies().await.unwrap();
    c.goto(&console.url("/console/")).await.unwrap();
    c.find(Locator::Id("login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let form = c.form(Locator::Css("form")).await.unwrap();
    form.set_by_name("login", user).await.unwrap();
    form.set_by_name("password", "any").await.unwrap();
    form.submit().await.unwrap();
    c.wait().for_element(Locator::Id("logout")).await.unwrap();
}
