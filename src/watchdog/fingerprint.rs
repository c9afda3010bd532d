//! Query fingerprints: the shape of a query without its values, safe for events and logs.

/// The longest fingerprint kept, in characters; longer ones end in `…`.
const MAX_CHARS: usize = 256;

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// Reduces `sql` to its shape: string literals (plain, `E''`, dollar-quoted) and numbers become
/// `?`, comments are dropped, whitespace is collapsed; `$1`-style parameters, identifiers and
/// quoted identifiers stay. The result never contains a literal value of the query, so it may
/// go into events and logs.
///
/// ```
/// use poolguard::watchdog::fingerprint;
/// assert_eq!(
///     fingerprint("SELECT * FROM t WHERE email = 'a@b.c' AND id > 42 AND x = $1"),
///     "SELECT * FROM t WHERE email = ? AND id > ? AND x = $1"
/// );
/// ```
pub fn fingerprint(sql: &str) -> String {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len().min(MAX_CHARS + 8));
    let mut i = 0;
    let prev_ident = |out: &String| out.chars().last().is_some_and(is_ident);
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\'' => {
                // An E'' prefix allows backslash escapes; drop any prefix letter emitted.
                let escapes = strip_prefix_letter(&mut out);
                i = skip_quoted(&chars, i + 1, escapes);
                out.push('?');
                continue;
            }
            '"' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&ch| ch == '"')
                    .map_or(chars.len(), |p| i + 1 + p + 1);
                out.extend(&chars[i..end]);
                i = end;
                continue;
            }
            '$' if next.is_some_and(|n| n.is_ascii_digit()) && !prev_ident(&out) => {
                // A positional parameter: kept.
                out.push('$');
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    out.push(chars[i]);
                    i += 1;
                }
                continue;
            }
            '$' if !prev_ident(&out) => {
                if let Some(end) = skip_dollar_quoted(&chars, i) {
                    out.push('?');
                    i = end;
                    continue;
                }
                out.push(c);
            }
            '-' if next == Some('-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                push_space(&mut out);
                continue;
            }
            '/' if next == Some('*') => {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i = (i + 2).min(chars.len());
                push_space(&mut out);
                continue;
            }
            c if c.is_whitespace() => push_space(&mut out),
            c if (c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())))
                && !prev_ident(&out) =>
            {
                i = skip_number(&chars, i);
                out.push('?');
                continue;
            }
            c => out.push(c),
        }
        i += 1;
    }
    let trimmed = out.trim();
    if trimmed.chars().count() > MAX_CHARS {
        let mut cut: String = trimmed.chars().take(MAX_CHARS).collect();
        cut.push('…');
        cut
    } else {
        trimmed.to_string()
    }
}

fn push_space(out: &mut String) {
    if !out.is_empty() && !out.ends_with(' ') {
        out.push(' ');
    }
}

/// Drops a string prefix (`E`, `B`, `X`, `N`, `U&`) just emitted; returns whether backslash
/// escapes apply (an `E` prefix).
fn strip_prefix_letter(out: &mut String) -> bool {
    let mut tail: Vec<char> = out.chars().rev().take(3).collect();
    tail.reverse();
    let (drop, escapes) = match tail.as_slice() {
        [.., a, 'U' | 'u', '&'] if !is_ident(*a) => (2, false),
        [_, 'U' | 'u', '&'] | ['U' | 'u', '&'] => (2, false),
        [.., a, p] if !is_ident(*a) && "EeBbXxNn".contains(*p) => (1, "Ee".contains(*p)),
        [p] if "EeBbXxNn".contains(*p) => (1, "Ee".contains(*p)),
        _ => (0, false),
    };
    for _ in 0..drop {
        out.pop();
    }
    escapes
}

/// Skips a single-quoted body starting after the opening quote; returns the index after it.
fn skip_quoted(chars: &[char], mut i: usize, escapes: bool) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' if escapes => i += 2,
            '\'' if chars.get(i + 1) == Some(&'\'') => i += 2,
            '\'' => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// If a dollar quote (`$$` or `$tag$`) opens at `i`, the index after its closing tag.
fn skip_dollar_quoted(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
        j += 1;
    }
    if chars.get(j) != Some(&'$') {
        return None;
    }
    let tag = &chars[i..=j];
    let body = j + 1;
    let close = (body..chars.len()).find(|&k| chars[k..].starts_with(tag));
    Some(close.map_or(chars.len(), |k| k + tag.len()))
}

/// Skips a numeric literal (digits, one dot, an exponent).
fn skip_number(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || c == '.' || c == '_' {
            i += 1;
        } else if (c == 'e' || c == 'E')
            && chars
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_digit() || *n == '-' || *n == '+')
        {
            i += 2;
        } else {
            break;
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn literals_become_placeholders() {
        assert_eq!(fingerprint("SELECT pg_sleep(30)"), "SELECT pg_sleep(?)");
        assert_eq!(
            fingerprint("select * from users where name = 'O''Brien' and score >= -1.5e3"),
            "select * from users where name = ? and score >= -?"
        );
        assert_eq!(
            fingerprint("SELECT E'it\\'s secret', x'1F', B'101'"),
            "SELECT ?, ?, ?"
        );
    }

    #[test]
    fn params_identifiers_and_quoted_names_stay() {
        assert_eq!(
            fingerprint("UPDATE t2 SET col1 = $1 WHERE \"Id 42\" = $12"),
            "UPDATE t2 SET col1 = $1 WHERE \"Id 42\" = $12"
        );
    }

    #[test]
    fn dollar_quotes_and_comments_go() {
        assert_eq!(
            fingerprint("DO $$ BEGIN PERFORM pg_sleep(10); END $$ -- token=abc\n"),
            "DO ?"
        );
        assert_eq!(
            fingerprint("SELECT $body$ secret $body$ /* user 7 */ ,  1"),
            "SELECT ? ,  ?".replace("  ", " ")
        );
    }

    #[test]
    fn long_queries_are_cut() {
        let sql = format!("SELECT {}", "a, ".repeat(200));
        let f = fingerprint(&sql);
        assert!(f.ends_with('…'));
        assert_eq!(f.chars().count(), 257);
    }
}
