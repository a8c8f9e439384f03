//! Every value the store holds, as bytes: what a privacy check greps
//! (no phone number, messenger id or Matrix user id may be among them,
//! docs/retention.md, "Pseudonyms"). Sealed blobs come out as they are
//! stored (ciphertext), text and numbers as their text.

use sqlx::Row;

use super::{Backend, Store, StoreError};

/// One table's values.
#[derive(Debug, Clone)]
pub struct TableDump {
    pub table: String,
    pub rows: usize,
    /// Every non-null value of every row, each followed by `\n`.
    pub bytes: Vec<u8>,
}

impl Store {
    /// Every table of the store (migration bookkeeping included) with every
    /// value in it.
    pub async fn every_value(&self) -> Result<Vec<TableDump>, StoreError> {
        let tables: Vec<String> = match self.backend {
            Backend::Sqlite => {
                sqlx::query_scalar(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
                )
                .fetch_all(&self.pool)
                .await?
            }
            Backend::Postgres => {
                sqlx::query_scalar(
                    "SELECT CAST(table_name AS TEXT) FROM information_schema.tables
                     WHERE table_schema = current_schema() ORDER BY table_name",
                )
                .fetch_all(&self.pool)
                .await?
            }
        };
        let mut out = Vec::with_capacity(tables.len());
        for table in tables {
            let columns: Vec<String> = self.columns(&table).await?;
            let select = format!(
                "SELECT {} FROM \"{table}\"",
                columns
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(select))
                .fetch_all(&self.pool)
                .await?;
            let mut bytes = Vec::new();
            for r in &rows {
                for i in 0..columns.len() {
                    if let Some(v) = r.try_get::<Option<Vec<u8>>, _>(i)? {
                        bytes.extend_from_slice(&v);
                        bytes.push(b'\n');
                    }
                }
            }
            out.push(TableDump {
                table,
                rows: rows.len(),
                bytes,
            });
        }
        Ok(out)
    }

    /// Select expressions giving each column of `table` as bytes.
    async fn columns(&self, table: &str) -> Result<Vec<String>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => {
                let names: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT name FROM pragma_table_info('{table}')"
                )))
                .fetch_all(&self.pool)
                .await?;
                names
                    .iter()
                    .map(|c| format!("CAST(\"{c}\" AS BLOB)"))
                    .collect()
            }
            Backend::Postgres => {
                let rows = sqlx::query(
                    "SELECT CAST(column_name AS TEXT), CAST(data_type AS TEXT)
                     FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1
                     ORDER BY ordinal_position",
                )
                .bind(table)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        let (c, t): (String, String) = (r.try_get(0)?, r.try_get(1)?);
                        Ok(if t == "bytea" {
                            format!("\"{c}\"")
                        } else {
                            format!("convert_to(CAST(\"{c}\" AS TEXT), 'UTF8')")
                        })
                    })
                    .collect::<Result<_, StoreError>>()?
            }
        })
    }
}
