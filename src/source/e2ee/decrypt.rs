//! Decryption and sender trust: a decrypted event's device checked against
//! `matrix.e2ee.trust`, and undecrypted events retried until their keys
//! arrive or their wait runs out.

use super::*;

impl E2eeSource {
    /// The trust policy's verdict on a decrypted event's sender device:
    /// `None` accepted, `Some(policy)` held.
    pub(super) async fn trust(
        &self,
        sender: &UserId,
        state: &VerificationState,
    ) -> Result<Option<&'static str>, SourceError> {
        Ok(match (self.config.trust, state) {
            (TrustPolicy::Any, _) => None,
            (_, VerificationState::Verified) => None,
            (TrustPolicy::Verified, _) => Some("verified"),
            (
                TrustPolicy::Tofu,
                VerificationState::Unverified(VerificationLevel::UnverifiedIdentity),
            ) => {
                let identity = self
                    .client
                    .encryption()
                    .get_user_identity(sender)
                    .await
                    .map_err(|_| SourceError::Transient("crypto store"))?;
                let Some(master) = identity.and_then(|i| i.master_key().get_first_key()) else {
                    return Ok(Some("tofu"));
                };
                let sender_token = self.sealer.token(&["matrix-tofu-sender", sender.as_str()]);
                let identity_token = self
                    .sealer
                    .token(&["matrix-tofu-identity", &master.to_base64()]);
                let (pinned, now) = self
                    .store
                    .pin_identity(&sender_token, &identity_token, millis(chrono::Utc::now()))
                    .await?;
                if now {
                    tracing::info!(
                        audit = "tofu",
                        sender = &sender_token[..16],
                        "sender identity trusted on first use"
                    );
                }
                (pinned != identity_token).then_some("tofu")
            }
            (TrustPolicy::Tofu, _) => Some("tofu"),
        })
    }

    /// The decrypted event as published: its JSON with `room_id` and the
    /// marker.
    pub(super) async fn decrypted(
        &self,
        event: &TimelineEvent,
        room_id: &OwnedRoomId,
        supersedes: bool,
    ) -> Result<Option<Value>, SourceError> {
        let TimelineEventKind::Decrypted(d) = &event.kind else {
            return Ok(None);
        };
        let Ok(mut json) = serde_json::from_str::<Value>(d.event.json().get()) else {
            return Ok(None);
        };
        let info = &d.encryption_info;
        let mut state = info.verification_state.clone();
        let mut hold = self.trust(&info.sender, &state).await?;
        if hold.is_some() {
            state = self
                .refreshed(&info.sender, info.sender_device.as_deref(), &state)
                .await;
            hold = self.trust(&info.sender, &state).await?;
        }
        let algorithm = match &info.algorithm_info {
            matrix_sdk::deserialized_responses::AlgorithmInfo::MegolmV1AesSha2 { .. } => {
                "m.megolm.v1.aes-sha2"
            }
            #[allow(unreachable_patterns)]
            _ => "other",
        };
        let mut marker = json!({
            "algorithm": algorithm,
            "verification": verification_name(&state),
        });
        if let Some(policy) = hold {
            marker["hold"] = Value::String(policy.to_owned());
        }
        if supersedes {
            marker["supersedes"] = Value::String(UNDECRYPTABLE.to_owned());
        }
        json["room_id"] = Value::String(room_id.to_string());
        json[E2EE_MARKER] = marker;
        Ok(Some(json))
    }

    /// Tries every recorded undecrypted event again: published decrypted
    /// (and forgotten) when its keys are there now; published as
    /// `undecryptable` once its wait ran out; otherwise left recorded.
    pub(super) async fn retry_undecrypted(&self, step: &mut Step) -> Result<(), SourceError> {
        let wait = i64::try_from(self.config.undecryptable_after.as_millis()).unwrap_or(i64::MAX);
        for row in self.store.undecrypted().await? {
            let now = millis(chrono::Utc::now());
            let place = crate::store::sealed::undecrypted_event(&row.event_token);
            let bytes = match self.sealer.open(&place, &row.sealed_event) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::error!(error = %e, "a held encrypted event cannot be opened");
                    continue;
                }
            };
            let Ok(mut json) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            let room = json["room_id"]
                .as_str()
                .and_then(|r| OwnedRoomId::try_from(r).ok())
                .and_then(|r| self.client.get_room(&r).map(|room| (r, room)));
            if let Some((room_id, room)) = room {
                // The key backup may hold the session by now (another
                // device of the bot received it); a miss is not an error.
                if let Some(session) = json["content"]["session_id"].as_str() {
                    let _ = self
                        .client
                        .encryption()
                        .backups()
                        .download_room_key(&room_id, session)
                        .await;
                }
                let raw =
                    Raw::<OriginalSyncRoomEncryptedEvent>::from_json_string(bytes_str(&bytes))
                        .map_err(|_| SourceError::Invalid("sealed event"))?;
                let event = room
                    .decrypt_event(&raw, None)
                    .await
                    .map_err(sdk("decrypt"))?;
                if let Some(decrypted) = self
                    .decrypted(&event, &room_id, row.state == UNDECRYPTABLE)
                    .await?
                {
                    self.publish(&decrypted).await?;
                    self.store.forget_undecrypted(&row.event_token).await?;
                    step.published += 1;
                    step.decrypted_later += 1;
                    continue;
                }
            }
            if row.state == AWAITING_KEYS && now - row.first_seen_at >= wait {
                json[E2EE_MARKER] = json!({"undecryptable": true});
                self.publish(&json).await?;
                self.store
                    .touch_undecrypted(&row.event_token, UNDECRYPTABLE, now)
                    .await?;
                step.undecryptable += 1;
            } else {
                self.store
                    .touch_undecrypted(&row.event_token, &row.state, now)
                    .await?;
            }
        }
        Ok(())
    }
}
