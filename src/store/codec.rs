//! The versioned binary encoding of stored keys and values.
//!
//! Every value starts with [`FORMAT_VERSION`]. Strings are a u32 big-endian
//! length and UTF-8 bytes; optional fields a 0/1 tag; numbers u64 big-endian.
//! Keys that combine several parts length-prefix each variable part so that
//! range scans cannot mix two ids. Decoding never panics: any malformed input
//! is an `Error::Corrupt` naming the tree and key. See `docs/storage-format.md`.

use serde_json::Value;

use crate::decide::KeyRecord;
use crate::error::{Error, Result};
use crate::outcome::{EntityRecord, HistoryRecord, OutboxEvent, OutcomeRecord};
use crate::request::{Fingerprint, RequestSpec, Target};
use crate::timers::{TimerKind, TimerRecord};

/// The first byte of every stored value.
pub const FORMAT_VERSION: u8 = 1;

/// Appends encoded fields to a byte buffer.
#[derive(Default)]
pub(crate) struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub(crate) fn value() -> Self {
        let mut bytes = Vec::with_capacity(64);
        bytes.push(FORMAT_VERSION);
        Writer { bytes }
    }

    pub(crate) fn key() -> Self {
        Writer {
            bytes: Vec::with_capacity(48),
        }
    }

    pub(crate) fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub(crate) fn bool(&mut self, value: bool) -> &mut Self {
        self.bytes.push(u8::from(value));
        self
    }

    pub(crate) fn bytes(&mut self, value: &[u8]) -> &mut Self {
        // Stored strings are bounded far below 4 GiB by the input limits.
        self.bytes
            .extend_from_slice(&(value.len() as u32).to_be_bytes());
        self.bytes.extend_from_slice(value);
        self
    }

    pub(crate) fn str(&mut self, value: &str) -> &mut Self {
        self.bytes(value.as_bytes())
    }

    pub(crate) fn raw(&mut self, value: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(value);
        self
    }

    pub(crate) fn opt_str(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            None => self.bool(false),
            Some(text) => self.bool(true).str(text),
        }
    }

    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

/// Reads encoded fields; every failure names what it expected.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

type Decoded<T> = std::result::Result<T, String>;

impl<'a> Reader<'a> {
    pub(crate) fn key(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    pub(crate) fn value(bytes: &'a [u8]) -> Decoded<Self> {
        match bytes.first() {
            None => Err("empty value".to_owned()),
            Some(&FORMAT_VERSION) => Ok(Reader { bytes, at: 1 }),
            Some(other) => Err(format!(
                "unknown format version {other} (this build reads {FORMAT_VERSION})"
            )),
        }
    }

    fn take(&mut self, length: usize, what: &str) -> Decoded<&'a [u8]> {
        let end = self
            .at
            .checked_add(length)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("truncated {what} at byte {}", self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    pub(crate) fn u64(&mut self, what: &str) -> Decoded<u64> {
        let slice = self.take(8, what)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(slice);
        Ok(u64::from_be_bytes(array))
    }

    pub(crate) fn bool(&mut self, what: &str) -> Decoded<bool> {
        match self.take(1, what)? {
            [0] => Ok(false),
            [1] => Ok(true),
            other => Err(format!("bad flag {other:?} for {what}")),
        }
    }

    pub(crate) fn bytes(&mut self, what: &str) -> Decoded<&'a [u8]> {
        let slice = self.take(4, what)?;
        let mut array = [0u8; 4];
        array.copy_from_slice(slice);
        self.take(u32::from_be_bytes(array) as usize, what)
    }

    pub(crate) fn str(&mut self, what: &str) -> Decoded<&'a str> {
        let slice = self.bytes(what)?;
        std::str::from_utf8(slice).map_err(|_| format!("{what} is not UTF-8"))
    }

    pub(crate) fn string(&mut self, what: &str) -> Decoded<String> {
        self.str(what).map(str::to_owned)
    }

    pub(crate) fn opt_string(&mut self, what: &str) -> Decoded<Option<String>> {
        if self.bool(what)? {
            self.string(what).map(Some)
        } else {
            Ok(None)
        }
    }

    pub(crate) fn fixed<const N: usize>(&mut self, what: &str) -> Decoded<[u8; N]> {
        let slice = self.take(N, what)?;
        let mut array = [0u8; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let slice = &self.bytes[self.at..];
        self.at = self.bytes.len();
        slice
    }

    pub(crate) fn end(&self) -> Decoded<()> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected bytes after the last field",
                self.bytes.len() - self.at
            ))
        }
    }
}

/// Decodes with `decode`, turning a failure into `Error::Corrupt` for `tree` and `key`.
pub(crate) fn decode_at<T>(
    tree: &str,
    key: &[u8],
    decode: impl FnOnce() -> Decoded<T>,
) -> Result<T> {
    decode().map_err(|reason| Error::corrupt(tree, key, reason))
}

// ---- entities: id -> record ----

pub(crate) fn encode_entity(record: &EntityRecord) -> Vec<u8> {
    Writer::value()
        .str(&record.state)
        .u64(record.version)
        .u64(record.created_at)
        .u64(record.updated_at)
        .finish()
}

pub(crate) fn decode_entity(id: &[u8], value: &[u8]) -> Decoded<EntityRecord> {
    let id = std::str::from_utf8(id).map_err(|_| "the id is not UTF-8".to_owned())?;
    let mut reader = Reader::value(value)?;
    let record = EntityRecord {
        id: id.to_owned(),
        state: reader.string("state")?,
        version: reader.u64("version")?,
        created_at: reader.u64("created_at")?,
        updated_at: reader.u64("updated_at")?,
    };
    reader.end()?;
    if record.version == 0 {
        return Err("version 0 (versions start at 1)".to_owned());
    }
    Ok(record)
}

// ---- history: [id][version] -> change; the outbox value is the same change ----

pub(crate) fn history_prefix(id: &str) -> Vec<u8> {
    Writer::key().str(id).finish()
}

pub(crate) fn history_key(id: &str, version: u64) -> Vec<u8> {
    Writer::key().str(id).u64(version).finish()
}

pub(crate) fn decode_history_key(key: &[u8]) -> Decoded<(String, u64)> {
    let mut reader = Reader::key(key);
    let id = reader.string("id")?;
    let version = reader.u64("version")?;
    reader.end()?;
    Ok((id, version))
}

/// The fields a history entry and an outbox event share, without the ones
/// their keys hold.
pub(crate) fn encode_change(history: &HistoryRecord) -> Vec<u8> {
    let mut writer = Writer::value();
    writer
        .opt_str(history.from.as_deref())
        .str(&history.to)
        .opt_str(history.event.as_deref())
        .opt_str(history.key.as_deref())
        .opt_str(history.actor.as_deref())
        .u64(history.at);
    if let Some(payload) = &history.payload {
        // Serializing a `Value` cannot fail: its map keys are strings.
        let json = serde_json::to_vec(payload).unwrap_or_default();
        writer.bool(true).raw(&json);
    } else {
        writer.bool(false);
    }
    writer.finish()
}

pub(crate) fn decode_change(version: u64, value: &[u8]) -> Decoded<HistoryRecord> {
    let mut reader = Reader::value(value)?;
    let from = reader.opt_string("from")?;
    let to = reader.string("to")?;
    let event = reader.opt_string("event")?;
    let key = reader.opt_string("key")?;
    let actor = reader.opt_string("actor")?;
    let at = reader.u64("at")?;
    let payload = if reader.bool("payload")? {
        let json = reader.rest();
        Some(
            serde_json::from_slice::<Value>(json)
                .map_err(|error| format!("payload is not JSON: {error}"))?,
        )
    } else {
        reader.end()?;
        None
    };
    Ok(HistoryRecord {
        version,
        from,
        to,
        event,
        key,
        payload,
        actor,
        at,
    })
}

// ---- by_state: [state][id] -> marker ----

pub(crate) fn state_prefix(state: &str) -> Vec<u8> {
    Writer::key().str(state).finish()
}

pub(crate) fn state_key(state: &str, id: &str) -> Vec<u8> {
    Writer::key().str(state).raw(id.as_bytes()).finish()
}

/// The id of a state-index key whose prefix is `prefix`.
pub(crate) fn id_of_state_key(prefix_len: usize, key: &[u8]) -> Decoded<String> {
    let id = key
        .get(prefix_len..)
        .ok_or_else(|| "state-index key shorter than its prefix".to_owned())?;
    String::from_utf8(id.to_vec()).map_err(|_| "the id is not UTF-8".to_owned())
}

pub(crate) fn marker() -> Vec<u8> {
    vec![FORMAT_VERSION]
}

pub(crate) fn check_marker(value: &[u8]) -> Decoded<()> {
    Reader::value(value)?.end()
}

// ---- keys: idempotency key -> key record ----

pub(crate) fn encode_key_record(record: &KeyRecord) -> Vec<u8> {
    let outcome = &record.outcome;
    Writer::value()
        .raw(&record.fingerprint.0)
        .u64(record.expires_at)
        .str(&outcome.id)
        .str(&outcome.state)
        .u64(outcome.version)
        .bool(outcome.applied)
        .opt_str(outcome.from.as_deref())
        .opt_str(outcome.event.as_deref())
        .u64(outcome.at)
        .finish()
}

pub(crate) fn decode_key_record(value: &[u8]) -> Decoded<KeyRecord> {
    let mut reader = Reader::value(value)?;
    let record = KeyRecord {
        fingerprint: Fingerprint(reader.fixed::<32>("fingerprint")?),
        expires_at: reader.u64("expires_at")?,
        outcome: OutcomeRecord {
            id: reader.string("id")?,
            state: reader.string("state")?,
            version: reader.u64("version")?,
            applied: reader.bool("applied")?,
            from: reader.opt_string("from")?,
            event: reader.opt_string("event")?,
            replay: false,
            at: reader.u64("at")?,
        },
    };
    reader.end()?;
    Ok(record)
}

/// Reads only the expiry of a key record (for purging).
pub(crate) fn key_record_expiry(value: &[u8]) -> Decoded<u64> {
    let mut reader = Reader::value(value)?;
    reader.fixed::<32>("fingerprint")?;
    reader.u64("expires_at")
}

// ---- key_expiry: [expires_at][stored key] -> marker ----

/// The expiry-index key of a key record: expiry first, so a range scan up to
/// "now" finds exactly the expired keys.
pub(crate) fn key_expiry_key(expires_at: u64, stored_key: &[u8]) -> Vec<u8> {
    Writer::key().u64(expires_at).raw(stored_key).finish()
}

/// The range end (exclusive) of expiry-index keys that expired at `now`.
pub(crate) fn key_expiry_bound(now: u64) -> Vec<u8> {
    Writer::key().u64(now.saturating_add(1)).finish()
}

pub(crate) fn decode_key_expiry_key(key: &[u8]) -> Decoded<(u64, &[u8])> {
    let mut reader = Reader::key(key);
    let expires_at = reader.u64("expires_at")?;
    Ok((expires_at, reader.rest()))
}

// ---- timers: three key spaces in one tree per machine ----
//
// 'd' [due_at][id][stored key] -> timer   (due order, for the runner)
// 'k' [stored key]             -> u64 due_at, str id   (find by key)
// 'e' [id][stored key]         -> u64 due_at           (list by entity)

const TIMER_BY_DUE: u8 = b'd';
const TIMER_BY_KEY: u8 = b'k';
const TIMER_BY_ENTITY: u8 = b'e';

pub(crate) fn timer_due_key(due_at: u64, id: &str, stored_key: &[u8]) -> Vec<u8> {
    Writer::key()
        .raw(&[TIMER_BY_DUE])
        .u64(due_at)
        .str(id)
        .raw(stored_key)
        .finish()
}

/// The range of due-ordered timer keys due at or before `now`.
pub(crate) fn timer_due_range(now: u64) -> (Vec<u8>, Vec<u8>) {
    (
        vec![TIMER_BY_DUE],
        Writer::key()
            .raw(&[TIMER_BY_DUE])
            .u64(now.saturating_add(1))
            .finish(),
    )
}

/// The prefix of every due-ordered timer key.
pub(crate) fn timer_due_prefix() -> Vec<u8> {
    vec![TIMER_BY_DUE]
}

pub(crate) fn timer_key_key(stored_key: &[u8]) -> Vec<u8> {
    Writer::key().raw(&[TIMER_BY_KEY]).raw(stored_key).finish()
}

pub(crate) fn timer_entity_key(id: &str, stored_key: &[u8]) -> Vec<u8> {
    Writer::key()
        .raw(&[TIMER_BY_ENTITY])
        .str(id)
        .raw(stored_key)
        .finish()
}

pub(crate) fn timer_entity_prefix(id: &str) -> Vec<u8> {
    Writer::key().raw(&[TIMER_BY_ENTITY]).str(id).finish()
}

pub(crate) fn encode_timer_ref(due_at: u64, id: &str) -> Vec<u8> {
    Writer::value().u64(due_at).str(id).finish()
}

pub(crate) fn decode_timer_ref(value: &[u8]) -> Decoded<(u64, String)> {
    let mut reader = Reader::value(value)?;
    let due_at = reader.u64("due_at")?;
    let id = reader.string("id")?;
    reader.end()?;
    Ok((due_at, id))
}

pub(crate) fn encode_timer(timer: &TimerRecord) -> Vec<u8> {
    let request = &timer.request;
    let mut writer = Writer::value();
    writer
        .raw(&timer.fingerprint.0)
        .bool(timer.kind == TimerKind::Timeout)
        .str(&timer.id)
        .u64(timer.due_at);
    match &request.target {
        Target::To(state) => writer.bool(false).str(state),
        Target::Fire(event) => writer.bool(true).str(event),
    };
    writer
        .opt_str(request.key.as_deref())
        .opt_str(request.scope.as_deref())
        .opt_str(request.actor.as_deref());
    match request.expected_version {
        Some(version) => writer.bool(true).u64(version),
        None => writer.bool(false),
    };
    if let Some(payload) = &request.payload {
        // Serializing a `Value` cannot fail: its map keys are strings.
        let json = serde_json::to_vec(payload).unwrap_or_default();
        writer.bool(true).raw(&json);
    } else {
        writer.bool(false);
    }
    writer.finish()
}

pub(crate) fn decode_timer(value: &[u8]) -> Decoded<TimerRecord> {
    let mut reader = Reader::value(value)?;
    let fingerprint = Fingerprint(reader.fixed::<32>("fingerprint")?);
    let kind = if reader.bool("kind")? {
        TimerKind::Timeout
    } else {
        TimerKind::Scheduled
    };
    let id = reader.string("id")?;
    let due_at = reader.u64("due_at")?;
    let target = if reader.bool("target kind")? {
        Target::Fire(reader.string("event")?.into())
    } else {
        Target::To(reader.string("state")?.into())
    };
    let mut request = RequestSpec::new(target);
    request.key = reader.opt_string("key")?;
    request.scope = reader.opt_string("scope")?;
    request.actor = reader.opt_string("actor")?;
    request.expected_version = if reader.bool("expected version")? {
        Some(reader.u64("expected version")?)
    } else {
        None
    };
    request.payload = if reader.bool("payload")? {
        Some(
            serde_json::from_slice::<Value>(reader.rest())
                .map_err(|error| format!("payload is not JSON: {error}"))?,
        )
    } else {
        reader.end()?;
        None
    };
    if request.key.is_none() {
        return Err("a timer without a key".to_owned());
    }
    Ok(TimerRecord {
        id,
        due_at,
        kind,
        request,
        fingerprint,
    })
}

// ---- outbox: [position][machine][id][version] -> change ----

/// An outbox key. The position is a number the writer hands out in commit
/// order (databases of format version 1 before positions held the change's
/// timestamp there; they read the same way and new positions continue above).
pub(crate) fn outbox_key(position: u64, machine: &str, id: &str, version: u64) -> Vec<u8> {
    Writer::key()
        .u64(position)
        .str(machine)
        .str(id)
        .u64(version)
        .finish()
}

/// The first key of `position` and everything after it.
pub(crate) fn outbox_position_key(position: u64) -> Vec<u8> {
    Writer::key().u64(position).finish()
}

/// The position of an outbox key (its first eight bytes).
pub(crate) fn outbox_key_position(key: &[u8]) -> Decoded<u64> {
    Reader::key(key).u64("position")
}

pub(crate) fn decode_outbox(key: &[u8], value: &[u8]) -> Decoded<OutboxEvent> {
    let mut reader = Reader::key(key);
    let position = reader.u64("position")?;
    let machine = reader.string("machine")?;
    let id = reader.string("id")?;
    let version = reader.u64("version")?;
    reader.end()?;
    let change = decode_change(version, value)?;
    Ok(OutboxEvent {
        position,
        machine,
        id,
        version,
        from: change.from,
        to: change.to,
        event: change.event,
        key: change.key,
        payload: change.payload,
        actor: change.actor,
        at: change.at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn history() -> HistoryRecord {
        HistoryRecord {
            version: 7,
            from: Some("submitted".into()),
            to: "paid".into(),
            event: Some("pay".into()),
            key: Some("k-1".into()),
            payload: Some(json!({"amount": 4200, "nested": {"b": [1, 2]}})),
            actor: Some("alice".into()),
            at: 1_700_000_000_000,
        }
    }

    #[test]
    fn records_round_trip() {
        let entity = EntityRecord {
            id: "o-1".into(),
            state: "paid".into(),
            version: 3,
            created_at: 1,
            updated_at: 2,
        };
        assert_eq!(
            decode_entity(b"o-1", &encode_entity(&entity)).unwrap(),
            entity
        );
        let change = history();
        assert_eq!(decode_change(7, &encode_change(&change)).unwrap(), change);
        let bare = HistoryRecord {
            from: None,
            event: None,
            key: None,
            payload: None,
            actor: None,
            ..history()
        };
        assert_eq!(decode_change(7, &encode_change(&bare)).unwrap(), bare);
        let key_record = KeyRecord {
            fingerprint: Fingerprint([9; 32]),
            expires_at: 99,
            outcome: OutcomeRecord {
                id: "o-1".into(),
                state: "paid".into(),
                version: 3,
                applied: true,
                from: Some("submitted".into()),
                event: None,
                replay: false,
                at: 5,
            },
        };
        let encoded = encode_key_record(&key_record);
        assert_eq!(decode_key_record(&encoded).unwrap(), key_record);
        assert_eq!(key_record_expiry(&encoded).unwrap(), 99);
        let key = outbox_key(41, "order", "o-1", 7);
        let event = decode_outbox(&key, &encode_change(&change)).unwrap();
        assert_eq!(
            (
                event.position,
                event.machine.as_str(),
                event.id.as_str(),
                event.version
            ),
            (41, "order", "o-1", 7)
        );
        assert_eq!(outbox_key_position(&key).unwrap(), 41);
        assert!(key.starts_with(&outbox_position_key(41)));
        let expiry = key_expiry_key(99, b"k-1");
        assert_eq!(decode_key_expiry_key(&expiry).unwrap(), (99, &b"k-1"[..]));
        assert!(expiry.as_slice() < key_expiry_bound(99).as_slice());
        assert!(expiry.as_slice() >= key_expiry_bound(98).as_slice());
        assert_eq!(
            decode_history_key(&history_key("o-1", 7)).unwrap(),
            ("o-1".into(), 7)
        );
    }

    #[test]
    fn timers_round_trip() {
        let mut timer = crate::timers::arm_timeout("o-1", "sent", 2, 1_000, 500, "expire");
        assert_eq!(decode_timer(&encode_timer(&timer)).unwrap(), timer);
        timer.request.payload = Some(json!({"amount": 5}));
        timer.kind = TimerKind::Scheduled;
        timer.request.expected_version = None;
        assert_eq!(decode_timer(&encode_timer(&timer)).unwrap(), timer);
        assert_eq!(
            decode_timer_ref(&encode_timer_ref(7, "o-1")).unwrap(),
            (7, "o-1".to_owned())
        );
        let (start, end) = timer_due_range(1_500);
        let due = timer_due_key(1_500, "o-1", b"k");
        assert!(start.as_slice() <= due.as_slice() && due.as_slice() < end.as_slice());
        assert!(timer_due_key(1_501, "o-1", b"k").as_slice() >= end.as_slice());
        assert!(timer_entity_key("o-1", b"k").starts_with(&timer_entity_prefix("o-1")));
        assert!(!timer_entity_key("o-12", b"k").starts_with(&timer_entity_prefix("o-1")));
        for length in 0..encode_timer(&timer).len() - 12 {
            assert!(
                decode_timer(&encode_timer(&timer)[..length]).is_err(),
                "{length}"
            );
        }
    }

    #[test]
    fn every_truncation_and_bad_version_is_an_error_not_a_panic() {
        let value = encode_change(&history());
        for length in 0..value.len() {
            // A truncated payload may still be valid JSON only by accident; the
            // fixed fields before it must always be reported.
            let _ = decode_change(7, &value[..length]);
        }
        for length in 0..value.len() - 40 {
            assert!(
                decode_change(7, &value[..length]).is_err(),
                "length {length}"
            );
        }
        let mut wrong_version = value.clone();
        wrong_version[0] = 9;
        assert!(decode_change(7, &wrong_version)
            .unwrap_err()
            .contains("format version 9"));
        assert!(decode_entity(b"x", &[]).is_err());
        assert!(decode_entity(
            &[0xff],
            &encode_entity(&EntityRecord {
                id: String::new(),
                state: "a".into(),
                version: 1,
                created_at: 0,
                updated_at: 0,
            })
        )
        .is_err());
    }

    #[test]
    fn history_keys_of_different_ids_never_share_a_prefix() {
        let a = history_key("ab", 1);
        let b_prefix = history_prefix("a");
        assert!(!a.starts_with(&b_prefix));
        let state_a = state_key("paid", "x");
        assert!(state_a.starts_with(&state_prefix("paid")));
        assert!(!state_a.starts_with(&state_prefix("pai")));
    }
}
