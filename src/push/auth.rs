//! Authentication towards the KIS (DSK II.1): none, a static bearer token,
//! OAuth2 client credentials (client secret, HTTP Basic) or SMART Backend
//! Services (client credentials with a JWT client assertion signed RS384 or
//! ES384, RFC 7523). Tokens are cached until `refresh_margin` before they
//! expire and re-fetched once when the KIS answers 401.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use rustls::SignatureScheme;
use rustls::sign::SigningKey;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::auth_config::{AuthConfig, JwtAlgorithm, OAuthClient};
use super::{PushError, SetupError};
use crate::config::secret::Secret;

impl JwtAlgorithm {
    fn scheme(self) -> SignatureScheme {
        match self {
            Self::RS384 => SignatureScheme::RSA_PKCS1_SHA384,
            Self::ES384 => SignatureScheme::ECDSA_NISTP384_SHA384,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Self::RS384 => "RS384",
            Self::ES384 => "ES384",
        }
    }
}

/// The private key of the client assertions: RSA through rustls' signer
/// (PKCS#1 v1.5, SHA-384); ECDSA P-384 through aws-lc-rs, which signs in
/// the fixed-width `r || s` form JWS wants (RFC 7518 §3.4).
enum AssertionKey {
    Rsa(Arc<dyn SigningKey>),
    Ecdsa(aws_lc_rs::signature::EcdsaKeyPair),
}

/// Signs SMART Backend Services client assertions.
pub struct AssertionSigner {
    key: AssertionKey,
    algorithm: JwtAlgorithm,
    key_id: Option<String>,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl AssertionSigner {
    /// From a PKCS#8 (or SEC1/PKCS#1) PEM private key.
    pub fn from_pem(
        pem: &[u8],
        algorithm: Option<JwtAlgorithm>,
        key_id: Option<String>,
    ) -> Result<Self, SetupError> {
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|_| SetupError::Auth("kis.auth.private_key_file is not a PEM private key"))?;
        let key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
            .map_err(|_| SetupError::Auth("kis.auth.private_key_file: unsupported key type"))?;
        let algorithm = match (algorithm, key.algorithm()) {
            (Some(a), _) => a,
            (None, rustls::SignatureAlgorithm::RSA) => JwtAlgorithm::RS384,
            (None, _) => JwtAlgorithm::ES384,
        };
        if key.choose_scheme(&[algorithm.scheme()]).is_none() {
            return Err(SetupError::Auth(
                "kis.auth.algorithm does not fit the private key (ES384 needs P-384, RS384 RSA)",
            ));
        }
        let key = match algorithm {
            JwtAlgorithm::RS384 => AssertionKey::Rsa(key),
            JwtAlgorithm::ES384 => AssertionKey::Ecdsa(
                aws_lc_rs::signature::EcdsaKeyPair::from_private_key_der(
                    &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                    der.secret_der(),
                )
                .map_err(|_| SetupError::Auth("kis.auth.private_key_file: not a P-384 key"))?,
            ),
        };
        Ok(Self {
            key,
            algorithm,
            key_id,
        })
    }

    /// A signed JWT: `iss` = `sub` = client id, `aud` = token URL, `exp`
    /// five minutes after `now_secs`, a fresh `jti`.
    pub fn assertion(
        &self,
        client_id: &str,
        token_url: &str,
        now_secs: i64,
    ) -> Result<String, PushError> {
        let mut header = json!({"alg": self.algorithm.name(), "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = Value::String(kid.clone());
        }
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": token_url,
            "iat": now_secs,
            "exp": now_secs + 300,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match &self.key {
            AssertionKey::Rsa(key) => key
                .choose_scheme(&[self.algorithm.scheme()])
                .ok_or_else(|| auth_failure("assertion key"))?
                .sign(signing_input.as_bytes())
                .map_err(|_| auth_failure("assertion signature"))?,
            AssertionKey::Ecdsa(pair) => pair
                .sign(
                    &aws_lc_rs::rand::SystemRandom::new(),
                    signing_input.as_bytes(),
                )
                .map_err(|_| auth_failure("assertion signature"))?
                .as_ref()
                .to_vec(),
        };
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

fn auth_failure(place: &str) -> PushError {
    PushError::Transient {
        detail: format!("authorization: {place}"),
        retry_after: None,
    }
}

enum Credential {
    Secret(Secret),
    Assertion(AssertionSigner),
}

struct OAuth {
    token_url: String,
    client_id: String,
    scope: Option<String>,
    credential: Credential,
    margin: Duration,
    cached: Mutex<Option<Cached>>,
}

#[derive(Clone)]
struct Cached {
    header: HeaderValue,
    refresh_at: Instant,
}

enum Inner {
    None,
    Static(HeaderValue),
    OAuth(Box<OAuth>),
}

/// Gives each KIS request its Authorization header.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &*self.inner {
            Inner::None => "none",
            Inner::Static(_) => "bearer",
            Inner::OAuth(o) => match o.credential {
                Credential::Secret(_) => "client_credentials",
                Credential::Assertion(_) => "smart_backend",
            },
        };
        f.debug_struct("Authenticator")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

fn bearer(token: &str) -> Result<HeaderValue, SetupError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| SetupError::Auth("kis.auth.token is not a valid header value"))?;
    v.set_sensitive(true);
    Ok(v)
}

impl Authenticator {
    /// `legacy_bearer` is `kis.bearer_token`, used with `AuthConfig::None`.
    pub fn new(
        config: &AuthConfig,
        legacy_bearer: Option<&Secret>,
        http: reqwest::Client,
    ) -> Result<Self, SetupError> {
        let oauth = |client: &OAuthClient, credential| {
            Inner::OAuth(Box::new(OAuth {
                token_url: client.token_url.clone(),
                client_id: client.client_id.clone(),
                scope: client.scope.clone(),
                credential,
                margin: client.refresh_margin,
                cached: Mutex::new(None),
            }))
        };
        let inner = match config {
            AuthConfig::None => match legacy_bearer {
                Some(t) => Inner::Static(bearer(t.expose())?),
                None => Inner::None,
            },
            AuthConfig::Bearer { token } => Inner::Static(bearer(token.expose())?),
            AuthConfig::ClientCredentials {
                client,
                client_secret,
            } => oauth(client, Credential::Secret(client_secret.clone())),
            AuthConfig::SmartBackend {
                client,
                private_key_file,
                algorithm,
                key_id,
            } => {
                let pem = std::fs::read(private_key_file)
                    .map_err(|_| SetupError::Auth("kis.auth.private_key_file cannot be read"))?;
                let signer = AssertionSigner::from_pem(&pem, *algorithm, key_id.clone())?;
                oauth(client, Credential::Assertion(signer))
            }
        };
        Ok(Self {
            inner: Arc::new(inner),
            http,
        })
    }

    /// Whether a 401 is worth one retry with a fresh token.
    pub fn refreshes(&self) -> bool {
        matches!(&*self.inner, Inner::OAuth(_))
    }

    /// The Authorization header for the next request, fetching a token if
    /// none is cached or the cached one is about to expire.
    pub async fn header(&self) -> Result<Option<HeaderValue>, PushError> {
        match &*self.inner {
            Inner::None => Ok(None),
            Inner::Static(h) => Ok(Some(h.clone())),
            Inner::OAuth(o) => {
                let mut cached = o.cached.lock().await;
                if let Some(c) = cached.as_ref()
                    && Instant::now() < c.refresh_at
                {
                    return Ok(Some(c.header.clone()));
                }
                let fresh = self.fetch(o).await?;
                let header = fresh.header.clone();
                *cached = Some(fresh);
                Ok(Some(header))
            }
        }
    }

    /// Forgets `rejected` if it is still the cached token (the KIS answered
    /// 401 to it), so the next [`Self::header`] fetches a new one.
    pub async fn invalidate(&self, rejected: &HeaderValue) {
        if let Inner::OAuth(o) = &*self.inner {
            let mut cached = o.cached.lock().await;
            if cached.as_ref().is_some_and(|c| c.header == *rejected) {
                *cached = None;
            }
        }
    }

    async fn fetch(&self, o: &OAuth) -> Result<Cached, PushError> {
        let mut form = vec![("grant_type", "client_credentials".to_owned())];
        if let Some(scope) = &o.scope {
            form.push(("scope", scope.clone()));
        }
        let mut request = self
            .http
            .post(&o.token_url)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        match &o.credential {
            Credential::Secret(secret) => {
                let basic = STANDARD.encode(format!(
                    "{}:{}",
                    form_encode(&o.client_id),
                    form_encode(secret.expose())
                ));
                let mut v = HeaderValue::from_str(&format!("Basic {basic}"))
                    .map_err(|_| auth_failure("client credentials"))?;
                v.set_sensitive(true);
                request = request.header(AUTHORIZATION, v);
            }
            Credential::Assertion(signer) => {
                let now = chrono::Utc::now().timestamp();
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push((
                    "client_assertion",
                    signer.assertion(&o.client_id, &o.token_url, now)?,
                ));
            }
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&form)
            .finish();
        let started = Instant::now();
        let response = request
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .body(body)
            .send()
            .await
            .map_err(|_| auth_failure("token endpoint unreachable"))?;
        let status = response.status();
        if !status.is_success() {
            // A refused client is a configuration fault, not the content's:
            // retried with backoff (and logged), never quarantined.
            tracing::warn!(
                status = status.as_u16(),
                "token endpoint refused the client"
            );
            return Err(PushError::Transient {
                detail: format!("token endpoint answered HTTP {}", status.as_u16()),
                retry_after: None,
            });
        }
        let answer: Value = response
            .json()
            .await
            .map_err(|_| auth_failure("token response"))?;
        let token = answer["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| auth_failure("token response without access_token"))?;
        if !answer["token_type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
        {
            return Err(auth_failure("token type is not Bearer"));
        }
        let lifetime = Duration::from_secs(answer["expires_in"].as_u64().unwrap_or(300));
        let margin = o.margin.min(lifetime / 2);
        Ok(Cached {
            header: bearer(token).map_err(|_| auth_failure("access token"))?,
            refresh_at: started + lifetime - margin,
        })
    }
}

/// `application/x-www-form-urlencoded` value encoding (RFC 6749 §2.3.1,
/// appendix B).
fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
