//! One machine's trees: reads from any thread, and the writes of one request
//! inside the writer's transaction.

use std::collections::HashSet;

use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;

use super::storage;
use crate::decide::{Decision, KeyRecord};
use crate::definitions::unused;
use crate::error::{Error, Missing, NameKind, Result};
use crate::outcome::{EntityRecord, HistoryRecord};
use crate::store::codec::{self, decode_at};
use crate::store::{MachineStore, StoreRequest};
use crate::timers::TimerRecord;

/// One machine's trees.
pub(crate) struct SledMachine {
    pub(super) machine: String,
    entities_name: String,
    history_name: String,
    by_state_name: String,
    keys_name: String,
    pub(super) entities: sled::Tree,
    pub(super) history: sled::Tree,
    pub(super) by_state: sled::Tree,
    pub(super) keys: sled::Tree,
    pub(super) key_expiry: sled::Tree,
    pub(super) timers: sled::Tree,
    timers_name: String,
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

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<Error>>;

fn tx_error(error: sled::transaction::TransactionError<Error>, context: &str) -> Error {
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

    fn decode_key_record(&self, key: &[u8], value: &[u8]) -> Result<KeyRecord> {
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

/// A timer and its two index entries (by key, by entity), replacing a timer
/// with the same key.
pub(super) fn put_timer(timers: &TransactionalTree, timer: &TimerRecord) -> TxResult<()> {
    let key = timer.stored_key();
    remove_timer(timers, &key)?;
    timers.insert(
        codec::timer_due_key(timer.due_at, &timer.id, &key),
        codec::encode_timer(timer),
    )?;
    timers.insert(
        codec::timer_key_key(&key),
        codec::encode_timer_ref(timer.due_at, &timer.id),
    )?;
    timers.insert(
        codec::timer_entity_key(&timer.id, &key),
        codec::encode_timer_ref(timer.due_at, &timer.id),
    )?;
    Ok(())
}

/// Removes the timer with this stored key (its three entries), if pending;
/// returns its due-ordered key. A damaged index entry is dropped.
pub(super) fn remove_timer(timers: &TransactionalTree, key: &[u8]) -> TxResult<Option<Vec<u8>>> {
    let Some(reference) = timers.remove(codec::timer_key_key(key))? else {
        return Ok(None);
    };
    let Ok((due_at, id)) = codec::decode_timer_ref(&reference) else {
        return Ok(None);
    };
    let due_key = codec::timer_due_key(due_at, &id, key);
    timers.remove(due_key.clone())?;
    timers.remove(codec::timer_entity_key(&id, key))?;
    Ok(Some(due_key))
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
    fn decode_timer(&self, key: &[u8], value: &[u8]) -> Result<TimerRecord> {
        decode_at(&self.timers_name, key, || codec::decode_timer(value))
    }

    /// Up to `limit` timers due at `now` (all when `now` is `None`), in due order.
    pub(super) fn due_timers(&self, now: Option<u64>, limit: usize) -> Result<Vec<TimerRecord>> {
        let (start, end) = match now {
            Some(now) => codec::timer_due_range(now),
            None => (
                codec::timer_due_prefix(),
                vec![codec::timer_due_prefix()[0] + 1],
            ),
        };
        let mut timers = Vec::new();
        for item in self.timers.range(start..end).take(limit) {
            let (key, value) = item.map_err(storage("reading timers"))?;
            timers.push(self.decode_timer(&key, &value)?);
        }
        Ok(timers)
    }

    /// When the earliest pending timer is due.
    pub(super) fn next_due(&self) -> Result<Option<u64>> {
        let prefix = codec::timer_due_prefix();
        match self.timers.scan_prefix(&prefix).next() {
            Some(item) => {
                let (key, value) = item.map_err(storage("reading timers"))?;
                Ok(Some(self.decode_timer(&key, &value)?.due_at))
            }
            None => Ok(None),
        }
    }

    /// Stores a timer outside a request (a scheduled request).
    pub(super) fn store_timer(&self, timer: &TimerRecord) -> Result<()> {
        self.timers
            .transaction(|timers| put_timer(timers, timer))
            .map_err(|error| tx_error(error, "scheduling a request"))
    }

    /// Removes a timer outside a request; returns it if it was pending.
    pub(super) fn delete_timer(&self, key: &[u8]) -> Result<Option<TimerRecord>> {
        let pending = self.timer_of_key(key)?;
        self.timers
            .transaction(|timers| remove_timer(timers, key))
            .map_err(|error| tx_error(error, "removing a timer"))?;
        Ok(pending)
    }

    fn timer_of_key(&self, key: &[u8]) -> Result<Option<TimerRecord>> {
        let Some(reference) = self
            .timers
            .get(codec::timer_key_key(key))
            .map_err(storage("reading timers"))?
        else {
            return Ok(None);
        };
        let (due_at, id) = decode_at(&self.timers_name, key, || {
            codec::decode_timer_ref(&reference)
        })?;
        let due_key = codec::timer_due_key(due_at, &id, key);
        match self
            .timers
            .get(&due_key)
            .map_err(storage("reading timers"))?
        {
            Some(value) => self.decode_timer(&due_key, &value).map(Some),
            None => Ok(None),
        }
    }

    /// Moves up to `budget` entities from state `from` to state `to`: the
    /// record and the state index in one transaction per batch.
    pub(super) fn migrate_state(&self, from: &str, to: &str, budget: usize) -> Result<u64> {
        let prefix = codec::state_prefix(from);
        let mut ids = Vec::new();
        for item in self.by_state.scan_prefix(&prefix).keys().take(budget) {
            let key = item.map_err(storage("reading the state index"))?;
            ids.push(decode_at(&self.by_state_name, &key, || {
                codec::id_of_state_key(prefix.len(), &key)
            })?);
        }
        if ids.is_empty() {
            return Ok(0);
        }
        let mut moves = Vec::with_capacity(ids.len());
        for id in &ids {
            let Some(mut record) = self.get(id)? else {
                // An index entry without a record: drop the entry.
                moves.push((id.clone(), None));
                continue;
            };
            if record.state == from {
                record.state = to.to_owned();
            }
            moves.push((id.clone(), Some(record)));
        }
        (&self.entities, &self.by_state)
            .transaction(|(entities, by_state)| {
                for (id, record) in &moves {
                    by_state.remove(codec::state_key(from, id))?;
                    if let Some(record) = record {
                        entities.insert(id.as_bytes(), codec::encode_entity(record))?;
                        by_state.insert(codec::state_key(&record.state, id), codec::marker())?;
                    }
                }
                Ok::<_, ConflictableTransactionError<Error>>(())
            })
            .map_err(|error| match error {
                sled::transaction::TransactionError::Abort(error) => error,
                sled::transaction::TransactionError::Storage(error) => {
                    Error::storage("migrating a renamed state", error)
                }
            })?;
        Ok(moves.len() as u64)
    }

    /// See [`MachineStore::references`].
    fn count_references(&self, states: &[String], events: &[String]) -> Result<Vec<Missing>> {
        let mut counts: Vec<Missing> = states
            .iter()
            .map(|name| unused(NameKind::State, name))
            .chain(events.iter().map(|name| unused(NameKind::Event, name)))
            .collect();
        if counts.is_empty() {
            return Ok(counts);
        }
        for count in counts.iter_mut().filter(|c| c.kind == NameKind::State) {
            count.entities = self.count_in_state(&count.name)?;
        }
        // History: which entities' histories name each.
        let mut named_by: Vec<HashSet<String>> = vec![HashSet::new(); counts.len()];
        for item in self.history.iter() {
            let (key, value) = item.map_err(storage("reading history"))?;
            let entry = decode_at(&self.history_name, &key, || {
                let (id, version) = codec::decode_history_key(&key)?;
                Ok((id, codec::decode_change(version, &value)?))
            })?;
            let (id, change) = entry;
            for (index, count) in counts.iter().enumerate() {
                let named = match count.kind {
                    NameKind::State => {
                        change.to == count.name || change.from.as_deref() == Some(&count.name)
                    }
                    NameKind::Event => change.event.as_deref() == Some(&count.name),
                };
                if named {
                    named_by[index].insert(id.clone());
                }
            }
        }
        for (count, ids) in counts.iter_mut().zip(named_by) {
            count.in_history = ids.len() as u64;
        }
        // Key records: their stored outcome.
        for item in self.keys.iter() {
            let (key, value) = item.map_err(storage("reading idempotency keys"))?;
            let record = self.decode_key_record(&key, &value)?;
            let outcome = &record.outcome;
            for count in &mut counts {
                let named = match count.kind {
                    NameKind::State => {
                        outcome.state == count.name || outcome.from.as_deref() == Some(&count.name)
                    }
                    NameKind::Event => outcome.event.as_deref() == Some(&count.name),
                };
                if named {
                    count.key_records += 1;
                }
            }
        }
        Ok(counts)
    }

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

/// The reads of a machine whose trees do not exist yet: nothing is there.
pub(super) struct EmptyMachine;

impl MachineStore for EmptyMachine {
    fn key_record(&self, _: &[u8]) -> Result<Option<KeyRecord>> {
        Ok(None)
    }

    fn get(&self, _: &str) -> Result<Option<EntityRecord>> {
        Ok(None)
    }

    fn history(&self, _: &str) -> Result<Vec<HistoryRecord>> {
        Ok(Vec::new())
    }

    fn in_state(&self, _: &str, _: Option<&str>, _: usize) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn count_in_state(&self, _: &str) -> Result<u64> {
        Ok(0)
    }

    fn key_count(&self) -> Result<u64> {
        Ok(0)
    }

    fn timer(&self, _: &[u8]) -> Result<Option<TimerRecord>> {
        Ok(None)
    }

    fn timers_of(&self, _: &str) -> Result<Vec<TimerRecord>> {
        Ok(Vec::new())
    }

    fn timers(&self, _: usize) -> Result<Vec<TimerRecord>> {
        Ok(Vec::new())
    }

    fn references(&self, states: &[String], events: &[String]) -> Result<Vec<Missing>> {
        Ok(states
            .iter()
            .map(|name| unused(NameKind::State, name))
            .chain(events.iter().map(|name| unused(NameKind::Event, name)))
            .collect())
    }
}
