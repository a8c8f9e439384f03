//! `[console]`: the web console (docs/console.md).

use serde::{Deserialize, Serialize};

use crate::http::HttpConfig;

/// `[console]`: serve the web console under `/console` on the worker's
/// HTTP endpoint (`[http] listen`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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
}

impl ConsoleConfig {
    /// Errors: the console is enabled on a non-loopback listen address
    /// without `allow_remote`.
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
