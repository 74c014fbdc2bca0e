//! Storage backends behind two small traits.
//!
//! A backend loads an entity's record and its key record, calls the pure
//! decision (`crate::decide`), and writes exactly what the decision says in
//! one atomic step. It knows no machine rules: adding a backend never touches
//! the decision logic. sled ([`sled::SledStore`]) is the default.
//!
//! Reads ([`Store`], [`MachineStore`]) may come from any thread. Every write
//! and every sync goes through the one [`StoreWriter`] a backend hands out,
//! which the writer thread owns (`crate::write`): no write ever races another
//! write or a sync, which is the rule that keeps sled 0.34 out of its own
//! deadlocks (see `docs/reliability.md`).

pub(crate) mod codec;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod sled;

use std::sync::Arc;
use std::time::Duration;

use crate::decide::{Decision, KeyRecord};
use crate::definitions::DefinitionVersion;
use crate::error::{Error, Missing, Result};
use crate::machine::MachineDef;
use crate::outcome::{EntityRecord, HistoryRecord, OutboxEvent};
use crate::timers::TimerRecord;

/// The decision a backend runs inside its atomic step; it may run more than
/// once (a backend may retry on conflict), so it must be pure.
pub(crate) type DecideFn<'a> =
    &'a dyn Fn(Option<&EntityRecord>, Option<&KeyRecord>) -> Result<Decision>;

/// The second part of a sync: files and directories to stable storage.
pub(crate) type FileSync = Box<dyn FnOnce() -> Result<()> + Send>;

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
    /// The stored key of the timer this request fires, if it is a timer's:
    /// the timer is removed in the same atomic step when the request is
    /// decided (applied, a no-op or a replay).
    pub(crate) fired_timer: Option<&'a [u8]>,
    /// The machine's live definition, which `decide` runs under. A backend
    /// that other processes write too checks inside its atomic step that its
    /// version is the stored one, and when it is not, hands the stored
    /// definition to [`LiveDefinition::adopt`] before deciding (so no commit
    /// is decided under an older version). sled needs no check: only its one
    /// writer stores definitions, under the same leadership as commits.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) definition: &'a dyn LiveDefinition,
}

/// A machine's live definition as the engine holds it.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) trait LiveDefinition: Send + Sync {
    /// The stored version the live rules come from.
    fn version(&self) -> u64;

    /// Makes a newer stored version live (another process stored it); called
    /// by the writer, inside a commit's atomic step, before deciding.
    fn adopt(&self, version: u64, definition: MachineDef);
}

/// One entry of the outbox as read: an event, or an entry that failed to
/// decode (reported with its position so it can be acknowledged or
/// quarantined without blocking the others).
#[derive(Debug)]
pub enum PendingEntry {
    /// A decoded event.
    Event(OutboxEvent),
    /// An entry that failed to decode.
    Undecodable {
        /// Its position in the outbox.
        position: u64,
        /// The `Error::Corrupt` that says what failed.
        error: Error,
    },
}

impl PendingEntry {
    /// The entry's position in the outbox.
    pub fn position(&self) -> u64 {
        match self {
            PendingEntry::Event(event) => event.position,
            PendingEntry::Undecodable { position, .. } => *position,
        }
    }
}

/// What one round of key purging did.
#[derive(Debug, Default)]
pub(crate) struct PurgeRound {
    /// Expired key records deleted.
    pub(crate) purged: u64,
    /// Key records that could not be read, reported and skipped.
    pub(crate) corrupt: Vec<Error>,
    /// Whether expired keys remain (the round stopped at its budget).
    pub(crate) more: bool,
}

/// A database, read side: definitions, per-machine stores and the outbox.
pub(crate) trait Store: Send + Sync {
    /// Every stored machine definition.
    fn definitions(&self) -> Result<Vec<MachineDef>>;

    /// The stored definition of one machine.
    fn definition(&self, machine: &str) -> Result<Option<MachineDef>>;

    /// The version of the stored definition of one machine (a definition
    /// stored before versions existed counts from its log).
    fn definition_version(&self, machine: &str) -> Result<Option<u64>>;

    /// Every stored version of one machine's definition, oldest first, the
    /// current one last.
    fn definition_log(&self, machine: &str) -> Result<Vec<DefinitionVersion>>;

    /// The store of one machine's entities.
    fn machine(&self, machine: &str) -> Result<Arc<dyn MachineStore>>;

    /// Up to `limit` durable outbox entries after position `after` (from the
    /// start when `None`), in position order. Never forces a sync: entries
    /// not yet on stable storage are left for a later call.
    fn outbox_after(&self, after: Option<u64>, limit: usize) -> Result<Vec<PendingEntry>>;

    /// The position of the newest outbox entry (durable or not), if any.
    fn outbox_last_position(&self) -> Result<Option<u64>>;

    /// The number of pending outbox entries (durable or not).
    fn outbox_len(&self) -> Result<usize>;

    /// Bytes the database takes on disk.
    fn size_on_disk(&self) -> Result<u64>;

    /// Up to `limit` timers of every machine due at `now`, in due order, to
    /// fire. A backend that other processes share *claims* them (for a
    /// while: until they are fired and removed, or the claim lapses), so
    /// that two processes rarely fire the same timer; firing twice is safe
    /// anyway (keyed, version-checked requests).
    fn due_timers(&self, now: u64, limit: usize) -> Result<Vec<(String, TimerRecord)>>;

    /// When the earliest pending timer of any machine is due (on a shared
    /// backend: when the earliest may next be claimed).
    fn next_timer_due(&self) -> Result<Option<u64>>;

    /// The one writer of this database. Called once, by the engine, which
    /// moves it to its writer thread.
    fn writer(&self) -> Result<Box<dyn StoreWriter>>;

    /// Whether the calling thread may run `operation` on this store now:
    /// the engine asks before it hands a caller's job to the commit
    /// pipeline, so a caller that may not block never submits, and so never
    /// leads a batch that serves other callers. `Ok` by default (sled runs
    /// on any thread); PostgreSQL refuses a thread that runs async code with
    /// [`Error::BlockingInAsync`], where its client would panic. Reads check
    /// inside the backend.
    fn check_caller(&self, _operation: &str) -> Result<()> {
        Ok(())
    }

    /// What an outbox subscription waits on between reads, for a backend
    /// whose outbox other processes write too (PostgreSQL: `LISTEN/NOTIFY`).
    /// `None` (the default, sled): subscriptions wait on the engine's own
    /// notifier, bumped after each sync of its writer.
    fn outbox_waiter(&self) -> Option<Box<dyn OutboxWaiter>> {
        None
    }
}

/// A subscription's wake-up: [`arm`](OutboxWaiter::arm) before reading the
/// outbox, then [`wait`](OutboxWaiter::wait) if the read found nothing; the
/// wait returns early if events may have been committed since `arm`.
pub(crate) trait OutboxWaiter: Send + Sync {
    /// Called before each read of the outbox.
    fn arm(&mut self);

    /// Waits up to `timeout` (a backend may return earlier, spuriously).
    fn wait(&mut self, timeout: Duration);
}

/// A database, write side: owned by the writer thread alone.
pub(crate) trait StoreWriter: Send {
    /// Runs requests in order in ONE atomic step: each is decided against the
    /// state as the earlier ones left it, and what its decision says is
    /// written. A request whose decision is an error writes nothing and does
    /// not fail the others; only a storage failure fails them all.
    fn execute(&mut self, requests: &[StoreRequest<'_>]) -> Result<Vec<Result<Decision>>>;

    /// Stores (or replaces) a machine's definition as `version` (its
    /// definition, number, time and changes), keeping the previous one in the
    /// log, and prepares the machine's storage. Returns `false`, storing
    /// nothing, when the stored version is no longer `version.version - 1`
    /// (another process stored a definition since the caller planned this
    /// one: it plans again). A backend that other processes write too checks
    /// again, inside the same atomic step, that no removed name is used by
    /// stored data (`Error::DefinitionMismatch`).
    fn save_definition(&mut self, version: &DefinitionVersion) -> Result<bool>;

    /// Moves up to `budget` entities of `machine` from the state named `from`
    /// (a former name) to the state named `to`, records and state index
    /// together; returns how many moved (0 when none is left).
    fn migrate_state(&mut self, machine: &str, from: &str, to: &str, budget: usize) -> Result<u64>;

    /// One bounded round of [`migrate_state`](StoreWriter::migrate_state)
    /// for every rename the stored definitions declare (their aliases);
    /// returns how many entities moved (0 when nothing is left to migrate).
    fn migrate_renamed_states(&mut self, budget: usize) -> Result<u64>;

    /// Prepares the storage of a machine whose definition is stored (older
    /// databases may lack structures newer releases add).
    fn prepare_machine(&mut self, machine: &str) -> Result<()>;

    /// Removes outbox entries at these positions; returns how many were there.
    fn outbox_remove(&mut self, positions: &[u64]) -> Result<usize>;

    /// Moves the outbox entry at `position` aside (to be inspected, never
    /// delivered); returns whether it was there.
    fn outbox_quarantine(&mut self, position: u64) -> Result<bool>;

    /// Deletes up to `budget` expired key records (expired at `now`).
    fn purge_expired_keys(&mut self, now: u64, budget: usize) -> Result<PurgeRound>;

    /// Stores a timer (replacing one with the same key).
    fn put_timer(&mut self, machine: &str, timer: &TimerRecord) -> Result<()>;

    /// Removes the timer with this stored key; returns it if it was pending.
    fn remove_timer(&mut self, machine: &str, stored_key: &[u8]) -> Result<Option<TimerRecord>>;

    /// The first part of making every write so far durable: the storage
    /// engine's own flush, which must not race a write. Returns the second
    /// part (syncing files and directories to stable storage), which may run
    /// concurrently with later writes, on any thread.
    fn flush(&mut self) -> Result<FileSync>;
}

/// One machine's entities, history, state index and idempotency keys (reads).
pub(crate) trait MachineStore: Send + Sync {
    /// The record of idempotency key `key` (stored form).
    fn key_record(&self, key: &[u8]) -> Result<Option<KeyRecord>>;

    /// The record of `id`.
    fn get(&self, id: &str) -> Result<Option<EntityRecord>>;

    /// The history of `id`, oldest first.
    fn history(&self, id: &str) -> Result<Vec<HistoryRecord>>;

    /// Up to `limit` ids in `state`, in id order, after `after` when given.
    fn in_state(&self, state: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>>;

    /// How many entities are in `state` (a range count of the state index).
    fn count_in_state(&self, state: &str) -> Result<u64>;

    /// How many idempotency key records are stored.
    fn key_count(&self) -> Result<u64>;

    /// The pending timer with this stored key.
    fn timer(&self, stored_key: &[u8]) -> Result<Option<TimerRecord>>;

    /// The pending timers of entity `id`, in key order.
    fn timers_of(&self, id: &str) -> Result<Vec<TimerRecord>>;

    /// Up to `limit` pending timers of the machine, in due order.
    fn timers(&self, limit: usize) -> Result<Vec<TimerRecord>>;

    /// How much stored data uses each of these state and event names: the
    /// entities in each state (by the index), the entities whose history
    /// names it, and the key records whose stored outcome names it. Scans
    /// history and keys: for definition changes only.
    fn references(&self, states: &[String], events: &[String]) -> Result<Vec<Missing>>;

    /// Whether a caller should read a request's idempotency key before it
    /// hands the request to the writer (to answer a replay without the
    /// writer). `true` when a read is cheap next to a write (sled: a
    /// lookup in memory); `false` when it is a round trip to a server that
    /// the writer makes anyway, under its locks (PostgreSQL: the writer
    /// loads the key with the entity). Either way the writer decides on
    /// what it reads under its locks; the caller's read only saves work.
    fn pre_reads_keys(&self) -> bool {
        true
    }
}
