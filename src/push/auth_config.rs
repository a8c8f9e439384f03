//! `[kis.auth]`: how requests to the KIS authenticate, parsed at load into
//! one complete variant per `kind` (DSK II.1).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::secret::Secret;

/// Signature algorithm of the SMART client assertion.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum JwtAlgorithm {
    RS384,
    ES384,
}

/// `[kis.auth]`: one complete variant per `kind`. Read from the flat TOML
/// shape (`kind` plus the keys that kind needs; `kind` defaults to `none`,
/// `refresh_margin` is accepted with every kind), refused at load when a
/// key the kind needs is missing.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(try_from = "AuthToml", into = "AuthToml")]
pub enum AuthConfig {
    /// No Authorization header (or `kis.bearer_token`, if set).
    #[default]
    None,
    /// `Authorization: Bearer {token}`, a fixed token.
    Bearer { token: Secret },
    /// OAuth2 client credentials grant, client secret via HTTP Basic.
    ClientCredentials {
        client: OAuthClient,
        client_secret: Secret,
    },
    /// SMART Backend Services: client credentials with a signed JWT client
    /// assertion (`private_key_jwt`, RFC 7523).
    SmartBackend {
        client: OAuthClient,
        /// PKCS#8 PEM private key (RSA or EC P-384) whose public key the
        /// authorization server knows (JWKS).
        private_key_file: PathBuf,
        /// `ES384` or `RS384`; `None` follows the key type.
        algorithm: Option<JwtAlgorithm>,
        /// `kid` of the assertion header.
        key_id: Option<String>,
    },
}

impl AuthConfig {
    /// The token endpoint of the OAuth2 kinds.
    pub fn token_url(&self) -> Option<&str> {
        match self {
            Self::ClientCredentials { client, .. } | Self::SmartBackend { client, .. } => {
                Some(&client.token_url)
            }
            Self::None | Self::Bearer { .. } => None,
        }
    }
}

/// The OAuth2 client of `client_credentials` and `smart_backend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClient {
    /// Token endpoint of the KIS's authorization server.
    pub token_url: String,
    pub client_id: String,
    /// Requested scope, e.g. `system/Communication.c system/DocumentReference.cr`.
    pub scope: Option<String>,
    /// Fetch a new token this long before the current one expires.
    pub refresh_margin: Duration,
}

impl OAuthClient {
    /// A client with the default `refresh_margin` (60 s).
    pub fn new(token_url: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            token_url: token_url.into(),
            client_id: client_id.into(),
            scope: None,
            refresh_margin: refresh_margin(),
        }
    }
}

/// The TOML shape of `[kis.auth]`, only at the boundary.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AuthToml {
    #[serde(default)]
    kind: AuthKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_secret: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    algorithm: Option<JwtAlgorithm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(default = "refresh_margin", with = "humantime_serde")]
    refresh_margin: Duration,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum AuthKind {
    #[default]
    None,
    Bearer,
    ClientCredentials,
    SmartBackend,
}

fn refresh_margin() -> Duration {
    Duration::from_secs(60)
}

impl TryFrom<AuthToml> for AuthConfig {
    type Error = String;
    fn try_from(t: AuthToml) -> Result<Self, String> {
        fn need<T>(value: Option<T>, key: &str) -> Result<T, String> {
            value.ok_or_else(|| format!("kis.auth.{key} is required for this kind"))
        }
        let client = |t: &AuthToml| -> Result<OAuthClient, String> {
            Ok(OAuthClient {
                token_url: need(t.token_url.clone(), "token_url")?,
                client_id: need(t.client_id.clone(), "client_id")?,
                scope: t.scope.clone(),
                refresh_margin: t.refresh_margin,
            })
        };
        Ok(match t.kind {
            AuthKind::None => Self::None,
            AuthKind::Bearer => Self::Bearer {
                token: need(t.token, "token")?,
            },
            AuthKind::ClientCredentials => Self::ClientCredentials {
                client: client(&t)?,
                client_secret: need(t.client_secret, "client_secret")?,
            },
            AuthKind::SmartBackend => Self::SmartBackend {
                client: client(&t)?,
                private_key_file: need(t.private_key_file, "private_key_file")?,
                algorithm: t.algorithm,
                key_id: t.key_id,
            },
        })
    }
}

impl From<AuthConfig> for AuthToml {
    fn from(a: AuthConfig) -> Self {
        let with_client = |kind, c: OAuthClient| AuthToml {
            kind,
            token_url: Some(c.token_url),
            client_id: Some(c.client_id),
            scope: c.scope,
            refresh_margin: c.refresh_margin,
            ..AuthToml::default()
        };
        match a {
            AuthConfig::None => AuthToml {
                refresh_margin: refresh_margin(),
                ..AuthToml::default()
            },
            AuthConfig::Bearer { token } => AuthToml {
                kind: AuthKind::Bearer,
                token: Some(token),
                refresh_margin: refresh_margin(),
                ..AuthToml::default()
            },
            AuthConfig::ClientCredentials {
                client,
                client_secret,
            } => AuthToml {
                client_secret: Some(client_secret),
                ..with_client(AuthKind::ClientCredentials, client)
            },
            AuthConfig::SmartBackend {
                client,
                private_key_file,
                algorithm,
                key_id,
            } => AuthToml {
                private_key_file: Some(private_key_file),
                algorithm,
                key_id,
                ..with_client(AuthKind::SmartBackend, client)
            },
        }
    }
}
