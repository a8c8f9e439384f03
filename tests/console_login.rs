//! Console login in a real headless Chromium against a real OpenID
//! Provider (oidc-provider, deploy/dev/oauth/server.mjs): authorization
//! code with PKCE, the session cookie's attributes, roles from the ID
//! token, CSRF on POST, logout, and both in the audit trail with the OIDC
//! subject.

mod browser;

use browser::console::{Console, log_in};
use chartbridge::seal::Sealer;
use chartbridge::store::Store;
use fantoccini::Locator;

async fn console() -> (Console, Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    Sealer::generate_key_file(&key).unwrap();
    let sealer = Sealer::load(&key).unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("state.db").display()
    );
    let store = Store::open(&url, 4, &sealer).await.unwrap();
    (
        browser::console::start(store.clone(), sealer, None, None).await,
        store,
        dir,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_login_opens_an_audited_session_with_roles_and_csrf_protected_logout() {
    let Some(browser) = browser::start().await else {
        return;
    };
    let c = &browser.client;
    let (console, store, _dir) = console().await;
    log_in(c, &console, "reviewer").await;
    let who = c
        .find(Locator::Id("who"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(who, "reviewer (reviewer)");
    browser::screenshot(c, "overview").await;

    let cookie = c
        .get_named_cookie("__Host-chartbridge-console")
        .await
        .unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Lax)");
    let session = cookie.value().to_owned();

    // A POST without the session's CSRF token changes nothing.
    let http = reqwest::Client::new();
    let forged = http
        .post(format!("http://{}/console/logout", console.addr))
        .header("cookie", format!("__Host-chartbridge-console={session}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    c.refresh().await.unwrap();
    assert!(
        c.find(Locator::Id("logout")).await.is_ok(),
        "still logged in"
    );

    c.find(Locator::Id("logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Id("login")).await.unwrap();
    let after = http
        .get(format!("http://{}/console/", console.addr))
        .header("cookie", format!("__Host-chartbridge-console={session}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        after.contains("id=\"login\""),
        "the session ended with the logout"
    );

    let trail = store.audit_trail().await.unwrap();
    let actor = console.actor("reviewer");
    let rows: Vec<(&str, &str, &str)> = trail
        .iter()
        .map(|r| (r.actor.as_str(), r.action.as_str(), r.target.as_str()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (actor.as_str(), "console.login", "roles:reviewer"),
            (actor.as_str(), "console.logout", "console"),
        ]
    );
    chartbridge::audit::verify(&trail).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_user_cannot_log_in() {
    let Some(browser) = browser::start().await else {
        return;
    };
    let c = &browser.client;
    let (console, store, _dir) = console().await;
    c.goto(&format!("http://{}/console/login", console.addr))
        .await
        .unwrap();
    let form = c.form(Locator::Css("form")).await.unwrap();
    form.set_by_name("login", "mallory").await.unwrap();
    form.set_by_name("password", "any").await.unwrap();
    form.submit().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        c.find(Locator::Id("logout")).await.is_err(),
        "no session for an unknown account"
    );
    assert!(store.audit_trail().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_provider_disables_login_not_the_console() {
    use chartbridge::config::Secret;
    use chartbridge::console::{ConsoleConfig, ConsoleState, OidcConfig, router};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = ConsoleConfig {
        enabled: true,
        oidc: Some(OidcConfig {
            issuer: format!("http://127.0.0.1:{port}"),
            client_id: "chartbridge-console".into(),
            client_secret: Secret::new("x"),
            redirect_uri: "http://127.0.0.1:9464/console/callback".into(),
            roles_claim: "roles".into(),
        }),
        ..ConsoleConfig::default()
    };
    let state = ConsoleState::new(&config, None, None, None, None).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    let get = |path: &'static str| async move {
        reqwest::get(format!("http://{addr}{path}"))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(get("/console/verify").await, 200);
    assert_eq!(get("/console/").await, 200);
    assert_eq!(get("/console/login").await, 503);
    assert_eq!(get("/console/review").await, 401, "no session");
}
