//! Console sessions: an opaque random id in a `Secure; HttpOnly;
//! SameSite=Lax` cookie, held in memory (a restart logs everyone out),
//! ended after `session_idle` without a request or `session_max` after
//! login. Each session has a CSRF token that every POST form carries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine;
use rand::RngCore;

use crate::audit::Actor;

/// Session cookie; `__Host-`: Secure, `Path=/`, no `Domain` (RFC 6265bis §4.1.3.2).
pub const SESSION_COOKIE: &str = "__Host-chartbridge-console";
/// The cookie binding a started login to the browser that started it.
pub const LOGIN_COOKIE: &str = "__Host-chartbridge-login";
/// How long a started login may take.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);

/// A console role, from the ID token's roles claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Proofs and the log.
    Compliance,
    /// Held content and review decisions.
    Reviewer,
    /// Dead letters, deletions, readiness.
    Operator,
}

impl Role {
    /// `compliance`, `reviewer`, `operator`; other names are not roles here.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "compliance" => Some(Self::Compliance),
            "reviewer" => Some(Self::Reviewer),
            "operator" => Some(Self::Operator),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compliance => "compliance",
            Self::Reviewer => "reviewer",
            Self::Operator => "operator",
        }
    }
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    /// `oidc:<issuer>#<subject>`: who acts in the audit trail.
    pub actor: Actor,
    /// The OIDC subject, shown in the header.
    pub subject: String,
    pub roles: Vec<Role>,
    /// The token every POST form must carry.
    pub csrf: String,
    created: Instant,
    last: Instant,
}

impl Session {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// A login between the redirect to the provider and the callback.
#[derive(Debug, Clone)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    created: Instant,
}

/// The live sessions and started logins.
#[derive(Debug, Clone)]
pub struct Sessions {
    live: Arc<Mutex<HashMap<String, Session>>>,
    pending: Arc<Mutex<HashMap<String, Pending>>>,
    idle: Duration,
    max: Duration,
}

/// 32 random bytes, base64url: a session id, login id or CSRF token.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Constant-time comparison of two tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: Secure, HttpOnly, SameSite=Lax, Path=/;
/// `max_age` 0 deletes.
pub fn set_cookie(name: &str, value: &str, max_age: Duration) -> String {
    format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
        max_age.as_secs()
    )
}

impl Sessions {
    pub fn new(idle: Duration, max: Duration) -> Self {
        Self {
            live: Arc::default(),
            pending: Arc::default(),
            idle,
            max,
        }
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    /// Keeps a started login under a new id (the login cookie's value).
    pub fn start_login(&self, state: String, nonce: String, pkce_verifier: String) -> String {
        let id = random_token();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|_, v| v.created.elapsed() < LOGIN_TTL);
        p.insert(
            id.clone(),
            Pending {
                state,
                nonce,
                pkce_verifier,
                created: Instant::now(),
            },
        );
        id
    }

    /// Takes the started login `id` (once).
    pub fn take_login(&self, id: &str) -> Option<Pending> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.remove(id).filter(|v| v.created.elapsed() < LOGIN_TTL)
    }

    /// A new session; returns its id (the session cookie's value).
    pub fn create(&self, actor: Actor, subject: String, roles: Vec<Role>) -> String {
        let id = random_token();
        let now = Instant::now();
        let s = Session {
            actor,
            subject,
            roles,
            csrf: random_token(),
            created: now,
            last: now,
        };
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, s| self.fresh(s));
        live.insert(id.clone(), s);
        id
    }

    fn fresh(&self, s: &Session) -> bool {
        s.last.elapsed() < self.idle && s.created.elapsed() < self.max
    }

    /// The request's session, if live; counts as activity.
    pub fn get(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = live.get(id).is_some_and(|s| self.fresh(s));
        if !fresh {
            live.remove(id);
            return None;
        }
        let s = live.get_mut(id)?;
        s.last = Instant::now();
        Some(s.clone())
    }

    /// Ends the request's session.
    pub fn end(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            self.live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_cookie(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {name}={value}; x=y")).unwrap(),
        );
        h
    }

    #[test]
    fn a_session_ends_when_idle_or_too_old_and_at_logout() {
        let actor = Actor::oidc("http://idp.invalid", "alice");
        let idle = Sessions::new(Duration::from_millis(50), Duration::from_secs(60));
        let id = idle.create(actor.clone(), "alice".into(), vec![Role::Reviewer]);
        let h = with_cookie(SESSION_COOKIE, &id);
        let s = idle.get(&h).expect("live");
        assert!(s.has(Role::Reviewer) && !s.has(Role::Operator));
        assert_eq!(s.actor, actor);
        std::thread::sleep(Duration::from_millis(80));
        assert!(idle.get(&h).is_none(), "idle timeout");

        let old = Sessions::new(Duration::from_secs(60), Duration::from_millis(50));
        let id = old.create(actor.clone(), "alice".into(), vec![]);
        let h = with_cookie(SESSION_COOKIE, &id);
        for _ in 0..3 {
            assert!(old.get(&h).is_some());
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(old.get(&h).is_none(), "absolute timeout despite activity");

        let live = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        let id = live.create(actor, "alice".into(), vec![]);
        let h = with_cookie(SESSION_COOKIE, &id);
        assert!(live.get(&h).is_some());
        live.end(&h);
        assert!(live.get(&h).is_none(), "logout");
        assert!(live.get(&with_cookie(SESSION_COOKIE, "guessed")).is_none());
    }

    #[test]
    fn a_started_login_is_taken_once() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        let id = s.start_login("state".into(), "nonce".into(), "verifier".into());
        assert_eq!(s.take_login(&id).unwrap().state, "state");
        assert!(s.take_login(&id).is_none(), "single use");
    }

    #[test]
    fn tokens_cookies_and_roles() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(same_token(&a, &a.clone()) && !same_token(&a, &b) && !same_token(&a, ""));
        let h = with_cookie("k", "v");
        assert_eq!(cookie(&h, "k"), Some("v"));
        assert_eq!(cookie(&h, "missing"), None);
        let set = set_cookie(SESSION_COOKIE, "v", Duration::from_secs(5));
        assert_eq!(
            set,
            "__Host-chartbridge-console=v; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=5"
        );
        assert_eq!(Role::parse("reviewer"), Some(Role::Reviewer));
        assert_eq!(Role::parse("admin"), None);
    }
}
