//! Opening the device: the SDK's stores with the derived passphrase, the
//! bot's session, key backup and recovery, and verifying a user for the
//! `verified` trust policy.

use super::*;

impl E2eeSource {
    /// Opens the SDK's stores in `store_dir` (created if absent) with the
    /// derived passphrase, restores the bot's session (the access token's
    /// device, from `whoami`), and sets up key backup and recovery.
    pub async fn connect(
        config: &MatrixConfig,
        store: Store,
        broker: Broker,
        sealer: Sealer,
    ) -> Result<Self, SourceError> {
        let (Some(base), Some(token), Some(e2ee)) =
            (&config.homeserver_url, &config.access_token, &config.e2ee)
        else {
            return Err(SourceError::NotConfigured);
        };
        std::fs::create_dir_all(&e2ee.store_dir).map_err(|_| SourceError::NotConfigured)?;
        let passphrase = store_passphrase(&sealer);
        let client = Client::builder()
            .homeserver_url(base)
            .sqlite_store(&e2ee.store_dir, Some(&passphrase))
            .with_encryption_settings(EncryptionSettings {
                auto_enable_cross_signing: true,
                backup_download_strategy: BackupDownloadStrategy::AfterDecryptionFailure,
                auto_enable_backups: false,
            })
            .build()
            .await
            .map_err(|_| SourceError::Transient("crypto store"))?;
        // Who the token belongs to, and which device it is.
        let who = whoami(base, token.expose()).await?;
        let (user_id, device_id) = who;
        client
            .matrix_auth()
            .restore_session(
                MatrixSession {
                    meta: SessionMeta {
                        user_id: user_id.clone(),
                        device_id,
                    },
                    tokens: SessionTokens {
                        access_token: token.expose().to_owned(),
                        refresh_token: None,
                    },
                },
                RoomLoadSettings::default(),
            )
            .await
            .map_err(sdk("session"))?;
        client
            .encryption()
            .wait_for_e2ee_initialization_tasks()
            .await;
        let source = Self {
            client,
            config: e2ee.clone(),
            timeout: config.sync_timeout,
            timeline_limit: 50,
            user_id: user_id.to_string(),
            store,
            broker,
            sealer,
        };
        source.recovery().await?;
        Ok(source)
    }

    /// Server-side key backup and secret storage with the recovery key in
    /// `recovery_key_file`: recovered from it when the account has a
    /// backup; created (and the new key written) when it has none.
    pub(super) async fn recovery(&self) -> Result<(), SourceError> {
        let Some(path) = &self.config.recovery_key_file else {
            return Ok(());
        };
        let encryption = self.client.encryption();
        let exists = encryption
            .backups()
            .fetch_exists_on_server()
            .await
            .map_err(|_| SourceError::Transient("key backup"))?;
        match (exists, std::fs::read_to_string(path)) {
            (true, Ok(key)) => {
                encryption
                    .recovery()
                    .recover(key.trim())
                    .await
                    .map_err(|_| SourceError::Refused {
                        place: "key backup recovery",
                        status: 0,
                    })?;
                tracing::info!("key backup recovered with the recovery key");
            }
            (false, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = encryption
                    .recovery()
                    .enable()
                    .await
                    .map_err(|_| SourceError::Transient("key backup creation"))?;
                write_new_key(path, &key).map_err(|_| SourceError::NotConfigured)?;
                tracing::info!("key backup created; recovery key written");
            }
            (true, Err(_)) => {
                tracing::warn!(
                    "the account has a key backup but recovery_key_file cannot be read: \
                     older history stays undecryptable"
                );
            }
            (false, Ok(_)) => {
                tracing::warn!("recovery_key_file exists but the account has no key backup");
            }
            (false, Err(_)) => return Err(SourceError::NotConfigured),
        }
        Ok(())
    }

    /// Manual verification of a sender (Matrix "Cross-signing"): signs
    /// `user`'s master key with the bot's user-signing key, after checking
    /// that it is `master_key` (unpadded base64 Ed25519, the fingerprint
    /// the operator compared with the sender out of band). The sender's
    /// cross-signed devices are then `verified` for the trust policy.
    /// Errors: `Invalid("user id")`, `Refused { place: "master key" }` when
    /// the identity is unknown or its key differs, `Transient` otherwise.
    pub async fn verify_user(&self, user: &str, master_key: &str) -> Result<(), SourceError> {
        let user = UserId::parse(user).map_err(|_| SourceError::Invalid("user id"))?;
        let encryption = self.client.encryption();
        let identity = encryption
            .request_user_identity(&user)
            .await
            .map_err(sdk("keys query"))?
            .ok_or(SourceError::Refused {
                place: "master key",
                status: 404,
            })?;
        let actual = identity
            .master_key()
            .get_first_key()
            .map(|k| k.to_base64())
            .unwrap_or_default();
        if actual != master_key.trim() {
            return Err(SourceError::Refused {
                place: "master key",
                status: 409,
            });
        }
        identity
            .verify()
            .await
            .map_err(|_| SourceError::Transient("signature upload"))?;
        tracing::info!(audit = "verify", "sender identity verified by the operator");
        Ok(())
    }
}

/// `GET /_matrix/client/v3/account/whoami`: the token's user and device.
pub(super) async fn whoami(
    base: &str,
    token: &str,
) -> Result<(OwnedUserId, OwnedDeviceId), SourceError> {
    let base = reqwest::Url::parse(base).map_err(|_| SourceError::NotConfigured)?;
    let r = reqwest::Client::new()
        .get(crate::delete::matrix::endpoint(
            &base,
            &["_matrix", "client", "v3", "account", "whoami"],
        ))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|_| SourceError::Transient("whoami"))?;
    let status = r.status();
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(SourceError::Transient("whoami"));
    }
    if !status.is_success() {
        return Err(SourceError::Refused {
            place: "whoami",
            status: status.as_u16(),
        });
    }
    let who: Value = r.json().await.map_err(|_| SourceError::Invalid("whoami"))?;
    let user = who["user_id"]
        .as_str()
        .and_then(|u| OwnedUserId::try_from(u).ok())
        .ok_or(SourceError::Invalid("whoami"))?;
    // A token without a device (an appservice's) cannot hold room keys.
    let device = who["device_id"]
        .as_str()
        .map(OwnedDeviceId::from)
        .ok_or(SourceError::Invalid("whoami"))?;
    Ok((user, device))
}

pub(super) fn bytes_str(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes a new recovery key readable by the owner only; refuses to
/// overwrite an existing file.
pub(super) fn write_new_key(path: &Path, key: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(key.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}
