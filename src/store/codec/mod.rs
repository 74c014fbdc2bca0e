//! The versioned binary encoding of stored keys and values.
//!
//! Every value starts with [`FORMAT_VERSION`]. Strings are a u32 big-endian
//! length and UTF-8 bytes; optional fields a 0/1 tag; numbers u64 big-endian.
//! Keys that combine several parts length-prefix each variable part so that
//! range scans cannot mix two ids. Decoding never panics: any malformed input
//! is an `Error::Corrupt` naming the tree and key. See `docs/storage-format.md`.
//!
//! The parts: `fields` (the field encodings: `Writer`, [`Reader`]),
//! `records` (entities, histories, the state index), `key_records`
//! (idempotency keys and their expiry index), `timers` and `outbox`.

mod fields;
mod key_records;
mod outbox;
mod records;
#[cfg(test)]
mod tests;
mod timers;

pub(crate) use fields::Reader;
pub(crate) use key_records::{
    decode_key_expiry_key, decode_key_record, encode_key_record, key_expiry_bound, key_expiry_key,
    key_record_expiry,
};
#[cfg(feature = "postgres")]
pub(crate) use outbox::outbox_event;
pub(crate) use outbox::{decode_outbox, outbox_key, outbox_key_position, outbox_position_key};
pub(crate) use records::{
    check_marker, decode_change, decode_entity, decode_history_key, encode_change, encode_entity,
    history_key, history_prefix, id_of_state_key, marker, state_key, state_prefix,
};
pub(crate) use timers::{
    decode_timer, decode_timer_ref, encode_timer, encode_timer_ref, timer_due_key,
    timer_due_prefix, timer_due_range, timer_entity_key, timer_entity_prefix, timer_key_key,
};

use crate::error::{Error, Result};
use fields::Decoded;

/// The first byte of every stored value.
pub const FORMAT_VERSION: u8 = 1;

/// Decodes with `decode`, turning a failure into `Error::Corrupt` for `tree` and `key`.
pub(crate) fn decode_at<T>(
    tree: &str,
    key: &[u8],
    decode: impl FnOnce() -> Decoded<T>,
) -> Result<T> {
    decode().map_err(|reason| Error::corrupt(tree, key, reason))
}
