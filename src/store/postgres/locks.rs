//! Advisory lock keys: which rows a batch serializes on, across processes.
//!
//! A writer locks, before it reads anything, one transaction-scoped advisory
//! lock per entity and per idempotency key of its batch, in ascending key
//! order. Every idemflow process takes them in the same order, so two
//! batches never wait on each other in a circle. The keys are 64-bit hashes
//! of (schema, kind, machine, id or key): a collision only makes two
//! unrelated requests take turns.

/// The lock of one entity or key: `kind` is `b'e'` (entity) or `b'k'` (key).
pub(crate) fn row_key(schema: &str, kind: u8, machine: &str, bytes: &[u8]) -> i64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"idemflow row lock\0");
    hasher.update(schema.as_bytes());
    hasher.update(&[0, kind]);
    hasher.update(&(machine.len() as u64).to_be_bytes());
    hasher.update(machine.as_bytes());
    hasher.update(bytes);
    first_i64(hasher.finalize())
}

/// The lock held while the schema is created or upgraded.
pub(crate) fn migration_key(schema: &str) -> i64 {
    named(schema, "migrate")
}

/// The lock of whoever purges expired keys (one process at a time).
pub(crate) fn purge_key(schema: &str) -> i64 {
    named(schema, "purge")
}

/// The lock taken while a definition is stored.
pub(crate) fn definition_key(schema: &str, machine: &str) -> i64 {
    row_key(schema, b'd', machine, b"")
}

/// The first key of the two-key advisory locks that mark a writer's outbox
/// positions as in flight (see `outbox.rs`).
pub(crate) fn marker_namespace(schema: &str) -> i32 {
    let bytes = blake3::hash(format!("idemflow outbox marker\0{schema}").as_bytes());
    let mut first = [0u8; 4];
    first.copy_from_slice(&bytes.as_bytes()[..4]);
    i32::from_be_bytes(first)
}

fn named(schema: &str, what: &str) -> i64 {
    first_i64(blake3::hash(
        format!("idemflow {what}\0{schema}").as_bytes(),
    ))
}

fn first_i64(hash: blake3::Hash) -> i64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    i64::from_be_bytes(first)
}
