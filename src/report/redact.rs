//! Redaction applied to everything before it leaves the process: e-mail addresses, API keys
//! and bearer tokens, `key=value` secrets, credentials in connection strings, SQL literals,
//! long hex/base64 secrets, and patterns the application adds.

use regex::{Captures, Regex};
use std::sync::OnceLock;

/// Why a user-supplied pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// The regex compiler's message.
    pub reason: String,
}

impl std::fmt::Display for PatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid redaction pattern `{}`: {}",
            self.pattern, self.reason
        )
    }
}

impl std::error::Error for PatternError {}

/// The built-in rules, in the order they run: each is (pattern, replacement).
const RULES: &[(&str, &str)] = &[
    // Connection strings: keep the scheme and host, drop `user:password@`, up to the last
    // `@` before the host (a password may contain an unencoded `@`).
    (r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/]*@", "${1}[REDACTED]@"),
    (r"(?i)\bBearer\s+[A-Za-z0-9._~+/=\-]+", "Bearer [REDACTED]"),
    (
        r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
        "[TOKEN]",
    ),
    (r"\b(?:sk|pk|rk)[-_][A-Za-z0-9_\-]{16,}", "[API_KEY]"),
    (r"\bgsk_[A-Za-z0-9_]{16,}", "[API_KEY]"),
    (
        r"\bSG\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}",
        "[API_KEY]",
    ),
    (r"\bAKIA[0-9A-Z]{16}\b", "[API_KEY]"),
    (r"\bgh[pousr]_[A-Za-z0-9]{30,}", "[API_KEY]"),
    (r"\bxox[abprs]-[A-Za-z0-9\-]{10,}", "[API_KEY]"),
    (
        r#"(?i)\b(api[_\-]?key|apikey|access[_\-]?token|auth[_\-]?token|refresh[_\-]?token|token|secret|client[_\-]?secret|password|passwd|pwd)("?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s&;,"']+)"#,
        "${1}${2}[REDACTED]",
    ),
    (
        r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}",
        "[EMAIL]",
    ),
    // PostgreSQL error details carry row values: `Key (ssn)=(123-45-6789) already exists`,
    // `Key (user_id)=(42) is not present in table "users"`, `Failing row contains (...)`.
    // Keep the column names, drop the values (which may contain parentheses).
    (
        r"(?i)\b(key \([^)]*\)=)\(.*?\)(\s+(?:already exists|is not present|is still referenced|conflicts with))",
        "${1}([REDACTED])${2}",
    ),
    (r"(?i)\b(key \([^)]*\)=)\([^)\n]*\)", "${1}([REDACTED])"),
    (r"(?i)\b(failing row contains )\(.*\)", "${1}([REDACTED])"),
];

/// Runs after the SQL pass: long secrets that no rule above named.
const LATE_RULES: &[(&str, &str)] = &[(r"\b[0-9a-fA-F]{32,}\b", "[SECRET]")];

/// A compiled set of redaction rules. Build it once and reuse it.
#[derive(Debug, Clone)]
pub struct Redactor {
    rules: Vec<(Regex, &'static str)>,
    late: Vec<(Regex, &'static str)>,
    base64: Regex,
    sql: Regex,
    sql_string: Regex,
    sql_number: Regex,
    custom: Vec<Regex>,
}

fn compile(rules: &[(&'static str, &'static str)]) -> Vec<(Regex, &'static str)> {
    rules
        .iter()
        .map(|(p, r)| (Regex::new(p).expect("built-in redaction rule compiles"), *r))
        .collect()
}

impl Default for Redactor {
    fn default() -> Self {
        Self {
            rules: compile(RULES),
            late: compile(LATE_RULES),
            base64: Regex::new(r"[A-Za-z0-9+/_\-]{40,}={0,2}").expect("base64 rule compiles"),
            // A statement runs to a `;` outside quotes, a blank line or the end of the text;
            // it goes on over line breaks (multi-line SQL) and through quoted literals (which
            // may hold `;` or line breaks, or be cut off by a truncated query text).
            sql: Regex::new(concat!(
                r"(?i)\b(?:select\s|insert\s+into\s|update\s+\S+\s+set\s|delete\s+from\s)",
                r"(?:'(?:[^']|'')*(?:'|\z)|[^;'\n]|\n[^\S\n]*(?:'(?:[^']|'')*(?:'|\z)|[^\s;']))*",
            ))
            .expect("sql rule compiles"),
            sql_string: Regex::new(r"'(?:[^']|'')*(?:'|\z)").expect("sql string rule compiles"),
            sql_number: Regex::new(r"(^|[^\w$.])-?\d+(?:\.\d+)?\b")
                .expect("sql number rule compiles"),
            custom: Vec::new(),
        }
    }
}

impl Redactor {
    /// The built-in rules plus `patterns` (each match becomes `[REDACTED]`).
    pub fn with_patterns<I, S>(patterns: I) -> Result<Self, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut r = Self::default();
        for p in patterns {
            let p = p.as_ref();
            r.custom.push(Regex::new(p).map_err(|e| PatternError {
                pattern: p.to_string(),
                reason: e.to_string(),
            })?);
        }
        Ok(r)
    }

    /// The shared redactor with the built-in rules only.
    pub fn shared() -> &'static Redactor {
        static SHARED: OnceLock<Redactor> = OnceLock::new();
        SHARED.get_or_init(Redactor::default)
    }

    /// The text with every sensitive match replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (re, rep) in &self.rules {
            out = re.replace_all(&out, *rep).into_owned();
        }
        out = self
            .sql
            .replace_all(&out, |c: &Captures<'_>| {
                let stmt = self.sql_string.replace_all(&c[0], "?");
                self.sql_number.replace_all(&stmt, "${1}?").into_owned()
            })
            .into_owned();
        for (re, rep) in &self.late {
            out = re.replace_all(&out, *rep).into_owned();
        }
        // Long base64-like runs are secrets only if they mix digits and both cases (routes
        // and identifiers rarely do).
        out = self
            .base64
            .replace_all(&out, |c: &Captures<'_>| {
                let m = &c[0];
                let mixed = m.bytes().any(|b| b.is_ascii_digit())
                    && m.bytes().any(|b| b.is_ascii_uppercase())
                    && m.bytes().any(|b| b.is_ascii_lowercase());
                if mixed {
                    "[SECRET]".to_string()
                } else {
                    m.to_string()
                }
            })
            .into_owned();
        for re in &self.custom {
            out = re.replace_all(&out, "[REDACTED]").into_owned();
        }
        out
    }
}

/// Redacts with the shared built-in rules.
pub fn redact(text: &str) -> String {
    Redactor::shared().redact(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of the corpus: `category | sample | secret[ || secret...]`. After redaction
    /// no secret may survive.
    #[test]
    fn nothing_sensitive_in_the_corpus_survives() {
        let corpus = include_str!("../../tests/data/redaction_corpus.txt");
        let r = Redactor::default();
        let mut categories = std::collections::BTreeSet::new();
        let mut checked = 0;
        for line in corpus
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            let mut parts = line.splitn(3, " | ");
            let (cat, sample, secrets) = (
                parts.next().unwrap(),
                parts.next().expect("sample"),
                parts.next().expect("secrets"),
            );
            // `\n` in a sample stands for a line break (multi-line SQL, error details).
            let sample = sample.replace("\\n", "\n");
            let out = r.redact(&sample);
            for secret in secrets.split(" || ") {
                assert!(
                    !out.contains(secret),
                    "[{cat}] `{secret}` survived in `{out}`"
                );
            }
            categories.insert(cat.to_string());
            checked += 1;
        }
        assert!(checked >= 20, "corpus too small: {checked}");
        for cat in [
            "email",
            "api_key",
            "bearer",
            "conn_string",
            "sql",
            "kv_secret",
            "hex",
            "base64",
            "pg_detail",
        ] {
            assert!(categories.contains(cat), "corpus lacks {cat}");
        }
    }

    #[test]
    fn connection_strings_keep_scheme_and_host() {
        let out = redact("dial postgres://app:hunter2@db.internal:5432/orders failed");
        assert_eq!(
            out,
            "dial postgres://[REDACTED]@db.internal:5432/orders failed"
        );
    }

    #[test]
    fn sql_literals_become_placeholders_but_prose_numbers_stay() {
        let out = redact(
            "pool at 92% while SELECT * FROM users WHERE id = 42 AND name = 'Ann' AND x = $1",
        );
        assert_eq!(
            out,
            "pool at 92% while SELECT * FROM users WHERE id = ? AND name = ? AND x = $1"
        );
    }

    #[test]
    fn multi_line_sql_and_error_details_keep_their_shape() {
        let out = redact(
            "SELECT *\n  FROM users\n  WHERE name = 'Ann;\nLee'\n    AND id = 42;\n\npool at 92%",
        );
        assert_eq!(
            out,
            "SELECT *\n  FROM users\n  WHERE name = ?\n    AND id = ?;\n\npool at 92%"
        );
        assert_eq!(
            redact("Key (ssn)=(123-45-6789) already exists."),
            "Key (ssn)=([REDACTED]) already exists."
        );
        assert_eq!(
            redact("dial postgres://user:p@ss@db.internal/orders failed"),
            "dial postgres://[REDACTED]@db.internal/orders failed"
        );
    }

    #[test]
    fn custom_patterns_apply_and_bad_ones_are_named() {
        let r = Redactor::with_patterns([r"cust-\d{6}"]).unwrap();
        assert_eq!(
            r.redact("customer cust-123456 waited"),
            "customer [REDACTED] waited"
        );
        let e = Redactor::with_patterns(["("]).unwrap_err();
        assert_eq!(e.pattern, "(");
    }
}
