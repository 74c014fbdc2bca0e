//! Timers: three key spaces in one tree per machine (by due time for the
//! runner, by idempotency key, by entity) and the timer value itself.

use serde_json::Value;

use super::fields::{Decoded, Reader, Writer};
use crate::request::{Fingerprint, RequestSpec, Target};
use crate::timers::{TimerKind, TimerRecord};

// ---- timers: three key spaces in one tree per machine ----
//
// 'd' [due_at][id][stored key] -> timer   (due order, for the runner)
// 'k' [stored key]             -> u64 due_at, str id   (find by key)
// 'e' [id][stored key]         -> u64 due_at           (list by entity)

/// The first byte of due-ordered timer keys.
const TIMER_BY_DUE: u8 = b'd';
/// The first byte of timer keys by idempotency key.
const TIMER_BY_KEY: u8 = b'k';
/// The first byte of timer keys by entity.
const TIMER_BY_ENTITY: u8 = b'e';

/// The due-ordered key of a timer.
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

/// The key-space key of a timer: its stored idempotency key.
pub(crate) fn timer_key_key(stored_key: &[u8]) -> Vec<u8> {
    Writer::key().raw(&[TIMER_BY_KEY]).raw(stored_key).finish()
}

/// The entity-space key of a timer.
pub(crate) fn timer_entity_key(id: &str, stored_key: &[u8]) -> Vec<u8> {
    Writer::key()
        .raw(&[TIMER_BY_ENTITY])
        .str(id)
        .raw(stored_key)
        .finish()
}

/// The prefix of every entity-space timer key of `id`.
pub(crate) fn timer_entity_prefix(id: &str) -> Vec<u8> {
    Writer::key().raw(&[TIMER_BY_ENTITY]).str(id).finish()
}

/// The value of a key-space timer entry: its due time and entity id.
pub(crate) fn encode_timer_ref(due_at: u64, id: &str) -> Vec<u8> {
    Writer::value().u64(due_at).str(id).finish()
}

/// The due time and entity id of a key-space timer entry.
pub(crate) fn decode_timer_ref(value: &[u8]) -> Decoded<(u64, String)> {
    let mut reader = Reader::value(value)?;
    let due_at = reader.u64("due_at")?;
    let id = reader.string("id")?;
    reader.end()?;
    Ok((due_at, id))
}

/// A timer's value (the due-ordered entry): fingerprint, kind, id, due
/// time and the request it will run.
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

/// A timer from its value; a timer without a key is an error.
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
