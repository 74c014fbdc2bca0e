//! Storage backends behind one small trait.
//!
//! A backend loads an entity's record and its key record, calls the pure
//! decision (`crate::decide`), and writes exactly what the decision says in
//! one atomic step. It knows no machine rules: adding a backend never touches
//! the decision logic. sled ([`sled::SledStore`]) is the default.

pub(crate) mod codec;
pub(crate) mod sled;

use std::sync::Arc;

use crate::decide::{Decision, KeyRecord};
use crate::error::Result;
use crate::machine::MachineDef;
use crate::outcome::{EntityRecord, HistoryRecord, OutboxEvent};

/// The decision a backend runs inside its atomic step; it may run more than
/// once (a backend may retry on conflict), so it must be pure.
pub(crate) type DecideFn<'a> =
    &'a dyn Fn(Option<&EntityRecord>, Option<&KeyRecord>) -> Result<Decision>;

/// One request as a backend sees it: where it goes and how to decide it.
pub(crate) struct StoreRequest<'a> {
    /// The machine's name.
    pub(crate) machine: &'a str,
    /// The entity id.
    pub(crate) id: &'a str,
    /// The idempotency key as stored (scope included), if any.
    pub(crate) key: Option<&'a [u8]>,
    /// The pure decision over the loaded record and key record.
    pub(crate) decide: DecideFn<'a>,
}

/// A database: machine definitions, per-machine stores and the outbox.
pub(crate) trait Store: Send + Sync {
    /// Runs requests in order in ONE atomic step: each is decided against the
    /// state as the earlier ones left it, and what its decision says is
    /// written. A request whose decision is an error writes nothing and does
    /// not fail the others; only a storage failure fails them all.
    fn execute(&self, requests: &[StoreRequest<'_>]) -> Result<Vec<Result<Decision>>>;

    /// Every stored machine definition.
    fn definitions(&self) -> Result<Vec<MachineDef>>;

    /// The stored definition of one machine.
    fn definition(&self, machine: &str) -> Result<Option<MachineDef>>;

    /// Stores (or replaces) a machine definition, keeping the previous one in a log.
    fn save_definition(&self, def: &MachineDef) -> Result<()>;

    /// The store of one machine's entities.
    fn machine(&self, machine: &str) -> Result<Arc<dyn MachineStore>>;

    /// Up to `limit` pending outbox events, oldest first.
    fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxEvent>>;

    /// Removes these events from the outbox; returns how many were still there.
    fn outbox_ack(&self, events: &[OutboxEvent]) -> Result<usize>;

    /// The number of pending outbox events.
    fn outbox_len(&self) -> Result<usize>;

    /// A feed of the outbox events inserted from now on, in commit order.
    fn outbox_watcher(&self) -> Box<dyn OutboxWatcher>;

    /// Makes every commit so far durable on stable storage.
    fn sync(&self) -> Result<()>;

    /// Bytes the database takes on disk.
    fn size_on_disk(&self) -> Result<u64>;
}

/// A feed of new outbox events.
pub(crate) trait OutboxWatcher: Send {
    /// Waits up to `timeout` for the next inserted event (`None`: none came).
    fn next_event(&mut self, timeout: std::time::Duration) -> Option<Result<OutboxEvent>>;
}

/// One machine's entities, history, state index and idempotency keys.
pub(crate) trait MachineStore: Send + Sync {
    /// The record of idempotency key `key`, read without a transaction.
    fn key_record(&self, key: &[u8]) -> Result<Option<KeyRecord>>;

    /// The record of `id`.
    fn get(&self, id: &str) -> Result<Option<EntityRecord>>;

    /// The history of `id`, oldest first.
    fn history(&self, id: &str) -> Result<Vec<HistoryRecord>>;

    /// Up to `limit` ids in `state`, in id order, after `after` when given.
    fn in_state(&self, state: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>>;

    /// How many entities are in `state` (a range count of the state index).
    fn count_in_state(&self, state: &str) -> Result<u64>;

    /// Deletes key records that expired at `now`, in batches; returns how many.
    fn purge_expired_keys(&self, now: u64) -> Result<u64>;
}
