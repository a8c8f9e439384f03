//! [`Place`]: the table, column and row a sealed blob belongs to, bound
//! into its associated data.

use super::Sealer;

/// Where a sealed blob lives. Its associated data is
/// `"chartbridge/sealed/v2\0" || key id || table || column || row parts`,
/// each string preceded by its length (u64, big-endian).
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    table: &'static str,
    column: &'static str,
    row: Row<'a>,
}

#[derive(Debug, Clone, Copy)]
enum Row<'a> {
    /// A row keyed by a message (its source and message token); shown as
    /// its quarantine item id.
    Message { source: &'a str, token: &'a str },
    /// A conflicting duplicate; shown as its conflict item id.
    Conflict {
        source: &'a str,
        token: &'a str,
        digest: &'a str,
    },
    /// A row keyed by an identifier; shown as an opaque token of it.
    Id(&'a str),
    /// A row keyed by an opaque id of chartbridge's own (a deletion id).
    Opaque(&'a str),
}

impl<'a> Place<'a> {
    /// A row keyed by `(source, message_token)`.
    pub fn message(
        table: &'static str,
        column: &'static str,
        source: &'a str,
        token: &'a str,
    ) -> Self {
        Self {
            table,
            column,
            row: Row::Message { source, token },
        }
    }

    /// A row keyed by message token and digest (`conflicts`).
    pub fn conflict(
        table: &'static str,
        column: &'static str,
        source: &'a str,
        token: &'a str,
        digest: &'a str,
    ) -> Self {
        Self {
            table,
            column,
            row: Row::Conflict {
                source,
                token,
                digest,
            },
        }
    }

    /// A row keyed by an identifier that must not be shown (a KIS patient
    /// id, a Matrix event id).
    pub fn id(table: &'static str, column: &'static str, id: &'a str) -> Self {
        Self {
            table,
            column,
            row: Row::Id(id),
        }
    }

    /// A row keyed by an opaque id that may be shown (a deletion id).
    pub fn opaque(table: &'static str, column: &'static str, id: &'a str) -> Self {
        Self {
            table,
            column,
            row: Row::Opaque(id),
        }
    }

    pub(super) fn associated_data(&self, key_id: &[u8]) -> Vec<u8> {
        let mut aad = b"chartbridge/sealed/v2\0".to_vec();
        aad.extend_from_slice(key_id);
        let mut push = |s: &str| {
            aad.extend_from_slice(&(s.len() as u64).to_be_bytes());
            aad.extend_from_slice(s.as_bytes());
        };
        push(self.table);
        push(self.column);
        match self.row {
            Row::Message { source, token } => {
                push(source);
                push(token);
            }
            Row::Conflict {
                source,
                token,
                digest,
            } => {
                push(source);
                push(token);
                push(digest);
            }
            Row::Id(id) | Row::Opaque(id) => push(id),
        }
        aad
    }

    /// `table.column of row …`, with the row as the opaque id the review
    /// commands show (never a messenger id).
    pub fn describe(&self, sealer: &Sealer) -> String {
        let row = match self.row {
            Row::Message { source, token } => format!(
                "{source} item {}",
                &sealer.token(&["quarantine-item", source, token])[..16]
            ),
            Row::Conflict {
                source,
                token,
                digest,
            } => format!(
                "{source} item {}",
                &sealer.token(&["conflict-item", source, token, digest])[..16]
            ),
            Row::Id(id) => format!("row {}", &sealer.token(&["row", self.table, id])[..16]),
            Row::Opaque(id) => format!("row {id}"),
        };
        format!("{}.{} of {row}", self.table, self.column)
    }
}
