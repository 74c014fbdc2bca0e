//! The write side of the sled backend, used by one leader at a time.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::files::DurableFiles;
use super::machine::{MachineViews, SledMachine, TREES_PER_MACHINE};
use super::{
    storage, Shared, VersionMeta, DEFINITION_LOG_PREFIX, DEFINITION_META_PREFIX, DEFINITION_PREFIX,
    KEY_INDEX_DONE_PREFIX,
};
use crate::decide::Decision;
use crate::definitions::{state_renames, DefinitionVersion};
use crate::error::{Error, Result};
use crate::store::codec::{self, decode_at};
use crate::store::{FileSync, PurgeRound, StoreRequest, StoreWriter};
use crate::timers::TimerRecord;

/// The one writer of a sled database.
pub(crate) struct SledWriter {
    shared: Arc<Shared>,
    /// `None` for a temporary database (nothing to sync beyond sled's flush).
    /// Shared with file syncs running after the leadership was passed on.
    files: Option<Arc<Mutex<DurableFiles>>>,
    /// The position the next outbox entry takes.
    next_position: u64,
    /// Where building the expiry index of an older database's keys stands,
    /// per machine (the last key indexed).
    index_cursor: HashMap<String, Vec<u8>>,
}

fn transaction_error(context: &'static str) -> impl Fn(TransactionError<Error>) -> Error {
    move |error| match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(error) => Error::storage(context, error),
    }
}

impl SledWriter {
    pub(super) fn new(
        shared: Arc<Shared>,
        files: Option<DurableFiles>,
        next_position: u64,
    ) -> Self {
        SledWriter {
            shared,
            files: files.map(|files| Arc::new(Mutex::new(files))),
            next_position,
            index_cursor: HashMap::new(),
        }
    }

    /// Every machine with a keys tree (older databases may lack a definition
    /// for none, but the trees are what purging works on).
    fn machines_with_keys(&self) -> Vec<String> {
        self.shared
            .db
            .tree_names()
            .iter()
            .filter_map(|name| {
                std::str::from_utf8(name)
                    .ok()?
                    .strip_prefix("keys/")
                    .map(str::to_owned)
            })
            .collect()
    }

    /// Builds the expiry index of keys stored before it existed, `budget`
    /// keys at a time; returns how much budget is left.
    fn index_old_keys(
        &mut self,
        machine: &SledMachine,
        budget: usize,
        round: &mut PurgeRound,
    ) -> Result<usize> {
        let done_key = format!("{KEY_INDEX_DONE_PREFIX}{}", machine.machine);
        if self
            .shared
            .meta
            .contains_key(done_key.as_bytes())
            .map_err(storage("reading the key index state"))?
        {
            return Ok(budget);
        }
        let start = match self.index_cursor.get(&machine.machine) {
            Some(last) => Bound::Excluded(last.clone()),
            None => Bound::Unbounded,
        };
        let mut used = 0;
        let mut last = None;
        for item in machine.keys.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            if used == budget {
                break;
            }
            let (key, value) = item.map_err(storage("scanning idempotency keys"))?;
            used += 1;
            match decode_at(machine.keys_name(), &key, || {
                codec::key_record_expiry(&value)
            }) {
                Ok(expires_at) => {
                    machine
                        .key_expiry
                        .insert(codec::key_expiry_key(expires_at, &key), codec::marker())
                        .map_err(storage("indexing idempotency keys"))?;
                }
                Err(error) => round.corrupt.push(error),
            }
            last = Some(key.to_vec());
        }
        if used < budget {
            self.shared
                .meta
                .insert(done_key.as_bytes(), codec::marker())
                .map_err(storage("recording the key index state"))?;
            self.index_cursor.remove(&machine.machine);
        } else if let Some(last) = last {
            self.index_cursor.insert(machine.machine.clone(), last);
            round.more = true;
        }
        Ok(budget - used)
    }

    /// Deletes up to `budget` expired keys of one machine.
    fn purge_machine(
        &self,
        machine: &SledMachine,
        now: u64,
        budget: usize,
        round: &mut PurgeRound,
    ) -> Result<usize> {
        // Read first (nothing else writes: this is the only writer), then
        // delete in one transaction so a key and its index entry go together.
        let mut entries = Vec::new();
        for item in machine
            .key_expiry
            .range(..codec::key_expiry_bound(now))
            .keys()
            .take(budget)
        {
            entries.push(item.map_err(storage("scanning the key expiry index"))?);
        }
        let mut delete_keys = Vec::new();
        for entry in &entries {
            let Ok((expires_at, stored_key)) = codec::decode_key_expiry_key(entry) else {
                continue; // a damaged index entry: dropped below
            };
            let stored = machine
                .keys
                .get(stored_key)
                .map_err(storage("reading an idempotency key"))?;
            if let Some(value) = stored {
                match decode_at(machine.keys_name(), stored_key, || {
                    codec::key_record_expiry(&value)
                }) {
                    // The key was used again since (a later expiry): keep it.
                    Ok(current) if current == expires_at => delete_keys.push(stored_key.to_vec()),
                    Ok(_) => {}
                    Err(error) => round.corrupt.push(error),
                }
            }
        }
        (&machine.keys, &machine.key_expiry)
            .transaction(|(keys, index)| {
                for key in &delete_keys {
                    keys.remove(key.as_slice())?;
                }
                for entry in &entries {
                    index.remove(entry.as_ref())?;
                }
                Ok::<_, ConflictableTransactionError<Error>>(())
            })
            .map_err(transaction_error("purging idempotency keys"))?;
        round.purged += delete_keys.len() as u64;
        if entries.len() == budget {
            round.more = true;
        }
        Ok(budget - entries.len())
    }

    fn outbox_keys_at(&self, position: u64) -> Result<Vec<sled::IVec>> {
        let prefix = codec::outbox_position_key(position);
        let mut keys = Vec::new();
        for item in self.shared.outbox.scan_prefix(&prefix).keys() {
            keys.push(item.map_err(storage("reading the outbox"))?);
        }
        Ok(keys)
    }
}

impl StoreWriter for SledWriter {
    fn execute(&mut self, requests: &[StoreRequest<'_>]) -> Result<Vec<Result<Decision>>> {
        // The trees of every machine in the batch: the outbox, then five per machine.
        let mut machines: Vec<Arc<SledMachine>> = Vec::new();
        let mut machine_of = Vec::with_capacity(requests.len());
        for request in requests {
            let index = match machines.iter().position(|m| m.machine == request.machine) {
                Some(index) => index,
                None => {
                    machines.push(self.shared.open_machine(request.machine)?);
                    machines.len() - 1
                }
            };
            machine_of.push(index);
        }
        let mut trees: Vec<&sled::Tree> =
            Vec::with_capacity(1 + TREES_PER_MACHINE * machines.len());
        trees.push(&self.shared.outbox);
        for machine in &machines {
            trees.extend(machine.trees());
        }
        let first_position = self.next_position;
        let (decisions, next_position) = trees
            .as_slice()
            .transaction(|views: &Vec<TransactionalTree>| {
                // sled may run this closure again: start from the same position.
                let mut next_position = first_position;
                let mut decisions = Vec::with_capacity(requests.len());
                for (request, &index) in requests.iter().zip(&machine_of) {
                    let base = 1 + TREES_PER_MACHINE * index;
                    let trees = MachineViews {
                        entities: &views[base],
                        history: &views[base + 1],
                        by_state: &views[base + 2],
                        keys: &views[base + 3],
                        key_expiry: &views[base + 4],
                        timers: &views[base + 5],
                        outbox: &views[0],
                    };
                    decisions.push(machines[index].run(&trees, request, &mut next_position)?);
                }
                Ok::<_, ConflictableTransactionError<Error>>((decisions, next_position))
            })
            .map_err(transaction_error("committing requests"))?;
        self.next_position = next_position;
        Ok(decisions)
    }

    fn save_definition(&mut self, version: &DefinitionVersion) -> Result<bool> {
        let def = &version.definition;
        self.shared.open_machine(&def.name)?;
        let key = format!("{DEFINITION_PREFIX}{}", def.name);
        let meta_key = format!("{DEFINITION_META_PREFIX}{}", def.name);
        let encode = |json: Vec<u8>| {
            let mut value = vec![codec::FORMAT_VERSION];
            value.extend(json);
            value
        };
        // Serializing plain strings, numbers and vectors cannot fail.
        let value = encode(serde_json::to_vec(def).unwrap_or_default());
        let meta_value = encode(
            serde_json::to_vec(&VersionMeta {
                version: version.version,
                at: version.at,
                changes: version.changes.clone(),
            })
            .unwrap_or_default(),
        );
        // The version being replaced goes to the log, whole.
        let previous = self
            .shared
            .current_version(&def.name)?
            .map(|(previous, _)| previous);
        let log_prefix = format!("{DEFINITION_LOG_PREFIX}{}/", def.name);
        let log_length = self.shared.meta.scan_prefix(log_prefix.as_bytes()).count();
        let log_entry =
            previous.map(|previous| encode(serde_json::to_vec(&previous).unwrap_or_default()));
        self.shared
            .meta
            .transaction(|meta| {
                if let Some(entry) = &log_entry {
                    meta.insert(
                        format!("{log_prefix}{log_length:020}").as_bytes(),
                        entry.as_slice(),
                    )?;
                }
                meta.insert(key.as_bytes(), value.as_slice())?;
                meta.insert(meta_key.as_bytes(), meta_value.as_slice())?;
                Ok::<_, ConflictableTransactionError<Error>>(())
            })
            .map_err(transaction_error("storing a machine definition"))?;
        // A new machine also marks its (empty) key index as complete.
        let done_key = format!("{KEY_INDEX_DONE_PREFIX}{}", def.name);
        let machine = self.shared.open_machine(&def.name)?;
        if machine.keys.is_empty() {
            self.shared
                .meta
                .insert(done_key.as_bytes(), codec::marker())
                .map_err(storage("recording the key index state"))?;
        }
        // Only this writer stores definitions: the stored version is the
        // one the engine planned from.
        Ok(true)
    }

    fn migrate_state(&mut self, machine: &str, from: &str, to: &str, budget: usize) -> Result<u64> {
        let machine = self.shared.open_machine(machine)?;
        machine.migrate_state(from, to, budget)
    }

    fn migrate_renamed_states(&mut self, budget: usize) -> Result<u64> {
        let mut moved = 0;
        for item in self.shared.meta.scan_prefix(DEFINITION_PREFIX) {
            let (key, value) = item.map_err(storage("reading machine definitions"))?;
            let def = super::decode_definition(&key, &value)?;
            for (from, to) in state_renames(&def) {
                let left = budget.saturating_sub(usize::try_from(moved).unwrap_or(usize::MAX));
                if left == 0 {
                    return Ok(moved);
                }
                moved += self.migrate_state(&def.name, &from, &to, left)?;
            }
        }
        Ok(moved)
    }

    fn prepare_machine(&mut self, machine: &str) -> Result<()> {
        self.shared.open_machine(machine).map(|_| ())
    }

    fn outbox_remove(&mut self, positions: &[u64]) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for &position in positions {
            for key in self.outbox_keys_at(position)? {
                batch.remove(key);
                removed += 1;
            }
        }
        self.shared
            .outbox
            .apply_batch(batch)
            .map_err(storage("acknowledging outbox events"))?;
        Ok(removed)
    }

    fn outbox_quarantine(&mut self, position: u64) -> Result<bool> {
        let mut entries = Vec::new();
        for key in self.outbox_keys_at(position)? {
            if let Some(value) = self
                .shared
                .outbox
                .get(&key)
                .map_err(storage("reading the outbox"))?
            {
                entries.push((key, value));
            }
        }
        if entries.is_empty() {
            return Ok(false);
        }
        (&self.shared.outbox, &self.shared.quarantine)
            .transaction(|(outbox, quarantine)| {
                for (key, value) in &entries {
                    quarantine.insert(key, value)?;
                    outbox.remove(key)?;
                }
                Ok::<_, ConflictableTransactionError<Error>>(())
            })
            .map_err(transaction_error("quarantining an outbox entry"))?;
        Ok(true)
    }

    fn purge_expired_keys(&mut self, now: u64, budget: usize) -> Result<PurgeRound> {
        let mut round = PurgeRound::default();
        let mut left = budget;
        for name in self.machines_with_keys() {
            if left == 0 {
                round.more = true;
                break;
            }
            let machine = self.shared.open_machine(&name)?;
            left = self.index_old_keys(&machine, left, &mut round)?;
            if left > 0 {
                left = self.purge_machine(&machine, now, left, &mut round)?;
            }
        }
        Ok(round)
    }

    fn put_timer(&mut self, machine: &str, timer: &TimerRecord) -> Result<()> {
        self.shared.open_machine(machine)?.store_timer(timer)
    }

    fn remove_timer(&mut self, machine: &str, stored_key: &[u8]) -> Result<Option<TimerRecord>> {
        self.shared.open_machine(machine)?.delete_timer(stored_key)
    }

    fn flush(&mut self) -> Result<FileSync> {
        let assigned_below = self.next_position;
        self.shared
            .db
            .flush()
            .map_err(storage("flushing the database"))?;
        let files = self.files.clone();
        let shared = self.shared.clone();
        Ok(Box::new(move || {
            if let Some(files) = files {
                files
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .sync()
                    .map_err(|error| {
                        Error::storage("syncing the database's files to stable storage", error)
                    })?;
            }
            shared
                .durable_below
                .fetch_max(assigned_below, Ordering::SeqCst);
            Ok(())
        }))
    }
}
