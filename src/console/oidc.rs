//! OpenID Connect login (OpenID Connect Core 1.0 §3.1, authorization code
//! flow) with PKCE (RFC 7636, S256) through the `openidconnect` crate.
//! The ID token is verified (signature against the issuer's JWKS, issuer,
//! audience, expiry, nonce) before the `roles` claim is read from it.

use std::future::Future;
use std::pin::Pin;

use base64::Engine;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AsyncHttpClient, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};

use crate::config::secret::Secret;

use super::session::Role;

/// `[console.oidc]`: the OpenID Provider and this console's client there.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Issuer URL; its `/.well-known/openid-configuration` is read at start.
    pub issuer: String,
    /// The console's client id at the provider.
    pub client_id: String,
    /// The client secret (`client_secret_basic`); `*_FILE` env overrides work.
    pub client_secret: Secret,
    /// Where the provider sends the browser back: `<console URL>/console/callback`.
    pub redirect_uri: String,
    /// The ID token claim holding the role names (default `roles`); also
    /// requested as a scope.
    #[serde(default = "roles")]
    pub roles_claim: String,
}

fn roles() -> String {
    "roles".into()
}

/// Why a login failed; shown to the user without details of the token.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("OpenID Provider discovery failed: {0}")]
    Discovery(String),
    #[error("invalid console.oidc setting: {0}")]
    Config(String),
    #[error("code exchange failed: {0}")]
    Exchange(String),
    #[error("ID token rejected: {0}")]
    IdToken(String),
}

/// The HTTP client the OpenID flows use: reqwest without redirects.
#[derive(Debug, Clone)]
pub struct Http(reqwest::Client);

/// A transport failure of [`Http`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let mut req = self
                .0
                .request(parts.method, parts.uri.to_string())
                .body(body);
            for (name, value) in &parts.headers {
                req = req.header(name, value);
            }
            let resp = req.send().await.map_err(|e| HttpError(e.to_string()))?;
            let mut out = http_response(resp.status().as_u16());
            for (name, value) in resp.headers() {
                out.headers_mut().append(name, value.clone());
            }
            *out.body_mut() = resp
                .bytes()
                .await
                .map_err(|e| HttpError(e.to_string()))?
                .to_vec();
            Ok(out)
        })
    }
}

fn http_response(status: u16) -> HttpResponse {
    let mut r = HttpResponse::new(Vec::new());
    *r.status_mut() = openidconnect::http::StatusCode::from_u16(status)
        .unwrap_or(openidconnect::http::StatusCode::BAD_GATEWAY);
    r
}

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The console's relying party: the discovered provider and the client.
#[derive(Debug, Clone)]
pub struct Oidc {
    client: Client,
    http: Http,
    issuer: String,
    roles_claim: String,
}

/// A login started: send the browser to `url`; keep the rest until the callback.
pub struct Started {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// A verified login.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub issuer: String,
    pub subject: String,
    pub roles: Vec<Role>,
}

impl Oidc {
    /// Discovers the provider (`GET {issuer}/.well-known/openid-configuration`
    /// and its JWKS). Errors: unreachable provider, bad metadata or URLs.
    pub async fn discover(config: &OidcConfig) -> Result<Self, OidcError> {
        let http = Http(
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .map_err(|e| OidcError::Config(e.to_string()))?,
        );
        let issuer =
            IssuerUrl::new(config.issuer.clone()).map_err(|e| OidcError::Config(e.to_string()))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &http)
            .await
            .map_err(|e| OidcError::Discovery(e.to_string()))?;
        let redirect = RedirectUrl::new(config.redirect_uri.clone())
            .map_err(|e| OidcError::Config(e.to_string()))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(config.client_id.clone()),
            Some(ClientSecret::new(config.client_secret.expose().to_owned())),
        )
        .set_redirect_uri(redirect);
        Ok(Self {
            client,
            http,
            issuer: config.issuer.clone(),
            roles_claim: config.roles_claim.clone(),
        })
    }

    /// The authorization request (scopes `openid` and the roles claim),
    /// with a fresh state, nonce and PKCE S256 challenge.
    pub fn start(&self) -> Started {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = self
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new(self.roles_claim.clone()))
            .set_pkce_challenge(challenge)
            .url();
        Started {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        }
    }

    /// Exchanges `code` (with the PKCE verifier), verifies the ID token
    /// against `nonce` and reads subject and roles. Unknown role names are
    /// ignored.
    pub async fn finish(
        &self,
        code: &str,
        nonce: &str,
        pkce_verifier: &str,
    ) -> Result<LoggedIn, OidcError> {
        let response = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Exchange(e.to_string()))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::IdToken("no id_token in the token response".into()))?;
        let claims = id_token
            .claims(
                &self.client.id_token_verifier(),
                &Nonce::new(nonce.to_owned()),
            )
            .map_err(|e| OidcError::IdToken(e.to_string()))?;
        // The signature over the payload was verified just above; read the
        // roles claim from that same payload.
        let jwt = id_token.to_string();
        let payload = jwt
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
            .ok_or_else(|| OidcError::IdToken("payload unreadable".into()))?;
        let roles = payload[self.roles_claim.as_str()]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().and_then(Role::parse))
                    .collect()
            })
            .unwrap_or_default();
        Ok(LoggedIn {
            issuer: self.issuer.clone(),
            subject: claims.subject().to_string(),
            roles,
        })
    }
}
