//! The request headers the service reads: `Idempotency-Key` (an RFC 8941
//! sf-string, parsed by the `sfv` crate) and the entity-tag lists of
//! `If-Match` and `If-None-Match` (RFC 9110 sections 8.8.3 and 13.1,
//! parsed here: the grammar is small).
//!
//! ETags are strong and quoted: version 3 is `"3"`. A listed tag names a
//! version only when it is strong and its opaque part is the version's
//! canonical decimal form, so `"03"`, `W/"3"` and `"abc"` never match an
//! `If-Match` (strong comparison, RFC 9110 section 8.8.3.2), while
//! `If-None-Match` compares weakly (`W/"3"` matches version 3).

use axum::http::{HeaderMap, HeaderName};
use sfv::{BareItem, Item, Parser, Version};

use crate::problem::ApiError;

/// `Idempotency-Key`.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// `Idempotency-Replayed`, set on a replayed answer.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotency-replayed");

/// Longest idempotency key, in bytes of the decoded key (the engine's limit).
pub const MAX_KEY_BYTES: usize = 255;
/// Most entity tags one `If-Match` or `If-None-Match` may list.
pub const MAX_ENTITY_TAGS: usize = 64;

/// The request's idempotency key: `None` without the header; a 400 for an
/// empty, malformed, oversized or repeated one.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut lines = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = lines.next() else {
        return Ok(None);
    };
    if lines.next().is_some() {
        return Err(ApiError::bad_request(
            "Idempotency-Key is sent more than once; send exactly one key",
        ));
    }
    parse_key(value.as_bytes())
        .map(Some)
        .map_err(|reason| ApiError::bad_request(format!("Idempotency-Key {reason}")))
}

/// Decodes an `Idempotency-Key` field value: an RFC 8941 sf-string
/// (`"abc"`, with `\"` and `\\` escapes), or for clients that leave the
/// quotes out, a bare sf-token (`abc`, which names the same key as `"abc"`).
/// Parameters (`"abc";p=1`) are refused rather than ignored, so that two
/// spellings never silently name one key; so are lists, other item types,
/// non-ASCII bytes and keys outside 1..=255 bytes once decoded.
pub fn parse_key(value: &[u8]) -> Result<String, String> {
    let item: Item = Parser::new(value)
        .with_version(Version::Rfc8941)
        .parse()
        .map_err(|error| {
            format!(
                "is not one RFC 8941 sf-string ({error}); send one quoted key like \"8e03978e-40d5\""
            )
        })?;
    if !item.params.is_empty() {
        return Err("has parameters; none are accepted".to_owned());
    }
    let key = match &item.bare_item {
        BareItem::String(key) => key.as_str().to_owned(),
        BareItem::Token(key) => key.as_str().to_owned(),
        _ => return Err("is not an sf-string; quote the key, like \"8e03978e-40d5\"".to_owned()),
    };
    match key.len() {
        0 => Err("is empty; a key has 1 to 255 bytes".to_owned()),
        len if len > MAX_KEY_BYTES => Err(format!(
            "is {len} bytes long; a key has 1 to {MAX_KEY_BYTES} bytes"
        )),
        _ => Ok(key),
    }
}

/// One entity tag of a list: `W/` or not, and the bytes between the quotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityTag {
    pub weak: bool,
    pub opaque: Vec<u8>,
}

impl EntityTag {
    /// The version this tag names, if its opaque part is a canonical decimal
    /// version (1, 2, ..., no sign, no leading zero).
    fn version(&self) -> Option<u64> {
        let digits = std::str::from_utf8(&self.opaque).ok()?;
        let canonical = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        canonical.then(|| digits.parse().ok()).flatten()
    }
}

/// The value of `If-Match` or `If-None-Match`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `*`: any current representation.
    Any,
    /// A list of entity tags (possibly empty).
    Tags(Vec<EntityTag>),
}

impl Condition {
    /// `If-Match` evaluation for an existing entity at `version`: strong comparison.
    pub fn strong_match(&self, version: u64) -> bool {
        match self {
            Condition::Any => true,
            Condition::Tags(tags) => tags
                .iter()
                .any(|tag| !tag.weak && tag.version() == Some(version)),
        }
    }

    /// `If-None-Match` evaluation for an existing entity at `version`: weak comparison.
    pub fn weak_match(&self, version: u64) -> bool {
        match self {
            Condition::Any => true,
            Condition::Tags(tags) => tags.iter().any(|tag| tag.version() == Some(version)),
        }
    }

    /// The versions an `If-Match` list can match, ascending: its strong
    /// tags that name a version. Empty for `*`.
    pub fn candidate_versions(&self) -> Vec<u64> {
        let Condition::Tags(tags) = self else {
            return Vec::new();
        };
        let mut versions: Vec<u64> = tags
            .iter()
            .filter(|tag| !tag.weak)
            .filter_map(EntityTag::version)
            .collect();
        versions.sort_unstable();
        versions.dedup();
        versions
    }
}

/// The condition of the `If-Match` or `If-None-Match` header `name`
/// (several field lines form one list, RFC 9110 section 5.3); a 400 for malformed syntax.
pub fn condition(headers: &HeaderMap, name: HeaderName) -> Result<Option<Condition>, ApiError> {
    let lines: Vec<&[u8]> = headers
        .get_all(&name)
        .iter()
        .map(|value| value.as_bytes())
        .collect();
    if lines.is_empty() {
        return Ok(None);
    }
    parse_condition(&lines).map(Some).map_err(|reason| {
        ApiError::bad_request(format!(
            "{} is malformed: {reason}; send * or entity tags like \"3\", \"4\"",
            canonical_name(&name)
        ))
    })
}

fn canonical_name(name: &HeaderName) -> &'static str {
    if name == axum::http::header::IF_MATCH {
        "If-Match"
    } else {
        "If-None-Match"
    }
}

/// Parses `"*" / #entity-tag` over the field lines. Empty list elements are
/// ignored (RFC 9110 section 5.6.1.2); `*` must be the only member.
pub fn parse_condition(lines: &[&[u8]]) -> Result<Condition, String> {
    let mut tags = Vec::new();
    let mut star = false;
    let mut members = 0usize;
    for line in lines {
        for member in split_members(line)? {
            members += 1;
            if member == b"*" {
                star = true;
            } else {
                tags.push(parse_entity_tag(member)?);
            }
        }
    }
    if star && members > 1 {
        return Err("* must be the only member".to_owned());
    }
    if tags.len() > MAX_ENTITY_TAGS {
        return Err(format!(
            "{} entity tags; at most {MAX_ENTITY_TAGS} are accepted",
            tags.len()
        ));
    }
    Ok(if star {
        Condition::Any
    } else {
        Condition::Tags(tags)
    })
}

/// Splits one field line at the commas that are not inside a quoted tag,
/// trimming optional whitespace and dropping empty members.
fn split_members(line: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut members = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, &byte) in line.iter().enumerate() {
        match byte {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                members.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err("an entity tag is not terminated by a double quote".to_owned());
    }
    members.push(&line[start..]);
    Ok(members
        .into_iter()
        .map(|member| member.trim_ascii())
        .filter(|member| !member.is_empty())
        .collect())
}

/// `entity-tag = [ %s"W/" ] DQUOTE *etagc DQUOTE`,
/// `etagc = %x21 / %x23-7E / obs-text`.
fn parse_entity_tag(member: &[u8]) -> Result<EntityTag, String> {
    let (weak, quoted) = match member.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, member),
    };
    let opaque = quoted
        .strip_prefix(b"\"")
        .and_then(|rest| rest.strip_suffix(b"\""))
        .ok_or_else(|| {
            format!(
                "{} is not a quoted entity tag",
                String::from_utf8_lossy(member)
            )
        })?;
    if let Some(&bad) = opaque
        .iter()
        .find(|&&b| !(b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80))
    {
        return Err(format!(
            "{} contains the byte 0x{bad:02x}, not allowed in an entity tag",
            String::from_utf8_lossy(member)
        ));
    }
    Ok(EntityTag {
        weak,
        opaque: opaque.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sf_strings_or_tokens() {
        assert_eq!(parse_key(br#""abc""#).unwrap(), "abc");
        assert_eq!(parse_key(b"abc").unwrap(), "abc");
        assert_eq!(parse_key(br#""a\"b\\c""#).unwrap(), r#"a"b\c"#);
        assert_eq!(parse_key(br#""a, b""#).unwrap(), "a, b");
        assert_eq!(parse_key(b"  \"k\"  ").unwrap(), "k");
        assert_eq!(parse_key(b"tok:en/1").unwrap(), "tok:en/1");
        let max = format!("\"{}\"", "k".repeat(255));
        assert_eq!(parse_key(max.as_bytes()).unwrap().len(), 255);
        for bad in [
            &b"\"\""[..],
            b"",
            b"\"abc",
            b"abc\"",
            br#""a\b""#,
            b"\"caf\xc3\xa9\"",
            b"\"tab\there\"",
            b"\"a\";p=1",
            b"a;p",
            b"\"a\", \"b\"",
            b"12",
            b"8e03978e",
            b"?1",
            b":YWJj:",
            b"(\"a\")",
        ] {
            assert!(
                parse_key(bad).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("\"{}\"", "k".repeat(256));
        assert!(parse_key(long.as_bytes()).is_err());
    }

    fn tags(lines: &[&str]) -> Result<Condition, String> {
        let lines: Vec<&[u8]> = lines.iter().map(|line| line.as_bytes()).collect();
        parse_condition(&lines)
    }

    #[test]
    fn entity_tag_lists() {
        assert_eq!(tags(&["*"]).unwrap(), Condition::Any);
        assert_eq!(tags(&[" * "]).unwrap(), Condition::Any);
        let list = tags(&[r#""1", W/"2" ,"x,y",, "3""#, r#""4""#]).unwrap();
        assert_eq!(list.candidate_versions(), [1, 3, 4]);
        assert!(list.strong_match(3) && !list.strong_match(2) && list.weak_match(2));
        assert_eq!(tags(&[""]).unwrap(), Condition::Tags(Vec::new()));
        for bad in [
            &["3"][..],
            &["\"3"],
            &["W/3"],
            &["w/\"3\""],
            &["*, \"3\""],
            &["*", "*"],
            &["\"3\" \"4\""],
            &["\"a b\""],
        ] {
            assert!(tags(bad).is_err(), "{bad:?} was accepted");
        }
        let many = vec!["\"1\""; MAX_ENTITY_TAGS + 1].join(",");
        assert!(tags(&[&many]).is_err());
    }

    #[test]
    fn strong_comparison_is_exact() {
        let check = |value: &str, version: u64| tags(&[value]).unwrap().strong_match(version);
        assert!(check("\"2\"", 2));
        assert!(!check("\"02\"", 2));
        assert!(!check("W/\"2\"", 2));
        assert!(!check("\"+2\"", 2));
        assert!(!check("\"0\"", 0));
        assert!(!check("\"18446744073709551616\"", 0));
        assert!(tags(&["W/\"2\""]).unwrap().weak_match(2));
        assert!(!tags(&["W/\"02\""]).unwrap().weak_match(2));
    }
}
