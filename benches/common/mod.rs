//! Shared by the criterion benches (`benches/*.rs`) and the bench examples
//! (`examples/bench_*.rs`, via `#[path]`): the bench machine, engine set-up,
//! and the raw-sled baseline that does the reads and writes of one engine
//! transition by hand.
//!
//! The baseline's values are *captured* from a real engine database (one
//! applied transition with the same id, key and payload shapes), and its keys
//! are built with the layout of `docs/storage-format.md`; [`Templates::capture`]
//! checks that those keys are byte for byte the engine's. So the baseline
//! writes exactly the bytes the engine writes, minus everything the engine
//! does around them (input checks, fingerprint, decision, encoding, the
//! read-only pre-check, group-commit bookkeeping).

#![allow(dead_code)]

use std::fs::File;
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use idemflow::{Durability, Engine, Machine, Request, StateMachine};
use serde_json::{json, Value};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

/// A cyclic machine whose one event is legal in every state, so an entity
/// can take any number of applied transitions and concurrent callers on one
/// entity never see `InvalidTransition`: `queued -> running -> review -> queued`.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "job", initial = Queued, events = JobEvent)]
pub enum Job {
    #[on(advance = Running)]
    Queued,
    #[on(advance = Review)]
    Running,
    #[on(advance = Queued)]
    Review,
}

/// The machine's name, as stored.
pub const MACHINE: &str = "job";
/// State names in cycle order (`advance` moves from `STATES[i]` to `STATES[(i + 1) % 3]`).
pub const STATES: [&str; 3] = ["queued", "running", "review"];
/// sled's page cache, as the engine's default.
pub const CACHE_BYTES: u64 = 256 * 1024 * 1024;
/// sled's background flush interval, as the engine's default.
pub const FLUSH_EVERY_MS: u64 = 100;

/// The id of entity `i` (fixed width, so every id has the same size).
pub fn id(i: usize) -> String {
    format!("e-{i:08}")
}

static KEYS: AtomicU64 = AtomicU64::new(0);

/// A fresh idempotency key, unique in this process (fixed width).
pub fn fresh_key() -> String {
    format!("k-{:016}", KEYS.fetch_add(1, Ordering::Relaxed))
}

/// The payload of every benchmarked transition.
pub fn payload() -> Value {
    json!({"amount": 4200, "currency": "EUR"})
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Opens an engine in `dir` (a real directory: `Immediate` needs the data
/// file) with the batching writer on (the default) or off.
pub fn open_engine(dir: &Path, durability: Durability, batching: bool) -> (Engine, Machine<Job>) {
    let engine = Engine::builder()
        .durability(durability)
        .batching(batching)
        .open(dir)
        .expect("open engine");
    let jobs = engine.machine::<Job>().expect("machine handle");
    (engine, jobs)
}

/// Creates entities `range` (Buffered engines make this fast).
pub fn create_all(jobs: &Machine<Job>, range: std::ops::Range<usize>) {
    for i in range {
        jobs.create(&id(i)).expect("create");
    }
}

/// One applied transition of the benchmark: `advance` with a fresh key and the payload.
pub fn advance(jobs: &Machine<Job>, id: &str, key: String, payload: &Value) {
    let outcome = jobs
        .apply(
            id,
            Request::fire(JobEvent::Advance)
                .key(key)
                .payload(payload.clone()),
        )
        .expect("apply");
    assert!(outcome.was_applied(), "benchmark transition not applied");
}

/// Like [`advance`], but returns whether the call applied (several callers on
/// one entity may all apply in turn; never a no-op or an error with this machine).
pub fn advance_shared(jobs: &Machine<Job>, id: &str, key: String, payload: &Value) -> bool {
    jobs.apply(
        id,
        Request::fire(JobEvent::Advance)
            .key(key)
            .payload(payload.clone()),
    )
    .expect("apply")
    .was_applied()
}

// ---- key layout of docs/storage-format.md ----

fn put_str(bytes: &mut Vec<u8>, text: &str) {
    bytes.extend_from_slice(&(text.len() as u32).to_be_bytes());
    bytes.extend_from_slice(text.as_bytes());
}

/// `history/<m>` key: str id, u64 version.
pub fn history_key(id: &str, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + id.len() + 8);
    put_str(&mut key, id);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// `by_state/<m>` key: str state, then id bytes.
pub fn state_key(state: &str, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + state.len() + id.len());
    put_str(&mut key, state);
    key.extend_from_slice(id.as_bytes());
    key
}

/// `outbox` key: u64 position, str machine, str id, u64 version.
pub fn outbox_key(position: u64, machine: &str, id: &str, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + 4 + machine.len() + 4 + id.len() + 8);
    key.extend_from_slice(&position.to_be_bytes());
    put_str(&mut key, machine);
    put_str(&mut key, id);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// `key_expiry` key: u64 expires_at, then the stored key.
pub fn key_expiry_key(expires_at: u64, key: &str) -> Vec<u8> {
    let mut entry = Vec::with_capacity(8 + key.len());
    entry.extend_from_slice(&expires_at.to_be_bytes());
    entry.extend_from_slice(key.as_bytes());
    entry
}

/// The engine's segment size for new databases (8 MiB).
pub const SEGMENT_BYTES: usize = 8 * 1024 * 1024;

/// The value bytes one applied transition writes, captured from the engine.
#[derive(Clone, Debug)]
pub struct Templates {
    /// `entities` value.
    pub entity: Vec<u8>,
    /// `history` value.
    pub change: Vec<u8>,
    /// `outbox` value (the engine writes the history change again).
    pub outbox_value: Vec<u8>,
    /// `by_state` value.
    pub marker: Vec<u8>,
    /// `keys` value.
    pub key_record: Vec<u8>,
}

impl Templates {
    /// Runs one applied transition in a throw-away engine database, reads
    /// back what it wrote with plain sled, and checks that this module's key
    /// functions rebuild the engine's keys exactly.
    pub fn capture() -> Templates {
        let dir = tempfile::tempdir().expect("temp dir");
        let the_id = id(0);
        let the_key = fresh_key();
        {
            let (engine, jobs) = open_engine(dir.path(), Durability::Buffered, true);
            jobs.create(&the_id).expect("create");
            advance(&jobs, &the_id, the_key.clone(), &payload());
            engine.flush().expect("flush");
        }
        let db = sled::Config::new()
            .path(dir.path())
            .segment_size(8 * 1024 * 1024)
            .open()
            .expect("reopen with plain sled");
        let tree = |concern: &str| {
            db.open_tree(format!("{concern}/{MACHINE}"))
                .expect("open tree")
        };
        let (entities, history, by_state, keys, key_expiry) = (
            tree("entities"),
            tree("history"),
            tree("by_state"),
            tree("keys"),
            tree("key_expiry"),
        );
        let outbox = db.open_tree("outbox").expect("open outbox");

        let entity = entities.get(&the_id).unwrap().expect("entity record");
        let (history_k, change) = history.last().unwrap().expect("history entry");
        assert_eq!(
            &*history_k,
            history_key(&the_id, 2).as_slice(),
            "history key layout"
        );
        let (state_k, marker) = by_state.first().unwrap().expect("state index entry");
        assert_eq!(
            &*state_k,
            state_key(STATES[1], &the_id).as_slice(),
            "state key layout"
        );
        assert_eq!(by_state.len(), 1, "the transition moved the index entry");
        let key_record = keys.get(&the_key).unwrap().expect("key record");
        let (expiry_k, _) = key_expiry.first().unwrap().expect("key expiry entry");
        let expires_at = u64::from_be_bytes(expiry_k[..8].try_into().unwrap());
        assert_eq!(
            &*expiry_k,
            key_expiry_key(expires_at, &the_key).as_slice(),
            "key expiry layout"
        );
        let (outbox_k, outbox_v) = outbox.last().unwrap().expect("outbox event");
        let position = u64::from_be_bytes(outbox_k[..8].try_into().unwrap());
        assert_eq!(
            &*outbox_k,
            outbox_key(position, MACHINE, &the_id, 2).as_slice(),
            "outbox key layout"
        );
        assert_eq!(outbox_v, change, "the outbox event is the history change");
        Templates {
            entity: entity.to_vec(),
            change: change.to_vec(),
            outbox_value: outbox_v.to_vec(),
            marker: marker.to_vec(),
            key_record: key_record.to_vec(),
        }
    }
}

/// Plain sled with the engine's trees and configuration.
pub struct RawSled {
    pub db: sled::Db,
    entities: sled::Tree,
    history: sled::Tree,
    by_state: sled::Tree,
    keys: sled::Tree,
    key_expiry: sled::Tree,
    timers: sled::Tree,
    outbox: sled::Tree,
    data_file: File,
    templates: Templates,
    /// The next outbox position (the engine's writer keeps one in memory too).
    position: AtomicU64,
}

type Conflict = ConflictableTransactionError<()>;

impl RawSled {
    pub fn open(dir: &Path, templates: Templates) -> RawSled {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .segment_size(SEGMENT_BYTES)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .open()
            .expect("open sled");
        let tree = |concern: &str| {
            db.open_tree(format!("{concern}/{MACHINE}"))
                .expect("open tree")
        };
        RawSled {
            entities: tree("entities"),
            history: tree("history"),
            by_state: tree("by_state"),
            keys: tree("keys"),
            key_expiry: tree("key_expiry"),
            timers: tree("timers"),
            outbox: db.open_tree("outbox").expect("open outbox"),
            data_file: File::open(dir.join("db")).expect("open data file"),
            db,
            templates,
            position: AtomicU64::new(0),
        }
    }

    /// A creation's transaction: read the record, write record, history
    /// entry 1, state-index entry, outbox event.
    pub fn create(&self, id: &str) {
        let t = &self.templates;
        let position = self.position.fetch_add(1, Ordering::Relaxed);
        let trees = (&self.entities, &self.history, &self.by_state, &self.outbox);
        trees
            .transaction(|(entities, history, by_state, outbox)| {
                black_box(entities.get(id.as_bytes())?);
                entities.insert(id.as_bytes(), t.entity.as_slice())?;
                history.insert(history_key(id, 1), t.change.as_slice())?;
                by_state.insert(state_key(STATES[0], id), t.marker.as_slice())?;
                outbox.insert(
                    outbox_key(position, MACHINE, id, 1),
                    t.outbox_value.as_slice(),
                )?;
                Ok::<_, Conflict>(())
            })
            .expect("raw create");
    }

    /// One transition's transaction over the same trees as the engine's:
    /// read the record and the key record, write record, history entry,
    /// state-index move, key record and its expiry entry, outbox event.
    /// `version` is the new version; the state moves `STATES[from]` -> next.
    pub fn transition(&self, id: &str, version: u64, from: usize, key: &str) {
        self.transitions(&[(id, version, from, key)]);
    }

    /// Several transitions (`(id, new version, from-state index, key)`) in
    /// one sled transaction, as the engine's writer commits a batch.
    pub fn transitions(&self, batch: &[(&str, u64, usize, &str)]) {
        let t = &self.templates;
        let expires_at = now_ms() + 24 * 3600 * 1000;
        let first = self
            .position
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let trees = [
            &self.outbox,
            &self.entities,
            &self.history,
            &self.by_state,
            &self.keys,
            &self.key_expiry,
            &self.timers,
        ];
        trees
            .as_slice()
            .transaction(|views| {
                let [outbox, entities, history, by_state, keys, key_expiry, _timers] =
                    views.as_slice()
                else {
                    unreachable!("seven trees")
                };
                for (n, &(id, version, from, key)) in batch.iter().enumerate() {
                    let to = (from + 1) % STATES.len();
                    let record = entities.get(id.as_bytes())?;
                    let seen = keys.get(key.as_bytes())?;
                    black_box((&record, &seen));
                    entities.insert(id.as_bytes(), t.entity.as_slice())?;
                    history.insert(history_key(id, version), t.change.as_slice())?;
                    by_state.remove(state_key(STATES[from], id))?;
                    by_state.insert(state_key(STATES[to], id), t.marker.as_slice())?;
                    keys.insert(key.as_bytes(), t.key_record.as_slice())?;
                    key_expiry.insert(key_expiry_key(expires_at, key), t.marker.as_slice())?;
                    outbox.insert(
                        outbox_key(first + n as u64, MACHINE, id, version),
                        t.outbox_value.as_slice(),
                    )?;
                }
                Ok::<_, Conflict>(())
            })
            .expect("raw transaction");
    }

    /// What `Durability::Immediate` does after a commit: sled flush + fdatasync.
    pub fn sync(&self) {
        self.db.flush().expect("flush");
        self.data_file.sync_data().expect("fdatasync");
    }

    pub fn get(&self, id: &str) -> Option<sled::IVec> {
        self.entities.get(id).unwrap()
    }

    pub fn history_len(&self, id: &str) -> usize {
        let mut prefix = Vec::new();
        put_str(&mut prefix, id);
        let mut n = 0;
        for item in self.history.scan_prefix(prefix) {
            black_box(item.unwrap());
            n += 1;
        }
        n
    }

    pub fn in_state(&self, state: &str) -> usize {
        let mut prefix = Vec::new();
        put_str(&mut prefix, state);
        let mut n = 0;
        for item in self.by_state.scan_prefix(prefix) {
            black_box(item.unwrap());
            n += 1;
        }
        n
    }

    pub fn outbox(&self) -> &sled::Tree {
        &self.outbox
    }
}

/// Per-entity cursor for the raw baseline: (new version of the next
/// transition, index of the current state).
#[derive(Clone, Copy, Debug)]
pub struct Cursor {
    pub version: u64,
    pub state: usize,
}

impl Default for Cursor {
    fn default() -> Self {
        Cursor {
            version: 1,
            state: 0,
        }
    }
}

impl Cursor {
    /// Returns (new version, from-state index) for the next transition and advances.
    pub fn step(&mut self) -> (u64, usize) {
        let from = self.state;
        self.version += 1;
        self.state = (self.state + 1) % STATES.len();
        (self.version, from)
    }
}

/// Peak resident set size of this process in bytes (`VmHWM`), if readable.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The comma-separated names in environment variable `name` (`default`
/// when it is unset), trimmed: which configurations a bench runs.
pub fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|part| part.trim().to_owned())
        .collect()
}
