//! Entities, their histories and the state index: the entity record
//! (id -> record), history entries (`[id][version]` -> change, the same
//! change an outbox event holds) and state-index entries
//! (`[state][id]` -> marker).

use serde_json::Value;

use super::fields::{Decoded, Reader, Writer};
use super::FORMAT_VERSION;
use crate::outcome::{EntityRecord, HistoryRecord};

// ---- entities: id -> record ----

/// An entity record's value (its id is the key).
pub(crate) fn encode_entity(record: &EntityRecord) -> Vec<u8> {
    Writer::value()
        .str(&record.state)
        .u64(record.version)
        .u64(record.created_at)
        .u64(record.updated_at)
        .finish()
}

/// An entity record from its key (the id) and value; version 0 is an error.
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

/// The prefix of every history key of `id`.
pub(crate) fn history_prefix(id: &str) -> Vec<u8> {
    Writer::key().str(id).finish()
}

/// The history key of `id` at `version`.
pub(crate) fn history_key(id: &str, version: u64) -> Vec<u8> {
    Writer::key().str(id).u64(version).finish()
}

/// The id and version of a history key.
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

/// A history entry from its version (held by the key) and its value.
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

/// The prefix of every state-index key of `state`.
pub(crate) fn state_prefix(state: &str) -> Vec<u8> {
    Writer::key().str(state).finish()
}

/// The state-index key of `id` in `state` (the id is not length-prefixed:
/// it is the rest of the key).
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

/// The value of an index entry: the version byte alone.
pub(crate) fn marker() -> Vec<u8> {
    vec![FORMAT_VERSION]
}

/// Checks that an index entry's value is a marker.
pub(crate) fn check_marker(value: &[u8]) -> Decoded<()> {
    Reader::value(value)?.end()
}
