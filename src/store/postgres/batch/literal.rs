//! SQL literals for the batch's simple-query round trips, and the decoding
//! of the text-format values they return.
//!
//! A batch sends its statements with the simple-query protocol so that
//! several of them travel in one round trip (`BEGIN` with the locks and the
//! load; the write with `COMMIT`): the blocking client sends one
//! extended-protocol statement at a time. The values go in as literals of
//! the arguments of server-side prepared statements (`EXECUTE name(...)`,
//! so plans are still cached). The writer's session sets
//! `standard_conforming_strings` on (a backslash is an ordinary character in
//! `'...'`) and `bytea_output` to `hex`, which is what the quoting and the
//! decoding here rely on; text cannot hold a NUL byte, so doubling `'` is
//! the only escaping text needs.

use std::fmt::Write as _;

/// Appends `value` as a string literal.
pub(crate) fn text(out: &mut String, value: &str) {
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
}

/// Appends `value` as a hex `bytea` string (`'\x...'`).
pub(crate) fn bytea(out: &mut String, value: &[u8]) {
    out.push_str("'\\x");
    for byte in value {
        let _ = write!(out, "{byte:02x}");
    }
    out.push('\'');
}

/// Appends `ARRAY[...]::<kind>[]` with each item written by `item`.
pub(crate) fn array<T>(
    out: &mut String,
    kind: &str,
    items: &[T],
    mut item: impl FnMut(&mut String, &T),
) {
    out.push_str("ARRAY[");
    for (n, value) in items.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        item(out, value);
    }
    out.push_str("]::");
    out.push_str(kind);
    out.push_str("[]");
}

/// `ARRAY[...]::text[]`.
pub(crate) fn texts<S: AsRef<str>>(out: &mut String, items: &[S]) {
    array(out, "text", items, |out, value| text(out, value.as_ref()));
}

/// `ARRAY[...]::bytea[]`.
pub(crate) fn byteas<B: AsRef<[u8]>>(out: &mut String, items: &[B]) {
    array(out, "bytea", items, |out, value| bytea(out, value.as_ref()));
}

/// `ARRAY[...]::int8[]`.
pub(crate) fn ints(out: &mut String, items: &[i64]) {
    array(out, "int8", items, |out, value| {
        let _ = write!(out, "{value}");
    });
}

/// Decodes a `bytea` value in PostgreSQL's hex output format (`\x...`).
pub(crate) fn decode_bytea(value: &str) -> Result<Vec<u8>, String> {
    let hex = value
        .strip_prefix("\\x")
        .ok_or_else(|| "a bytea value not in hex format".to_owned())?;
    if hex.len() % 2 != 0 {
        return Err("a bytea value with an odd number of hex digits".to_owned());
    }
    (0..hex.len())
        .step_by(2)
        .map(|at| {
            hex.get(at..at + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| "a bytea value with a bad hex digit".to_owned())
        })
        .collect()
}

/// Decodes a `bigint` value.
pub(crate) fn decode_int(value: &str) -> Result<i64, String> {
    value
        .parse()
        .map_err(|_| format!("{value:?} is not a bigint"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_quote_what_needs_quoting() {
        let mut out = String::new();
        texts(&mut out, &["it's", "a\\b"]);
        assert_eq!(out, "ARRAY['it''s','a\\b']::text[]");
        out.clear();
        byteas(&mut out, &[&[0x00_u8, 0xff, 0x27][..]]);
        assert_eq!(out, "ARRAY['\\x00ff27']::bytea[]");
        out.clear();
        ints(&mut out, &[]);
        assert_eq!(out, "ARRAY[]::int8[]");
    }

    #[test]
    fn bytea_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut out = String::new();
        bytea(&mut out, &bytes);
        let inner = out.trim_matches('\'');
        assert_eq!(decode_bytea(inner).unwrap(), bytes);
        assert!(decode_bytea("\\x0").is_err());
        assert!(decode_bytea("\\xzz").is_err());
        assert!(decode_bytea("ab").is_err());
    }
}
