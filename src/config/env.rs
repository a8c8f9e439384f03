//! `CHARTBRIDGE_SECTION__KEY` environment overrides, applied to the TOML
//! table before it is parsed.

use super::{ConfigError, ENV_PREFIX};

/// `CHARTBRIDGE_KIS__BASE_URL=…` sets `kis.base_url`. Variables without `__`
/// after the prefix (such as `CHARTBRIDGE_CONFIG`) are not overrides.
pub(super) fn apply_override(
    table: &mut toml::Table,
    var: &str,
    value: &str,
) -> Result<(), ConfigError> {
    apply_value(table, var, parse_env_value(value))
}

/// Like [`apply_override`], the value always a string (a secret read from
/// a file).
pub(super) fn apply_string(
    table: &mut toml::Table,
    var: &str,
    value: &str,
) -> Result<(), ConfigError> {
    apply_value(table, var, toml::Value::String(value.to_owned()))
}

fn apply_value(table: &mut toml::Table, var: &str, value: toml::Value) -> Result<(), ConfigError> {
    let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    if !rest.contains("__") {
        return Ok(());
    }
    let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Env {
            var: var.to_owned(),
            message: "empty key segment".into(),
        });
    }
    let (last, parents) = path
        .split_last()
        .expect("split yields one segment at least");
    let mut node = table;
    for key in parents {
        let entry = node
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry.as_table_mut().ok_or_else(|| ConfigError::Env {
            var: var.to_owned(),
            message: format!("`{key}` is not a section"),
        })?;
    }
    node.insert(last.clone(), value);
    Ok(())
}

/// Numbers and booleans keep their type; everything else is a string.
fn parse_env_value(value: &str) -> toml::Value {
    if let Ok(i) = value.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match value {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(value.to_owned()),
    }
}
