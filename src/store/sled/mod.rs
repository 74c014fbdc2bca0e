//! The sled backend: one multi-tree transaction per batch of requests.
//!
//! Trees (see `docs/storage-format.md`):
//! - `meta`: `definition/<machine>` -> the current definition (JSON),
//!   `definition_meta/<machine>` -> its version, time and changes (JSON),
//!   `definition_log/<machine>/<n>` -> every version stored before,
//!   `key_expiry_indexed/<machine>` -> set once the expiry index is complete;
//! - `entities/<machine>`: id -> record;
//! - `history/<machine>`: `[id][version]` -> change;
//! - `by_state/<machine>`: `[state][id]` -> marker;
//! - `keys/<machine>`: idempotency key (stored form) -> key record;
//! - `key_expiry/<machine>`: `[expires_at][key]` -> marker;
//! - `timers/<machine>`: `d[due][id][key]` -> timer, `k[key]` and `e[id][key]`
//!   -> where it is;
//! - `outbox`: `[position][machine][id][version]` -> change;
//! - `outbox_quarantine`: outbox entries moved aside, same keys.
//!
//! How sled is used, and which upstream issue each rule avoids (details in
//! `docs/reliability.md`):
//! - one thread, the engine's writer, makes every write and every flush
//!   ([`SledWriter`]); readers only read, and only trees that exist. So no
//!   flush races a transaction (sled#1308) and few log buffers are in flight
//!   at once, which keeps sled's I/O pool free to run the file truncation
//!   that its segment accountant waits for while holding its lock (the
//!   deadlock of sled#1412 / fixed upstream by sled PR #1269, not in 0.34.7);
//! - sled's own background flusher is off: the writer flushes on its own
//!   schedule, between commits;
//! - no `watch_prefix` subscribers (a full subscriber queue blocks the
//!   writer inside its commit) and no `flush_async`;
//! - nothing is called on a plain `Tree` inside a transaction (sled#1139);
//! - after sled's flush, `fdatasync` of the data file, of new blob files and
//!   of the directories (sled's flush stops at `sync_file_range`, sled#1452);
//! - new databases use 8 MiB segments, so no page within idemflow's default
//!   limits reaches the blob threshold (a quarter of a segment).

mod empty;
mod evolution;
mod files;
mod machine;
mod timers;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use self::files::DurableFiles;
pub(crate) use self::machine::SledMachine;
use self::writer::SledWriter;
use super::codec::{self, decode_at};
use super::{MachineStore, PendingEntry, Store, StoreWriter};
use crate::definitions::{describe_changes, DefinitionVersion};
use crate::error::{Error, Result};
use crate::machine::MachineDef;
use crate::timers::TimerRecord;

const META: &str = "meta";
const OUTBOX: &str = "outbox";
const QUARANTINE: &str = "outbox_quarantine";
const DEFINITION_PREFIX: &str = "definition/";
const DEFINITION_LOG_PREFIX: &str = "definition_log/";
const DEFINITION_META_PREFIX: &str = "definition_meta/";
const KEY_INDEX_DONE_PREFIX: &str = "key_expiry_indexed/";

/// The segment size of new databases: 8 MiB, so that pages (at most 17
/// values of a leaf) stay under sled's blob threshold of a quarter segment
/// with the default payload limit of 64 KiB.
pub(crate) const DEFAULT_SEGMENT_SIZE: usize = 8 * 1024 * 1024;

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
    /// The segment size of a new database (an existing one keeps its own).
    pub(crate) segment_size: usize,
}

/// What readers and the writer share.
pub(crate) struct Shared {
    db: sled::Db,
    meta: sled::Tree,
    outbox: sled::Tree,
    quarantine: sled::Tree,
    machines: RwLock<HashMap<String, Arc<SledMachine>>>,
    /// Outbox positions below this are on stable storage.
    durable_below: AtomicU64,
}

/// A sled database.
pub(crate) struct SledStore {
    shared: Arc<Shared>,
    /// Taken by [`Store::writer`].
    writer: Mutex<Option<SledWriter>>,
}

impl SledStore {
    pub(crate) fn open(options: &SledOptions) -> Result<Self> {
        let segment_size = options
            .path
            .as_deref()
            .and_then(files::existing_segment_size)
            .unwrap_or(options.segment_size);
        let mut config = sled::Config::new()
            .cache_capacity(options.cache_capacity)
            .segment_size(segment_size)
            // The writer flushes; sled's flusher thread would race it.
            .flush_every_ms(None);
        config = match &options.path {
            Some(path) => config.path(path),
            None => config.temporary(true),
        };
        let db = open_with_retry(&config, options.path.as_deref())?;
        let open_tree = |name: &str| {
            db.open_tree(name)
                .map_err(|error| Error::storage(format!("opening tree {name}"), error))
        };
        let meta = open_tree(META)?;
        let outbox = open_tree(OUTBOX)?;
        let quarantine = open_tree(QUARANTINE)?;
        let files = match &options.path {
            Some(path) => Some(DurableFiles::open(path).map_err(|error| {
                Error::storage("syncing the database's files to stable storage", error)
            })?),
            None => None,
        };
        let next_position = next_outbox_position(&outbox, &quarantine)?;
        let shared = Arc::new(Shared {
            db,
            meta,
            outbox,
            quarantine,
            machines: RwLock::new(HashMap::new()),
            // What was there at open was read back from disk: durable.
            durable_below: AtomicU64::new(next_position),
        });
        let writer = SledWriter::new(shared.clone(), files, next_position);
        Ok(SledStore {
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }
}

/// The position after the last outbox entry (pending or quarantined).
fn next_outbox_position(outbox: &sled::Tree, quarantine: &sled::Tree) -> Result<u64> {
    let mut next = 0;
    for tree in [outbox, quarantine] {
        if let Some((key, _)) = tree.last().map_err(storage("reading the outbox"))? {
            if let Ok(position) = codec::outbox_key_position(&key) {
                next = next.max(position.saturating_add(1));
            }
        }
    }
    Ok(next)
}

/// How long opening waits for a lock that the same process is releasing.
const LOCK_RELEASE_WAIT: Duration = Duration::from_secs(1);

/// Opens sled, retrying for a moment while the directory is locked: after the
/// last handle of a database is dropped, sled's I/O threads may still hold
/// its file (and so its lock) for a few milliseconds (sled#1289). A real
/// second owner still gets `Error::Locked`, after [`LOCK_RELEASE_WAIT`].
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

impl Shared {
    /// The trees of `machine`, opened only if they exist (readers never
    /// create trees: creating one is a write, and only the writer writes).
    fn existing_machine(&self, machine: &str) -> Result<Option<Arc<SledMachine>>> {
        if let Some(store) = self
            .machines
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(machine)
        {
            return Ok(Some(store.clone()));
        }
        let names = self.db.tree_names();
        let exists = SledMachine::tree_names(machine)
            .iter()
            .all(|tree| names.iter().any(|name| name.as_ref() == tree.as_bytes()));
        if !exists {
            return Ok(None);
        }
        self.open_machine(machine).map(Some)
    }

    /// Opens (creating if needed) the trees of `machine`.
    fn open_machine(&self, machine: &str) -> Result<Arc<SledMachine>> {
        let mut machines = self
            .machines
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(store) = machines.get(machine) {
            return Ok(store.clone());
        }
        let store = Arc::new(SledMachine::open(&self.db, machine)?);
        machines.insert(machine.to_owned(), store.clone());
        Ok(store)
    }

    fn decode_outbox_entry(&self, key: &[u8], value: &[u8]) -> PendingEntry {
        match decode_at(OUTBOX, key, || codec::decode_outbox(key, value)) {
            Ok(event) => PendingEntry::Event(event),
            Err(error) => PendingEntry::Undecodable {
                position: codec::outbox_key_position(key).unwrap_or(0),
                error,
            },
        }
    }
}

impl Store for SledStore {
    fn definitions(&self) -> Result<Vec<MachineDef>> {
        let mut defs = Vec::new();
        for item in self.shared.meta.scan_prefix(DEFINITION_PREFIX) {
            let (key, value) = item.map_err(storage("reading machine definitions"))?;
            defs.push(decode_definition(&key, &value)?);
        }
        Ok(defs)
    }

    fn definition(&self, machine: &str) -> Result<Option<MachineDef>> {
        self.shared.definition(machine)
    }

    fn definition_version(&self, machine: &str) -> Result<Option<u64>> {
        Ok(self
            .shared
            .current_version(machine)?
            .map(|(version, _)| version.version))
    }

    fn definition_log(&self, machine: &str) -> Result<Vec<DefinitionVersion>> {
        let mut log = self.shared.logged_versions(machine)?;
        if let Some((current, _)) = self.shared.current_version(machine)? {
            log.push(current);
        }
        Ok(log)
    }

    fn machine(&self, machine: &str) -> Result<Arc<dyn MachineStore>> {
        match self.shared.existing_machine(machine)? {
            Some(store) => Ok(store),
            None => Ok(Arc::new(empty::EmptyMachine)),
        }
    }

    fn outbox_after(&self, after: Option<u64>, limit: usize) -> Result<Vec<PendingEntry>> {
        let durable_below = self.shared.durable_below.load(Ordering::SeqCst);
        let start = match after {
            Some(position) => codec::outbox_position_key(position.saturating_add(1)),
            None => Vec::new(),
        };
        let end = codec::outbox_position_key(durable_below);
        let mut entries = Vec::with_capacity(limit.min(1024));
        for item in self.shared.outbox.range(start..end).take(limit) {
            let (key, value) = item.map_err(storage("reading the outbox"))?;
            entries.push(self.shared.decode_outbox_entry(&key, &value));
        }
        Ok(entries)
    }

    fn outbox_last_position(&self) -> Result<Option<u64>> {
        Ok(
            match self
                .shared
                .outbox
                .last()
                .map_err(storage("reading the outbox"))?
            {
                Some((key, _)) => codec::outbox_key_position(&key).ok(),
                None => None,
            },
        )
    }

    fn outbox_len(&self) -> Result<usize> {
        Ok(self.shared.outbox.len())
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.shared
            .db
            .size_on_disk()
            .map_err(storage("measuring the database"))
    }

    fn due_timers(&self, now: u64, limit: usize) -> Result<Vec<(String, TimerRecord)>> {
        let mut due = Vec::new();
        for machine in self.shared.machines_with_timers() {
            let Some(store) = self.shared.existing_machine(&machine)? else {
                continue;
            };
            for timer in store.due_timers(Some(now), limit)? {
                due.push((machine.clone(), timer));
            }
        }
        due.sort_by_key(|(_, timer)| timer.due_at);
        due.truncate(limit);
        Ok(due)
    }

    fn next_timer_due(&self) -> Result<Option<u64>> {
        let mut next: Option<u64> = None;
        for machine in self.shared.machines_with_timers() {
            if let Some(store) = self.shared.existing_machine(&machine)? {
                if let Some(due) = store.next_due()? {
                    next = Some(next.map_or(due, |earliest| earliest.min(due)));
                }
            }
        }
        Ok(next)
    }

    fn writer(&self) -> Result<Box<dyn StoreWriter>> {
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .map(|writer| Box::new(writer) as Box<dyn StoreWriter>)
            .ok_or_else(|| {
                Error::storage(
                    "starting the writer",
                    std::io::Error::other("the database already has its writer"),
                )
            })
    }
}

impl Shared {
    /// Every machine with a timers tree.
    fn machines_with_timers(&self) -> Vec<String> {
        self.db
            .tree_names()
            .iter()
            .filter_map(|name| {
                std::str::from_utf8(name)
                    .ok()?
                    .strip_prefix("timers/")
                    .map(str::to_owned)
            })
            .collect()
    }

    /// The stored definition of `machine`.
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

    /// The earlier versions of a machine's definition, oldest first. Entries
    /// written before the log kept versions hold a bare definition: they are
    /// numbered by position and their changes computed from their neighbour.
    fn logged_versions(&self, machine: &str) -> Result<Vec<DefinitionVersion>> {
        let prefix = format!("{DEFINITION_LOG_PREFIX}{machine}/");
        let mut versions: Vec<DefinitionVersion> = Vec::new();
        for item in self.meta.scan_prefix(prefix.as_bytes()) {
            let (key, value) = item.map_err(storage("reading a definition log"))?;
            let entry = decode_at(META, &key, || {
                let mut reader = codec::Reader::value(&value)?;
                let json: serde_json::Value = serde_json::from_slice(reader.rest())
                    .map_err(|error| format!("definition log entry is not JSON: {error}"))?;
                if json.get("definition").is_some() {
                    serde_json::from_value::<DefinitionVersion>(json)
                        .map_err(|error| format!("bad definition log entry: {error}"))
                } else {
                    let definition = serde_json::from_value::<MachineDef>(json)
                        .map_err(|error| format!("bad definition log entry: {error}"))?;
                    Ok(DefinitionVersion {
                        version: 0,
                        at: None,
                        changes: Vec::new(),
                        definition,
                    })
                }
            })?;
            versions.push(entry);
        }
        for n in 0..versions.len() {
            if versions[n].version == 0 {
                versions[n].version = n as u64 + 1;
                let previous = n.checked_sub(1).map(|p| versions[p].definition.clone());
                versions[n].changes = describe_changes(previous.as_ref(), &versions[n].definition);
            }
        }
        Ok(versions)
    }

    /// The current version of a machine's definition and the raw meta entry.
    pub(super) fn current_version(
        &self,
        machine: &str,
    ) -> Result<Option<(DefinitionVersion, bool)>> {
        let Some(definition) = self.definition(machine)? else {
            return Ok(None);
        };
        let key = format!("{DEFINITION_META_PREFIX}{machine}");
        match self
            .meta
            .get(key.as_bytes())
            .map_err(storage("reading a definition's version"))?
        {
            Some(value) => {
                let meta = decode_at(META, key.as_bytes(), || {
                    let mut reader = codec::Reader::value(&value)?;
                    serde_json::from_slice::<VersionMeta>(reader.rest())
                        .map_err(|error| format!("bad definition version: {error}"))
                })?;
                Ok(Some((
                    DefinitionVersion {
                        version: meta.version,
                        at: meta.at,
                        changes: meta.changes,
                        definition,
                    },
                    true,
                )))
            }
            None => {
                // Stored before versions existed: it follows its log.
                let log = self.logged_versions(machine)?;
                let changes = describe_changes(log.last().map(|v| &v.definition), &definition);
                Ok(Some((
                    DefinitionVersion {
                        version: log.len() as u64 + 1,
                        at: None,
                        changes,
                        definition,
                    },
                    false,
                )))
            }
        }
    }
}

/// The stored companion of the current definition: its version, time and changes.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct VersionMeta {
    pub(super) version: u64,
    pub(super) at: Option<u64>,
    pub(super) changes: Vec<String>,
}

fn decode_definition(key: &[u8], value: &[u8]) -> Result<MachineDef> {
    decode_at(META, key, || {
        let mut reader = codec::Reader::value(value)?;
        serde_json::from_slice(reader.rest())
            .map_err(|error| format!("definition is not valid JSON: {error}"))
    })
}
