//! How the store names messages and accounts: by keyed tokens, never by
//! the messenger's ids (a WhatsApp id embeds the sender's phone number, a
//! Matrix event id is the homeserver's name of the event). docs/retention.md,
//! "Pseudonyms".
//!
//! - A message is `(source, message token)`; the token is the one leaf v2
//!   binds (`crate::prove::pseudonym`): lowercase hex of
//!   `HMAC-SHA256(K_token, "<source>:<message_id>")`, so the ledger row, the
//!   proof leaf and a bundle name a message alike.
//! - An account a source reads the messenger as (the Matrix user id) is
//!   `HMAC-SHA256(K_account, len(source) || source || len(account) || account)`,
//!   lengths as u64 big-endian, `K_account` = HKDF of the operator's key
//!   with [`ACCOUNT_INFO`].
//!
//! Both keys come from the root of the key file, so tokens stay the same
//! across `keys rotate-at-rest`.

use hmac::{KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::StoreError;
use crate::event::MessageKey;
use crate::prove::pseudonym::ProofKeys;
use crate::seal::Sealer;

/// HKDF `info` of the account-token key.
pub const ACCOUNT_INFO: &str = "store/account-token/v1";

/// Marks a value written before migration 0018 that still holds the id.
pub(super) const LEGACY: &str = "legacy:";

/// The keys the store names rows with. Cheap to clone.
#[derive(Clone)]
pub struct Pseudonyms {
    proof: ProofKeys,
    account: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonyms(***)")
    }
}

impl Pseudonyms {
    /// The keys derived from `sealer`'s key file.
    pub fn new(sealer: &Sealer) -> Self {
        Self {
            proof: sealer.proof_keys(),
            account: Zeroizing::new(sealer.derive(ACCOUNT_INFO)),
        }
    }

    /// The message token of `key`: 64 lowercase hex digits.
    pub fn message(&self, key: &MessageKey) -> String {
        hex::encode(self.proof.message_token(key))
    }

    /// The token of the medium `reference` (a messenger media id, an
    /// `mxc://` URI) of `source`: 64 lowercase hex digits, apart from
    /// account tokens.
    pub fn medium(&self, source: &str, reference: &str) -> String {
        self.account(&format!("{source}#media"), reference)
    }

    /// The token of the account `account` of `source`: 64 lowercase hex digits.
    pub fn account(&self, source: &str, account: &str) -> String {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(self.account.as_ref())
            .expect("HMAC takes keys of any length");
        for part in [source, account] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }
}

/// A message as the store names it: its source and its message token.
/// What listings return; the message id itself is inside the sealed event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageRef {
    pub source: String,
    pub token: String,
}

impl MessageRef {
    /// `key` named with `names`.
    pub fn of(names: &Pseudonyms, key: &MessageKey) -> Self {
        Self {
            source: key.source.clone(),
            token: names.message(key),
        }
    }
}

/// `source/token`: safe to show and log.
impl std::fmt::Display for MessageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.source, self.token)
    }
}

/// What the store's methods take to find a message: a [`MessageKey`]
/// (named on the way in) or a [`MessageRef`] read back from a listing.
pub trait RowKey: Sync {
    /// The row name; a key needs the store's [`Pseudonyms`].
    fn row_of(&self, names: Option<&Pseudonyms>) -> Result<MessageRef, StoreError>;
}

impl RowKey for MessageKey {
    fn row_of(&self, names: Option<&Pseudonyms>) -> Result<MessageRef, StoreError> {
        names
            .map(|n| MessageRef::of(n, self))
            .ok_or(StoreError::NoPseudonyms)
    }
}

impl RowKey for MessageRef {
    fn row_of(&self, _: Option<&Pseudonyms>) -> Result<MessageRef, StoreError> {
        Ok(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_tokens_are_the_leaf_tokens_and_accounts_are_separate() {
        let sealer = Sealer::from_key([7; 32]);
        let names = Pseudonyms::new(&sealer);
        let key = MessageKey {
            source: "whatsapp".into(),
            message_id: "wamid.HBgNNDkxNTEwMDczMTczMRUCABIYFDNBMDY=".into(),
        };
        let token = names.message(&key);
        assert_eq!(token, hex::encode(sealer.proof_keys().message_token(&key)));
        assert_eq!(token.len(), 64);
        assert!(!token.contains(':'), "never mistaken for a legacy value");
        let account = names.account("matrix", "@bot:hospital.invalid");
        assert_eq!(account.len(), 64);
        assert_ne!(account, names.account("matrix", "@other:hospital.invalid"));
        assert_ne!(
            names.account("matrix", "@bot:hospital.invalid"),
            Pseudonyms::new(&Sealer::from_key([8; 32])).account("matrix", "@bot:hospital.invalid"),
            "another key file, other tokens"
        );
        assert_eq!(
            MessageRef::of(&names, &key).to_string(),
            format!("whatsapp/{token}")
        );
    }
}
