//! One machine's trees: reads from any thread, and the writes of one request
//! inside the writer's transaction.

use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::storage;
use super::timers::{put_timer, remove_timer};
use crate::decide::{Decision, KeyRecord};
use crate::error::{Error, Missing, Result};
use crate::outcome::{EntityRecord, HistoryRecord};
use crate::store::codec::{self, decode_at};
use crate::store::{MachineStore, StoreRequest};
use crate::timers::TimerRecord;

/// One machine's trees.
pub(crate) struct SledMachine {
    pub(super) machine: String,
    entities_name: String,
    pub(super) history_name: String,
    pub(super) by_state_name: String,
    keys_name: String,
    pub(super) entities: sled::Tree,
    pub(super) history: sled::Tree,
    pub(super) by_state: sled::Tree,
    pub(super) keys: sled::Tree,
    pub(super) key_expiry: sled::Tree,
    pub(super) timers: sled::Tree,
    pub(super) timers_name: String,
}

/// The transactional views of one machine's trees (and the shared outbox).
pub(super) struct MachineViews<'a> {
    pub(super) entities: &'a TransactionalTree,
    pub(super) history: &'a TransactionalTree,
    pub(super) by_state: &'a TransactionalTree,
    pub(super) keys: &'a TransactionalTree,
    pub(super) key_expiry: &'a TransactionalTree,
    pub(super) timers: &'a TransactionalTree,
    pub(super) outbox: &'a TransactionalTree,
}

/// How many trees of a machine a transaction takes, in [`SledMachine::trees`] order.
pub(super) const TREES_PER_MACHINE: usize = 6;

pub(super) type TxResult<T> = std::result::Result<T, ConflictableTransactionError<Error>>;

pub(super) fn tx_error(error: sled::transaction::TransactionError<Error>, context: &str) -> Error {
    match error {
        sled::transaction::TransactionError::Abort(error) => error,
        sled::transaction::TransactionError::Storage(error) => Error::storage(context, error),
    }
}

impl SledMachine {
    pub(super) fn open(db: &sled::Db, machine: &str) -> Result<Self> {
        let open = |concern: &str| {
            let name = format!("{concern}/{machine}");
            db.open_tree(name.as_bytes())
                .map_err(|error| Error::storage(format!("opening tree {name}"), error))
        };
        Ok(SledMachine {
            machine: machine.to_owned(),
            entities_name: format!("entities/{machine}"),
            history_name: format!("history/{machine}"),
            by_state_name: format!("by_state/{machine}"),
            keys_name: format!("keys/{machine}"),
            entities: open("entities")?,
            history: open("history")?,
            by_state: open("by_state")?,
            keys: open("keys")?,
            key_expiry: open("key_expiry")?,
            timers: open("timers")?,
            timers_name: format!("timers/{machine}"),
        })
    }

    /// The names of this machine's trees.
    pub(super) fn tree_names(machine: &str) -> [String; TREES_PER_MACHINE] {
        [
            "entities",
            "history",
            "by_state",
            "keys",
            "key_expiry",
            "timers",
        ]
        .map(|concern| format!("{concern}/{machine}"))
    }

    /// The trees a transaction over this machine takes.
    pub(super) fn trees(&self) -> [&sled::Tree; TREES_PER_MACHINE] {
        [
            &self.entities,
            &self.history,
            &self.by_state,
            &self.keys,
            &self.key_expiry,
            &self.timers,
        ]
    }

    pub(super) fn keys_name(&self) -> &str {
        &self.keys_name
    }

    fn decode_record(&self, id: &[u8], value: &[u8]) -> Result<EntityRecord> {
        decode_at(&self.entities_name, id, || codec::decode_entity(id, value))
    }

    pub(super) fn decode_key_record(&self, key: &[u8], value: &[u8]) -> Result<KeyRecord> {
        decode_at(&self.keys_name, key, || codec::decode_key_record(value))
    }

    /// Loads, decides and writes one request inside a transaction; a new
    /// outbox entry takes position `*next_position`, which then moves on.
    /// A failed decision (or an undecodable record) is that request's error;
    /// only a sled failure aborts the transaction.
    pub(super) fn run(
        &self,
        trees: &MachineViews<'_>,
        request: &StoreRequest<'_>,
        next_position: &mut u64,
    ) -> TxResult<Result<Decision>> {
        let id = request.id;
        let record = match trees.entities.get(id.as_bytes())? {
            Some(value) => match self.decode_record(id.as_bytes(), &value) {
                Ok(record) => Some(record),
                Err(error) => return Ok(Err(error)),
            },
            None => None,
        };
        let key_record = match request.key {
            Some(key) => match trees.keys.get(key)? {
                Some(value) => match self.decode_key_record(key, &value) {
                    Ok(record) => Some(record),
                    Err(error) => return Ok(Err(error)),
                },
                None => None,
            },
            None => None,
        };
        let decision = match (request.decide)(record.as_ref(), key_record.as_ref()) {
            Ok(decision) => decision,
            Err(error) => return Ok(Err(error)),
        };
        if let Some(fired) = request.fired_timer {
            remove_timer(trees.timers, fired)?;
        }
        match &decision {
            Decision::Replay(_)
            | Decision::NoOp {
                key_record: None, ..
            } => {}
            Decision::NoOp {
                key_record: Some(record),
                ..
            } => {
                if let Some(key) = request.key {
                    store_key_record(trees, key, record)?;
                }
            }
            Decision::Apply(applied) => {
                let version = applied.record.version;
                let change = codec::encode_change(&applied.history);
                trees
                    .entities
                    .insert(id.as_bytes(), codec::encode_entity(&applied.record))?;
                trees
                    .history
                    .insert(codec::history_key(id, version), change.as_slice())?;
                if let Some(previous) = &applied.previous_state {
                    trees.by_state.remove(codec::state_key(previous, id))?;
                }
                trees
                    .by_state
                    .insert(codec::state_key(&applied.record.state, id), codec::marker())?;
                if let (Some(key), Some(record)) = (request.key, &applied.key_record) {
                    store_key_record(trees, key, record)?;
                }
                trees.outbox.insert(
                    codec::outbox_key(*next_position, &self.machine, id, version),
                    change,
                )?;
                *next_position += 1;
                if let Some(left) = &applied.disarm {
                    remove_timer(trees.timers, left)?;
                }
                if let Some(timer) = &applied.arm {
                    put_timer(trees.timers, timer)?;
                }
            }
        }
        Ok(Ok(decision))
    }
}

/// A key record and its entry in the expiry index.
fn store_key_record(trees: &MachineViews<'_>, key: &[u8], record: &KeyRecord) -> TxResult<()> {
    trees.keys.insert(key, codec::encode_key_record(record))?;
    trees.key_expiry.insert(
        codec::key_expiry_key(record.expires_at, key),
        codec::marker(),
    )?;
    Ok(())
}

impl MachineStore for SledMachine {
    fn key_record(&self, key: &[u8]) -> Result<Option<KeyRecord>> {
        match self
            .keys
            .get(key)
            .map_err(storage("reading an idempotency key"))?
        {
            Some(value) => self.decode_key_record(key, &value).map(Some),
            None => Ok(None),
        }
    }

    fn get(&self, id: &str) -> Result<Option<EntityRecord>> {
        match self
            .entities
            .get(id.as_bytes())
            .map_err(storage("reading an entity"))?
        {
            Some(value) => self.decode_record(id.as_bytes(), &value).map(Some),
            None => Ok(None),
        }
    }

    fn history(&self, id: &str) -> Result<Vec<HistoryRecord>> {
        let mut entries = Vec::new();
        let prefix = codec::history_prefix(id);
        for item in self.history.scan_prefix(&prefix) {
            let (key, value) = item.map_err(storage("reading history"))?;
            let entry = decode_at(&self.history_name, &key, || {
                let (_, version) = codec::decode_history_key(&key)?;
                codec::decode_change(version, &value)
            })?;
            entries.push(entry);
        }
        Ok(entries)
    }

    fn in_state(&self, state: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let prefix = codec::state_prefix(state);
        let start = match after {
            None => prefix.clone(),
            Some(after) => {
                let mut start = codec::state_key(state, after);
                start.push(0); // the smallest key after `after`
                start
            }
        };
        let scan = self.by_state.range(start..).take_while(|item| {
            item.as_ref()
                .map_or(true, |(key, _)| key.starts_with(&prefix))
        });
        collect_ids(scan, prefix.len(), limit, &self.by_state_name)
    }

    fn key_count(&self) -> Result<u64> {
        self.count_keys()
    }

    fn references(&self, states: &[String], events: &[String]) -> Result<Vec<Missing>> {
        self.count_references(states, events)
    }

    fn timer(&self, stored_key: &[u8]) -> Result<Option<TimerRecord>> {
        self.timer_of_key(stored_key)
    }

    fn timers_of(&self, id: &str) -> Result<Vec<TimerRecord>> {
        let mut timers = Vec::new();
        for item in self
            .timers
            .scan_prefix(codec::timer_entity_prefix(id))
            .keys()
        {
            let key = item.map_err(storage("reading timers"))?;
            let stored_key = &key[codec::timer_entity_prefix(id).len()..];
            if let Some(timer) = self.timer_of_key(stored_key)? {
                timers.push(timer);
            }
        }
        Ok(timers)
    }

    fn timers(&self, limit: usize) -> Result<Vec<TimerRecord>> {
        self.due_timers(None, limit)
    }

    fn count_in_state(&self, state: &str) -> Result<u64> {
        let mut count = 0;
        for item in self.by_state.scan_prefix(codec::state_prefix(state)).keys() {
            item.map_err(storage("counting the state index"))?;
            count += 1;
        }
        Ok(count)
    }
}

impl SledMachine {
    fn count_keys(&self) -> Result<u64> {
        let mut count = 0;
        for item in self.keys.iter().keys() {
            item.map_err(storage("counting idempotency keys"))?;
            count += 1;
        }
        Ok(count)
    }
}

fn collect_ids(
    scan: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    prefix_len: usize,
    limit: usize,
    tree: &str,
) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for item in scan.take(limit) {
        let (key, value) = item.map_err(storage("reading the state index"))?;
        decode_at(tree, &key, || codec::check_marker(&value))?;
        ids.push(decode_at(tree, &key, || {
            codec::id_of_state_key(prefix_len, &key)
        })?);
    }
    Ok(ids)
}
