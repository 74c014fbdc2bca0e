//! Idempotency keys: the key record (stored key -> fingerprint, expiry and
//! outcome) and the expiry index (`[expires_at][stored key]` -> marker)
//! that purging scans.

use super::fields::{Decoded, Reader, Writer};
use crate::decide::KeyRecord;
use crate::outcome::OutcomeRecord;
use crate::request::Fingerprint;

// ---- keys: idempotency key -> key record ----

/// An idempotency key record's value: fingerprint, expiry and outcome.
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

/// An idempotency key record from its value (its outcome is not a replay).
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

/// The expiry and stored key of an expiry-index key.
pub(crate) fn decode_key_expiry_key(key: &[u8]) -> Decoded<(u64, &[u8])> {
    let mut reader = Reader::key(key);
    let expires_at = reader.u64("expires_at")?;
    Ok((expires_at, reader.rest()))
}
