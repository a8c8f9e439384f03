//! Rows written before migration 0018 held messenger ids; the migration
//! marked them `legacy:<id>` (SQL cannot compute keyed tokens). Here they
//! become tokens, and every blob sealed at such a row is opened at its old
//! place (bound to the id) and sealed again at its new one (bound to the
//! token), in one transaction: a crash or an error leaves every row as it
//! was, and the next start converts them all. Running it again finds
//! nothing.
//!
//! A blob that does not open (a key missing from the key file, damage)
//! stops the conversion with an error naming its place, and with it the
//! start: converting the row anyway would leave a blob that can never
//! open. Add the missing key to the key file and start again.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::pseudonym::LEGACY;
use super::{Pseudonyms, Store, StoreError};
use crate::event::MessageKey;
use crate::seal::{Place, Sealer};

/// Rows read at a time.
const BATCH: i64 = 200;

/// A table whose rows name a message of their `source`.
struct Table {
    name: &'static str,
    /// Columns that held message ids of the row's source; the first keys the row.
    tokens: &'static [&'static str],
    /// Sealed columns bound to the row's message (and digest).
    sealed: &'static [&'static str],
    /// The row's key includes `digest`, bound into the place (`conflicts`).
    digest: bool,
}

const fn plain(name: &'static str) -> Table {
    Table {
        name,
        tokens: &["message_token"],
        sealed: &[],
        digest: false,
    }
}

const TABLES: &[Table] = &[
    plain("messages"),
    plain("deletions"),
    plain("log_leaves"),
    plain("content_digests"),
    Table {
        name: "quarantine",
        tokens: &["message_token"],
        sealed: &["sealed_event", "sealed_detail"],
        digest: false,
    },
    Table {
        name: "held_parts",
        tokens: &["message_token"],
        sealed: &["sealed_event"],
        digest: false,
    },
    Table {
        name: "transcript_messages",
        tokens: &["message_token"],
        sealed: &["sealed_entry"],
        digest: false,
    },
    Table {
        name: "conflicts",
        tokens: &["message_token"],
        sealed: &["sealed_event"],
        digest: true,
    },
    Table {
        name: "source_redactions",
        tokens: &["redaction_token", "target_token"],
        sealed: &[],
        digest: false,
    },
];

fn legacy(value: &str) -> Option<&str> {
    value.strip_prefix(LEGACY)
}

fn message_token(names: &Pseudonyms, source: &str, value: &str) -> String {
    match legacy(value) {
        Some(id) => names.message(&MessageKey {
            source: source.to_owned(),
            message_id: id.to_owned(),
        }),
        None => value.to_owned(),
    }
}

/// Opens `blob` at `old` and seals it at `new`; an empty or absent blob
/// (a released item) stays as it is.
fn reseal(
    sealer: &Sealer,
    blob: Option<Vec<u8>>,
    old: &Place<'_>,
    new: &Place<'_>,
) -> Result<Option<Vec<u8>>, StoreError> {
    match blob {
        Some(b) if !b.is_empty() => {
            let plain = zeroize::Zeroizing::new(sealer.open(old, &b)?);
            Ok(Some(sealer.seal_at(new, &plain)))
        }
        other => Ok(other),
    }
}

impl Store {
    /// Converts every row still marked by migration 0018: message ids
    /// become message tokens, accounts account tokens, and blobs bound to
    /// an id are sealed again bound to its token. Returns the rows converted.
    pub async fn pseudonymise_legacy(&self, sealer: &Sealer) -> Result<u64, StoreError> {
        let names = self.names()?.clone();
        let mut total = 0;
        let mut tx = self.pool.begin().await?;
        for table in TABLES {
            while let n @ 1.. = convert_batch(&mut tx, table, &names, sealer).await? {
                total += n;
            }
        }
        while let n @ 1.. = convert_undecrypted(&mut tx, &names, sealer).await? {
            total += n;
        }
        total += convert_cursors(&mut tx, &names).await?;
        tx.commit().await?;
        if total > 0 && self.backend == super::Backend::Sqlite {
            // The ids may linger in freed pages and in the write-ahead log:
            // rewrite the file and empty the log.
            sqlx::query("VACUUM").execute(&self.pool).await?;
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(total)
    }
}

async fn convert_batch(
    tx: &mut Transaction<'_, Any>,
    t: &Table,
    names: &Pseudonyms,
    sealer: &Sealer,
) -> Result<u64, StoreError> {
    let mut columns = vec!["source"];
    columns.extend_from_slice(t.tokens);
    if t.digest {
        columns.push("digest");
    }
    columns.extend_from_slice(t.sealed);
    let select = format!(
        "SELECT {} FROM {} WHERE {} LIKE '{LEGACY}%' LIMIT {BATCH}",
        columns.join(", "),
        t.name,
        t.tokens[0],
    );
    let set: Vec<String> = t
        .tokens
        .iter()
        .chain(t.sealed)
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 1))
        .collect();
    let n = set.len();
    let mut cond = format!("source = ${} AND {} = ${}", n + 1, t.tokens[0], n + 2);
    if t.digest {
        cond.push_str(&format!(" AND digest = ${}", n + 3));
    }
    let update = format!("UPDATE {} SET {} WHERE {cond}", t.name, set.join(", "));

    let rows: Vec<AnyRow> = sqlx::query(sqlx::AssertSqlSafe(select))
        .fetch_all(&mut **tx)
        .await?;
    for r in &rows {
        let source: String = r.try_get(0)?;
        let old: Vec<String> = (1..=t.tokens.len())
            .map(|i| r.try_get::<String, _>(i))
            .collect::<Result<_, _>>()?;
        let mut at = 1 + t.tokens.len();
        let digest: String = if t.digest {
            at += 1;
            r.try_get(at - 1)?
        } else {
            String::new()
        };
        let new: Vec<String> = old
            .iter()
            .map(|v| message_token(names, &source, v))
            .collect();
        let id = legacy(&old[0]).unwrap_or(&old[0]);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(update.clone()));
        for token in &new {
            q = q.bind(token.clone());
        }
        for (i, &column) in t.sealed.iter().enumerate() {
            let blob: Option<Vec<u8>> = r.try_get(at + i)?;
            let (old_place, new_place) = if t.digest {
                (
                    Place::conflict(t.name, column, &source, id, &digest),
                    Place::conflict(t.name, column, &source, &new[0], &digest),
                )
            } else {
                (
                    Place::message(t.name, column, &source, id),
                    Place::message(t.name, column, &source, &new[0]),
                )
            };
            q = q.bind(reseal(sealer, blob, &old_place, &new_place)?);
        }
        q = q.bind(source.clone()).bind(old[0].clone());
        if t.digest {
            q = q.bind(digest.clone());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(rows.len() as u64)
}

async fn convert_undecrypted(
    tx: &mut Transaction<'_, Any>,
    names: &Pseudonyms,
    sealer: &Sealer,
) -> Result<u64, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT event_token, sealed_event FROM matrix_undecrypted
             WHERE event_token LIKE '{LEGACY}%' LIMIT {BATCH}"
    )))
    .fetch_all(&mut **tx)
    .await?;
    for r in &rows {
        let old: String = r.try_get(0)?;
        let token = message_token(names, crate::event::matrix::SOURCE, &old);
        let id = legacy(&old).unwrap_or(&old);
        let blob = reseal(
            sealer,
            Some(r.try_get(1)?),
            &Place::id("matrix_undecrypted", "sealed_event", id),
            &super::sealed::undecrypted_event(&token),
        )?;
        sqlx::query(
            "UPDATE matrix_undecrypted SET event_token = $1, sealed_event = $2
                 WHERE event_token = $3",
        )
        .bind(token)
        .bind(blob)
        .bind(old)
        .execute(&mut **tx)
        .await?;
    }
    Ok(rows.len() as u64)
}

async fn convert_cursors(
    tx: &mut Transaction<'_, Any>,
    names: &Pseudonyms,
) -> Result<u64, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT source, account_token FROM source_cursors WHERE account_token LIKE '{LEGACY}%'"
    )))
    .fetch_all(&mut **tx)
    .await?;
    for r in &rows {
        let source: String = r.try_get(0)?;
        let old: String = r.try_get(1)?;
        let account = legacy(&old).unwrap_or(&old);
        sqlx::query(
            "UPDATE source_cursors SET account_token = $1 WHERE source = $2 AND account_token = $3",
        )
        .bind(names.account(&source, account))
        .bind(&source)
        .bind(&old)
        .execute(&mut **tx)
        .await?;
    }
    Ok(rows.len() as u64)
}

#[cfg(test)]
#[path = "pseudonymise_tests.rs"]
mod tests;
