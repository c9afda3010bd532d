//! Loading a [`TransitionPolicy`] from TOML or JSON text or files.

use super::error::PolicyError;
use super::policy::{PolicyBuilder, TransitionPolicy};
use serde::Deserialize;
use std::path::Path;

impl TransitionPolicy {
    /// Parses a policy from TOML text (see the [file format](TransitionPolicy#file-format)).
    pub fn from_toml_str(text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_col(text, s.start))
                .map_or((None, None), |(l, c)| (Some(l), Some(c)));
            PolicyError::Parse {
                format: "TOML",
                line,
                column,
                message: e.message().to_string(),
            }
        })?;
        file.into_builder().build()
    }

    /// Parses a policy from JSON text.
    pub fn from_json_str(text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = serde_json::from_str(text).map_err(|e| PolicyError::Parse {
            format: "JSON",
            line: (e.line() > 0).then_some(e.line()),
            column: (e.column() > 0).then_some(e.column()),
            message: e.to_string(),
        })?;
        file.into_builder().build()
    }

    /// Reads a policy file, choosing the format by extension (`.toml` or `.json`).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        let path = path.as_ref();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let parse: fn(&str) -> Result<Self, PolicyError> = match ext {
            e if e.eq_ignore_ascii_case("toml") => Self::from_toml_str,
            e if e.eq_ignore_ascii_case("json") => Self::from_json_str,
            _ => return Err(PolicyError::UnknownFormat { path: path.into() }),
        };
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
            path: path.into(),
            message: e.to_string(),
        })?;
        parse(&text)
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    states: Vec<String>,
    #[serde(default)]
    allow: Vec<AllowEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowEntry {
    from: String,
    to: Targets,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Targets {
    One(String),
    Many(Vec<String>),
}

impl PolicyFile {
    fn into_builder(self) -> PolicyBuilder {
        let mut b = PolicyBuilder::default().states(self.states);
        for (i, a) in self.allow.into_iter().enumerate() {
            let targets = match a.to {
                Targets::One(t) => vec![(format!("allow[{i}].to"), t)],
                Targets::Many(ts) => ts
                    .into_iter()
                    .enumerate()
                    .map(|(j, t)| (format!("allow[{i}].to[{j}]"), t))
                    .collect(),
            };
            for (entry, to) in targets {
                b.allow_entry(entry, a.from.clone(), to);
            }
        }
        b
    }
}
