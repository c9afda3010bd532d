//! SQL identifiers checked against `^[A-Za-z_][A-Za-z0-9_]{0,62}$` and always written
//! double-quoted, so nothing the caller passes is ever interpolated raw.
//!
//! Quoting makes names case-sensitive: pass them as PostgreSQL stores them (lower case for
//! names created unquoted).

use super::error::IdentError;
use std::fmt;

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`).
pub const MAX_IDENT_LEN: usize = 63;

/// Checks one identifier.
pub(crate) fn check(field: &'static str, value: &str) -> Result<(), IdentError> {
    let err = |reason| {
        Err(IdentError {
            field,
            value: value.to_string(),
            reason,
        })
    };
    let bytes = value.as_bytes();
    match bytes.first() {
        None => return err("is empty"),
        Some(b) if !(b.is_ascii_alphabetic() || *b == b'_') => {
            return err("must start with an ASCII letter or `_`")
        }
        _ => {}
    }
    if bytes.len() > MAX_IDENT_LEN {
        return err("is longer than 63 bytes");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        return err("may hold only ASCII letters, digits and `_`");
    }
    Ok(())
}

/// Writes a checked identifier in double quotes. Checked identifiers hold no quote, so no
/// escaping is needed.
pub(crate) fn quote(ident: &str) -> String {
    debug_assert!(!ident.contains('"'));
    format!("\"{ident}\"")
}

/// A checked column name.
pub(crate) fn column(field: &'static str, value: &str) -> Result<String, IdentError> {
    check(field, value)?;
    Ok(quote(value))
}

/// A table (or function) name, optionally schema-qualified (`schema.table`), each part
/// checked as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QualifiedName {
    schema: Option<String>,
    name: String,
}

impl QualifiedName {
    /// Parses `name` or `schema.name`; `field` names the argument in the error.
    pub fn parse(field: &'static str, value: &str) -> Result<Self, IdentError> {
        let (schema, name) = match value.split_once('.') {
            Some((s, n)) => (Some(s), n),
            None => (None, value),
        };
        if let Some(s) = schema {
            // Report the whole value, not just the part, so the caller recognises it.
            check(field, s).map_err(|e| IdentError {
                value: value.into(),
                ..e
            })?;
        }
        check(field, name).map_err(|e| IdentError {
            value: value.into(),
            ..e
        })?;
        Ok(Self {
            schema: schema.map(str::to_string),
            name: name.to_string(),
        })
    }

    /// The schema, if the name is qualified.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The unqualified name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same schema with another (checked) name.
    pub(crate) fn sibling(&self, field: &'static str, name: &str) -> Result<Self, IdentError> {
        check(field, name)?;
        Ok(Self {
            schema: self.schema.clone(),
            name: name.to_string(),
        })
    }
}

/// Writes the quoted form: `"schema"."name"` or `"name"`.
impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.schema {
            write!(f, "{}.", quote(s))?;
        }
        f.write_str(&quote(&self.name))
    }
}

/// Writes a state name as a SQL string literal, doubling single quotes. Policy states are
/// already restricted to a safe set; this is a second line of defence.
pub(crate) fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_qualified_names_are_quoted() {
        assert_eq!(column("c", "status").unwrap(), "\"status\"");
        let t = QualifiedName::parse("table", "app.messages").unwrap();
        assert_eq!(t.to_string(), "\"app\".\"messages\"");
        assert_eq!(t.schema(), Some("app"));
        let t = QualifiedName::parse("table", "_Msg2").unwrap();
        assert_eq!(t.to_string(), "\"_Msg2\"");
    }

    #[test]
    fn hostile_identifiers_are_refused() {
        let long = "a".repeat(64);
        for bad in [
            "status; DROP TABLE x",
            "\"quoted\"",
            "",
            long.as_str(),
            "statüs",
            "1abc",
            "a b",
            "a-b",
            "a.b.c",
            ".a",
            "a.",
            "x'--",
            "tab\0le",
        ] {
            let e = QualifiedName::parse("table", bad).unwrap_err();
            assert_eq!(e.field, "table");
            assert_eq!(e.value, bad);
            assert!(column("status_column", bad).is_err(), "{bad:?}");
        }
        assert!(check("c", &"a".repeat(63)).is_ok());
    }

    #[test]
    fn literals_double_single_quotes() {
        assert_eq!(literal("READY"), "'READY'");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
