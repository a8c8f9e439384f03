//! `[console]`: the web console (docs/console.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::oidc::OidcConfig;
use crate::http::HttpConfig;

/// `[console]`: serve the web console under `/console` on the worker's
/// HTTP endpoint (`[http] listen`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve `/console` (default false).
    #[serde(default)]
    pub enabled: bool,
    /// Allow the console on a non-loopback `http.listen` (default false:
    /// a worker whose endpoint listens beyond loopback, e.g. `0.0.0.0` for
    /// probes in a pod, refuses to start with the console enabled unless
    /// this is set, behind TLS termination and a network policy).
    #[serde(default)]
    pub allow_remote: bool,
    /// A session ends after this long without a request (default 15 min).
    #[serde(default = "idle", with = "humantime_serde")]
    pub session_idle: Duration,
    /// A session ends this long after login (default 8 h).
    #[serde(default = "max", with = "humantime_serde")]
    pub session_max: Duration,
    /// The OpenID Provider; without it only the verifier page is served.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
}

fn idle() -> Duration {
    Duration::from_secs(15 * 60)
}

fn max() -> Duration {
    Duration::from_secs(8 * 3600)
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            allow_remote: false,
            session_idle: idle(),
            session_max: max(),
            oidc: None,
        }
    }
}

impl ConsoleConfig {
    /// Errors: the console is enabled on a non-loopback listen address
    /// without `allow_remote`, or without the HTTP endpoint.
    pub fn check(&self, http: &HttpConfig) -> Result<(), String> {
        if self.enabled && !http.listen.ip().is_loopback() && !self.allow_remote {
            return Err(format!(
                "console.enabled with http.listen {} (not loopback) needs console.allow_remote = true",
                http.listen
            ));
        }
        if self.enabled && !http.enabled {
            return Err("console.enabled needs http.enabled".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_stays_on_loopback_unless_allowed() {
        let mut http = HttpConfig::default();
        let on = ConsoleConfig {
            enabled: true,
            ..ConsoleConfig::default()
        };
        assert!(!ConsoleConfig::default().enabled);
        assert!(on.check(&http).is_ok());
        http.listen = "0.0.0.0:9464".parse().unwrap();
        assert!(on.check(&http).unwrap_err().contains("allow_remote"));
        let remote = ConsoleConfig {
            allow_remote: true,
            ..on.clone()
        };
        assert!(remote.check(&http).is_ok());
        http.enabled = false;
        assert!(remote.check(&http).unwrap_err().contains("http.enabled"));
    }
}
