//! The outbox: keys `[position][machine][id][version]` in commit order,
//! whose value is the change a history entry holds.

use super::fields::{Decoded, Reader, Writer};
use super::records::decode_change;
use crate::outcome::{HistoryRecord, OutboxEvent};

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

/// An outbox event from its key (position, machine, id, version) and
/// its value (the change).
pub(crate) fn decode_outbox(key: &[u8], value: &[u8]) -> Decoded<OutboxEvent> {
    let mut reader = Reader::key(key);
    let position = reader.u64("position")?;
    let machine = reader.string("machine")?;
    let id = reader.string("id")?;
    let version = reader.u64("version")?;
    reader.end()?;
    let change = decode_change(version, value)?;
    Ok(outbox_event(position, machine, id, change))
}

/// The outbox event at `position` for a decoded change (its version is the
/// entity's version after the change).
pub(crate) fn outbox_event(
    position: u64,
    machine: String,
    id: String,
    change: HistoryRecord,
) -> OutboxEvent {
    OutboxEvent {
        position,
        machine,
        id,
        version: change.version,
        from: change.from,
        to: change.to,
        event: change.event,
        key: change.key,
        payload: change.payload,
        actor: change.actor,
        at: change.at,
    }
}
