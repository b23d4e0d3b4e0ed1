//! Platform-free pieces of the adapter: the key-value expiry envelope,
//! splitting a batch of SQL into single statements, and calendar time to
//! Unix milliseconds. Kept apart from spin-sdk so they are tested on the host.

/// Spin key-value has no TTL, so each value is stored in an envelope:
/// tag `0` + value (no expiry), or tag `1` + expiry (Unix ms, i64 big-endian) + value.
pub fn seal(value: &[u8], expires_at_ms: Option<i64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 9);
    match expires_at_ms {
        None => out.push(0),
        Some(at) => {
            out.push(1);
            out.extend_from_slice(&at.to_be_bytes());
        }
    }
    out.extend_from_slice(value);
    out
}

/// What an envelope read at `now_ms` holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened<'a> {
    Live(&'a [u8]),
    Expired,
    /// Not written by [`seal`] (e.g. by another tool): treated as missing.
    Foreign,
}

pub fn open(stored: &[u8], now_ms: i64) -> Opened<'_> {
    match stored.split_first() {
        Some((0, value)) => Opened::Live(value),
        Some((1, rest)) if rest.len() >= 8 => {
            let (at, value) = rest.split_at(8);
            let mut b = [0u8; 8];
            b.copy_from_slice(at);
            if i64::from_be_bytes(b) <= now_ms {
                Opened::Expired
            } else {
                Opened::Live(value)
            }
        }
        _ => Opened::Foreign,
    }
}

/// Splits `sql` into statements at top-level semicolons, honouring quotes
/// (`'..'`, `".."`, `E'..'` with backslash escapes), dollar quotes (`$tag$..$tag$`)
/// and comments. Spin's PostgreSQL interface prepares each call, which takes
/// one statement only. Empty statements are dropped.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let b = sql.as_bytes();
    let mut ends = Vec::new();
    let (mut start, mut i) = (0, 0);
    // Whether the current statement has anything but comments and whitespace.
    let mut code = false;
    while i < b.len() {
        let comment = matches!(
            (b[i], b.get(i + 1)),
            (b'-', Some(b'-')) | (b'/', Some(b'*'))
        );
        code |= !comment && b[i] != b';' && !b[i].is_ascii_whitespace();
        match b[i] {
            b'\'' | b'"' => {
                let q = b[i];
                let escapes = q == b'\''
                    && i > 0
                    && (b[i - 1] == b'E' || b[i - 1] == b'e')
                    && !is_ident(b, i - 1);
                i += 1;
                while i < b.len() {
                    if escapes && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == q {
                        // A doubled quote is an escaped quote.
                        if b.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'$' if !is_ident(b, i) => {
                // `$tag$` opens a dollar quote; `$1` is a parameter.
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(e) if b[e] == b'$' && !b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                        let tag = &sql[i..=e];
                        match sql[e + 1..].find(tag) {
                            Some(p) => i = e + 1 + p + tag.len(),
                            None => i = b.len(),
                        }
                    }
                    _ => i += 1,
                }
            }
            b';' => {
                ends.push((start, i, code));
                code = false;
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    ends.push((start, b.len(), code));
    ends.into_iter()
        // Only comments or whitespace: nothing to run.
        .filter(|(_, _, code)| *code)
        .map(|(s, e, _)| sql[s..e].trim())
        .collect()
}

fn is_ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// Unix milliseconds of a UTC calendar time (proleptic Gregorian), the form
/// Spin's PostgreSQL interface returns `timestamp`/`timestamptz` columns in.
pub fn civil_to_unix_ms(
    year: i32,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    nanos: u32,
) -> i64 {
    // Howard Hinnant's days_from_civil.
    let (m, d) = (i64::from(month), i64::from(day));
    let y = i64::from(year) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    secs * 1000 + i64::from(nanos / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_without_expiry_opens_forever() {
        assert_eq!(open(&seal(b"abc", None), i64::MAX), Opened::Live(b"abc"));
    }

    #[test]
    fn a_sealed_value_opens_until_its_expiry_and_not_after() {
        let s = seal(&[0, 1, 255], Some(1_000));
        assert_eq!(open(&s, 999), Opened::Live(&[0, 1, 255]));
        assert_eq!(open(&s, 1_000), Opened::Expired);
    }

    #[test]
    fn bytes_not_written_by_seal_read_as_foreign() {
        assert_eq!(open(b"", 0), Opened::Foreign);
        assert_eq!(open(&[1, 2, 3], 0), Opened::Foreign);
        assert_eq!(open(b"hello", 0), Opened::Foreign);
    }

    #[test]
    fn statements_split_at_top_level_semicolons_only() {
        let sql = "CREATE TABLE a (x text DEFAULT 'a;b'); -- c;d\nINSERT INTO \"we;ird\" VALUES ($1);\n\
                   CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql; /* x; /* y; */ */ ;\
                   SELECT E'it\\'s;'; SELECT 'it''s;'";
        assert_eq!(
            split_statements(sql),
            vec![
                "CREATE TABLE a (x text DEFAULT 'a;b')",
                "-- c;d\nINSERT INTO \"we;ird\" VALUES ($1)",
                "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql",
                "SELECT E'it\\'s;'",
                "SELECT 'it''s;'",
            ]
        );
    }

    #[test]
    fn a_single_statement_and_blank_input_split_as_expected() {
        assert_eq!(split_statements("BEGIN"), vec!["BEGIN"]);
        assert_eq!(
            split_statements("  ;; -- only a comment\n"),
            Vec::<&str>::new()
        );
        assert_eq!(split_statements("SELECT $$a;b$$;"), vec!["SELECT $$a;b$$"]);
    }

    #[test]
    fn calendar_time_converts_to_unix_milliseconds() {
        assert_eq!(civil_to_unix_ms(1970, 1, 1, 0, 0, 0, 0), 0);
        assert_eq!(civil_to_unix_ms(2000, 3, 1, 0, 0, 0, 0), 951_868_800_000);
        assert_eq!(
            civil_to_unix_ms(2024, 2, 29, 12, 34, 56, 789_999_999),
            1_709_210_096_789
        );
        assert_eq!(
            civil_to_unix_ms(1969, 12, 31, 23, 59, 59, 500_000_000),
            -500
        );
    }
}
