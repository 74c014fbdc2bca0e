//! The sled backend: one multi-tree transaction per request.
//!
//! Trees (see `docs/storage-format.md`):
//! - `meta`: `definition/<machine>` -> the current definition (JSON),
//!   `definition_log/<machine>/<n>` -> every definition stored before;
//! - `entities/<machine>`: id -> record;
//! - `history/<machine>`: `[id][version]` -> change;
//! - `by_state/<machine>`: `[state][id]` -> marker;
//! - `keys/<machine>`: idempotency key -> key record;
//! - `outbox`: `[at][machine][id][version]` -> change.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::codec::{self, decode_at};
use super::{MachineStore, OutboxWatcher, Store, StoreRequest};
use crate::decide::{Decision, KeyRecord};
use crate::error::{Error, Result};
use crate::machine::MachineDef;
use crate::outcome::{EntityRecord, HistoryRecord, OutboxEvent};

const META: &str = "meta";
const OUTBOX: &str = "outbox";
const DEFINITION_PREFIX: &str = "definition/";
const DEFINITION_LOG_PREFIX: &str = "definition_log/";
/// How many expired keys one purge batch deletes.
const PURGE_BATCH: usize = 1024;

fn storage(context: &str) -> impl FnOnce(sled::Error) -> Error + '_ {
    move |error| Error::storage(context, error)
}

/// How sled is opened.
#[derive(Clone, Debug)]
pub(crate) struct SledOptions {
    /// `None` for a temporary database.
    pub(crate) path: Option<PathBuf>,
    /// sled's page cache in bytes.
    pub(crate) cache_capacity: u64,
    /// sled's background flush interval (`None`: only explicit flushes).
    pub(crate) flush_every_ms: Option<u64>,
}

/// A sled database.
pub(crate) struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    outbox: sled::Tree,
    machines: RwLock<HashMap<String, Arc<SledMachine>>>,
    /// sled's data file, for the fdatasync that makes a flush reach stable storage.
    data_file: Option<File>,
}

impl SledStore {
    pub(crate) fn open(options: &SledOptions) -> Result<Self> {
        let mut config = sled::Config::new()
            .cache_capacity(options.cache_capacity)
            .flush_every_ms(options.flush_every_ms);
        config = match &options.path {
            Some(path) => config.path(path),
            None => config.temporary(true),
        };
        let db = open_with_retry(&config, options.path.as_deref())?;
        let data_file =
            match &options.path {
                Some(path) => Some(File::open(path.join("db")).map_err(|error| {
                    Error::storage("opening sled's data file to sync it", error)
                })?),
                None => None,
            };
        let meta = db.open_tree(META).map_err(storage("opening tree meta"))?;
        let outbox = db
            .open_tree(OUTBOX)
            .map_err(storage("opening tree outbox"))?;
        Ok(SledStore {
            db,
            meta,
            outbox,
            machines: RwLock::new(HashMap::new()),
            data_file,
        })
    }
}

/// How long opening waits for a lock that the same process is releasing.
const LOCK_RELEASE_WAIT: Duration = Duration::from_secs(1);

/// Opens sled, retrying for a moment while the directory is locked: after the
/// last handle of a database is dropped, sled's I/O threads may still hold
/// its file (and so its lock) for a few milliseconds. A real second owner
/// still gets `Error::Locked`, after [`LOCK_RELEASE_WAIT`].
fn open_with_retry(config: &sled::Config, path: Option<&Path>) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_RELEASE_WAIT;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(error) => match open_error(path, error) {
                Error::Locked { .. } if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                error => return Err(error),
            },
        }
    }
}

fn open_error(path: Option<&Path>, error: sled::Error) -> Error {
    let text = error.to_string();
    match (path, &error) {
        (Some(path), sled::Error::Io(_)) if text.contains("could not acquire lock") => {
            Error::Locked {
                path: path.to_owned(),
            }
        }
        _ => Error::storage(
            format!(
                "opening the database{}",
                path.map(|p| format!(" {p:?}")).unwrap_or_default()
            ),
            error,
        ),
    }
}

impl Store for SledStore {
    fn definitions(&self) -> Result<Vec<MachineDef>> {
        let mut defs = Vec::new();
        for item in self.meta.scan_prefix(DEFINITION_PREFIX) {
            let (key, value) = item.map_err(storage("reading machine definitions"))?;
            defs.push(decode_definition(&key, &value)?);
        }
        Ok(defs)
    }

    fn definition(&self, machine: &str) -> Result<Option<MachineDef>> {
        let key = format!("{DEFINITION_PREFIX}{machine}");
        match self
            .meta
            .get(key.as_bytes())
            .map_err(storage("reading a machine definition"))?
        {
            None => Ok(None),
            Some(value) => decode_definition(key.as_bytes(), &value).map(Some),
        }
    }

    fn save_definition(&self, def: &MachineDef) -> Result<()> {
        let key = format!("{DEFINITION_PREFIX}{}", def.name);
        let mut value = vec![codec::FORMAT_VERSION];
        // Serializing plain strings and vectors cannot fail.
        value.extend(serde_json::to_vec(def).unwrap_or_default());
        let log_prefix = format!("{DEFINITION_LOG_PREFIX}{}/", def.name);
        let result = self.meta.transaction(|meta| {
            if let Some(previous) = meta.get(key.as_bytes())? {
                let mut n = 0u64;
                while meta
                    .get(format!("{log_prefix}{n:020}").as_bytes())?
                    .is_some()
                {
                    n += 1;
                }
                meta.insert(format!("{log_prefix}{n:020}").as_bytes(), previous)?;
            }
            meta.insert(key.as_bytes(), value.as_slice())?;
            Ok::<_, ConflictableTransactionError<Error>>(())
        });
        result.map_err(|error| match error {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(error) => {
                Error::storage("storing a machine definition", error)
            }
        })?;
        self.sync()
    }

    fn machine(&self, machine: &str) -> Result<Arc<dyn MachineStore>> {
        Ok(self.sled_machine(machine)?)
    }

    fn execute(&self, requests: &[StoreRequest<'_>]) -> Result<Vec<Result<Decision>>> {
        // The trees of every machine in the batch: the outbox, then four per machine.
        let mut machines: Vec<Arc<SledMachine>> = Vec::new();
        let mut machine_of = Vec::with_capacity(requests.len());
        for request in requests {
            let index = match machines.iter().position(|m| m.machine == request.machine) {
                Some(index) => index,
                None => {
                    machines.push(self.sled_machine(request.machine)?);
                    machines.len() - 1
                }
            };
            machine_of.push(index);
        }
        let mut trees: Vec<&sled::Tree> = Vec::with_capacity(1 + 4 * machines.len());
        trees.push(&self.outbox);
        for machine in &machines {
            trees.extend([
                &machine.entities,
                &machine.history,
                &machine.by_state,
                &machine.keys,
            ]);
        }
        let result = trees
            .as_slice()
            .transaction(|views: &Vec<TransactionalTree>| {
                let mut decisions = Vec::with_capacity(requests.len());
                for (request, &index) in requests.iter().zip(&machine_of) {
                    let base = 1 + 4 * index;
                    let trees = MachineViews {
                        entities: &views[base],
                        history: &views[base + 1],
                        by_state: &views[base + 2],
                        keys: &views[base + 3],
                        outbox: &views[0],
                    };
                    decisions.push(machines[index].run(&trees, request)?);
                }
                Ok::<_, ConflictableTransactionError<Error>>(decisions)
            });
        result.map_err(|error| match error {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(error) => Error::storage("committing requests", error),
        })
    }

    fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxEvent>> {
        let mut events = Vec::with_capacity(limit.min(1024));
        for item in self.outbox.iter().take(limit) {
            let (key, value) = item.map_err(storage("reading the outbox"))?;
            events.push(decode_at(OUTBOX, &key, || {
                codec::decode_outbox(&key, &value)
            })?);
        }
        Ok(events)
    }

    fn outbox_ack(&self, events: &[OutboxEvent]) -> Result<usize> {
        let mut removed = 0;
        for event in events {
            let key = codec::outbox_key(&event.machine, &event.id, event.version, event.at);
            if self
                .outbox
                .remove(key)
                .map_err(storage("acknowledging outbox events"))?
                .is_some()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn outbox_len(&self) -> Result<usize> {
        Ok(self.outbox.len())
    }

    fn outbox_watcher(&self) -> Box<dyn OutboxWatcher> {
        Box::new(SledOutboxWatcher {
            subscriber: self.outbox.watch_prefix(Vec::<u8>::new()),
        })
    }

    fn sync(&self) -> Result<()> {
        self.db.flush().map_err(storage("flushing the database"))?;
        if let Some(file) = &self.data_file {
            file.sync_data().map_err(|error| {
                Error::storage("syncing the data file to stable storage", error)
            })?;
        }
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.db
            .size_on_disk()
            .map_err(storage("measuring the database"))
    }
}

impl SledStore {
    fn sled_machine(&self, machine: &str) -> Result<Arc<SledMachine>> {
        if let Some(store) = self
            .machines
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(machine)
        {
            return Ok(store.clone());
        }
        let mut machines = self
            .machines
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(store) = machines.get(machine) {
            return Ok(store.clone());
        }
        let open = |concern: &str| {
            let name = format!("{concern}/{machine}");
            self.db
                .open_tree(name.as_bytes())
                .map_err(|error| Error::storage(format!("opening tree {name}"), error))
        };
        let store = Arc::new(SledMachine {
            machine: machine.to_owned(),
            entities_name: format!("entities/{machine}"),
            history_name: format!("history/{machine}"),
            by_state_name: format!("by_state/{machine}"),
            keys_name: format!("keys/{machine}"),
            entities: open("entities")?,
            history: open("history")?,
            by_state: open("by_state")?,
            keys: open("keys")?,
        });
        machines.insert(machine.to_owned(), store.clone());
        Ok(store)
    }
}

fn decode_definition(key: &[u8], value: &[u8]) -> Result<MachineDef> {
    decode_at(META, key, || {
        let mut reader = codec::Reader::value(value)?;
        serde_json::from_slice(reader.rest())
            .map_err(|error| format!("definition is not valid JSON: {error}"))
    })
}

struct SledOutboxWatcher {
    subscriber: sled::Subscriber,
}

impl OutboxWatcher for SledOutboxWatcher {
    fn next_event(&mut self, timeout: Duration) -> Option<Result<OutboxEvent>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.subscriber.next_timeout(left) {
                Ok(sled::Event::Insert { key, value }) => {
                    return Some(decode_at(OUTBOX, &key, || {
                        codec::decode_outbox(&key, &value)
                    }))
                }
                Ok(sled::Event::Remove { .. }) => continue,
                Err(_) => return None,
            }
        }
    }
}

/// One machine's trees.
pub(crate) struct SledMachine {
    machine: String,
    entities_name: String,
    history_name: String,
    by_state_name: String,
    keys_name: String,
    entities: sled::Tree,
    history: sled::Tree,
    by_state: sled::Tree,
    keys: sled::Tree,
}

impl SledMachine {
    fn decode_record(&self, id: &[u8], value: &[u8]) -> Result<EntityRecord> {
        decode_at(&self.entities_name, id, || codec::decode_entity(id, value))
    }

    fn decode_key_record(&self, key: &[u8], value: &[u8]) -> Result<KeyRecord> {
        decode_at(&self.keys_name, key, || codec::decode_key_record(value))
    }

    /// Loads, decides and writes one request inside a transaction. A failed
    /// decision (or an undecodable record) is that request's error; only a
    /// sled failure or conflict aborts the transaction.
    fn run(
        &self,
        trees: &MachineViews<'_>,
        request: &StoreRequest<'_>,
    ) -> std::result::Result<Result<Decision>, ConflictableTransactionError<Error>> {
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
                    trees.keys.insert(key, codec::encode_key_record(record))?;
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
                    trees.keys.insert(key, codec::encode_key_record(record))?;
                }
                trees.outbox.insert(
                    codec::outbox_key(&self.machine, id, version, applied.history.at),
                    change,
                )?;
            }
        }
        Ok(Ok(decision))
    }
}

/// The transactional views of one machine's trees (and the shared outbox).
struct MachineViews<'a> {
    entities: &'a TransactionalTree,
    history: &'a TransactionalTree,
    by_state: &'a TransactionalTree,
    keys: &'a TransactionalTree,
    outbox: &'a TransactionalTree,
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

    fn count_in_state(&self, state: &str) -> Result<u64> {
        let mut count = 0;
        for item in self.by_state.scan_prefix(codec::state_prefix(state)).keys() {
            item.map_err(storage("counting the state index"))?;
            count += 1;
        }
        Ok(count)
    }

    fn purge_expired_keys(&self, now: u64) -> Result<u64> {
        use std::ops::Bound;
        let mut purged = 0;
        let mut start: Bound<sled::IVec> = Bound::Unbounded;
        loop {
            let mut expired = Vec::new();
            let mut scanned = 0;
            for item in self
                .keys
                .range((start.clone(), Bound::Unbounded))
                .take(PURGE_BATCH)
            {
                let (key, value) = item.map_err(storage("scanning idempotency keys"))?;
                scanned += 1;
                let expires_at =
                    decode_at(&self.keys_name, &key, || codec::key_record_expiry(&value))?;
                if expires_at <= now {
                    expired.push((key.clone(), value));
                }
                start = Bound::Excluded(key);
            }
            for (key, value) in expired {
                // Delete only the record we read: a request may have stored a
                // fresh record under the same (expired, so free) key meanwhile.
                let swapped = self
                    .keys
                    .compare_and_swap(&key, Some(&value), None as Option<&[u8]>)
                    .map_err(storage("purging idempotency keys"))?;
                if swapped.is_ok() {
                    purged += 1;
                }
            }
            if scanned < PURGE_BATCH {
                return Ok(purged);
            }
        }
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
