//! [`Actor`]: who acted, as an authenticated identity. The CLI acts as the
//! operating-system account of the process's real uid (looked up in the
//! user database, not taken from `$USER` or a flag); a web console passes
//! the OIDC subject its login verified.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error("cannot look up the account of uid {uid}: {source}")]
    Lookup { uid: u32, source: nix::Error },
}

/// An authenticated identity: `os:<account>` or `oidc:<issuer>#<subject>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(String);

impl Actor {
    /// The account of the process's real uid (`os:<name>`, or `os:uid:<n>`
    /// when the user database has no entry for it).
    pub fn os() -> Result<Self, ActorError> {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid).map_err(|source| ActorError::Lookup {
            uid: uid.as_raw(),
            source,
        })?;
        Ok(Self(match user {
            Some(u) => format!("os:{}", u.name),
            None => format!("os:uid:{}", uid.as_raw()),
        }))
    }

    /// A subject an OpenID Connect login verified at `issuer`.
    pub fn oidc(issuer: &str, subject: &str) -> Self {
        Self(format!("oidc:{issuer}#{subject}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
