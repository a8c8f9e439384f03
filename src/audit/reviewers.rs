//! `[review]`: who may see held content — the sealed event and sender of a
//! quarantined message (`quarantine show`), a held original (`quarantine
//! view`), a dead letter's payload (`dlq show`). Every showing is in the
//! audit trail whoever runs it.

use serde::{Deserialize, Serialize};

use super::Actor;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewConfig {
    /// Operating-system accounts (`alice`, as `id -un` prints them) that
    /// may see held content. Empty: any account that can read the at-rest
    /// key file (which is owner-only).
    #[serde(default)]
    pub reviewers: Vec<String>,
}

impl ReviewConfig {
    /// `Ok` when `actor` may see held content.
    pub fn authorise(&self, actor: &Actor) -> Result<(), String> {
        if self.reviewers.is_empty() {
            return Ok(());
        }
        let account = actor.as_str().strip_prefix("os:").unwrap_or_default();
        if self.reviewers.iter().any(|r| r == account) {
            Ok(())
        } else {
            Err(format!(
                "{actor} is not among review.reviewers: held content is shown to reviewers only"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_accounts_review_when_a_list_is_set() {
        let anyone = ReviewConfig::default();
        let alice = Actor::oidc("x", "y");
        assert!(anyone.authorise(&alice).is_ok());
        let listed = ReviewConfig {
            reviewers: vec!["alice".into()],
        };
        assert!(listed.authorise(&alice).is_err(), "not an OS account");
        let me = Actor::os().unwrap();
        let mine = ReviewConfig {
            reviewers: vec![me.as_str().trim_start_matches("os:").to_owned()],
        };
        assert!(mine.authorise(&me).is_ok());
        assert!(
            listed
                .authorise(&me)
                .unwrap_err()
                .contains("review.reviewers")
        );
    }
}
