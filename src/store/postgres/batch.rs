//! One batch of requests as one database transaction, in two round trips.
//!
//! ```text
//! round trip 1 (one simple query, see load.rs):
//!   BEGIN ISOLATION LEVEL READ COMMITTED
//!   marker lock (outbox horizon, see outbox.rs)
//!   shared advisory lock of each machine's definition (see below)
//!   advisory locks of every entity and key of the batch, ascending
//!   one SELECT: the batch's entity rows, key rows and definition versions
//! adopt a newer stored definition, if another process stored one
//! decide each request in order, against the rows as the earlier ones left them
//! round trip 2 (one simple query, see write.rs):
//!   one INSERT/UPDATE/DELETE statement (data-modifying CTEs): entities,
//!     keys, history, outbox, timers; updates re-check the version / expiry
//!     they read, and the statement fails if the rows it wrote are not the
//!     rows it was given
//!   COMMIT
//! ```
//!
//! Definitions: storing one takes the machine's definition lock exclusively
//! (`definitions.rs`), a batch takes it shared. So while a batch runs, the
//! stored version cannot change, and the batch reads it after its locks: if
//! it is not the version the engine's live rules come from (another process
//! stored a new one), the batch adopts the stored definition
//! ([`LiveDefinition::adopt`](crate::store::LiveDefinition::adopt)) before it
//! decides anything, and every request is decided under the current version
//! (SPEC section 6).
//!
//! Why READ COMMITTED with advisory locks: every idemflow writer takes the
//! locks of its rows before it reads them, in one global order, so a batch
//! reads rows no one else is changing and never deadlocks with another
//! batch; each statement after the locks sees every commit made before it.
//! A row that appears although the locks say it cannot (another writer not
//! honouring them) is caught by the re-checks (`ON CONFLICT DO NOTHING` and
//! `WHERE version = <read>` with their row counts compared): the attempt is
//! rolled back and retried, never half-applied. SERIALIZABLE would abort and
//! retry whole batches of up to hundreds of requests whenever two processes
//! touch neighbouring rows; with the locks, contention only makes the
//! requests on the same entity take turns, which is what they must do anyway.

use std::collections::HashMap;

mod literal;
mod load;
mod write;

use super::locks;
use super::pool::Conn;
use crate::decide::{Decision, KeyRecord};
use crate::error::{Error, Result};
use crate::machine::MachineDef;
use crate::outcome::EntityRecord;
use crate::store::codec;
use crate::store::StoreRequest;
use crate::timers::TimerRecord;
pub(crate) use load::PREPARE_LOAD;
pub(crate) use write::{CONFLICT, PREPARE_WRITE};

/// A number as PostgreSQL's `bigint` (values past `i64::MAX` are clamped:
/// only expiry times can get there, and they then mean "never").
pub(crate) fn db_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// What was read for an entity or a key: a record, nothing, or a record
/// that failed to decode (the requests on it fail, the others go on).
enum Loaded<T> {
    Record(T),
    Corrupt(String, Vec<u8>, String),
}

struct EntitySlot {
    read_version: Option<u64>,
    current: Option<Loaded<EntityRecord>>,
    dirty: bool,
}

struct KeySlot {
    read_expires_at: Option<i64>,
    current: Option<Loaded<KeyRecord>>,
    dirty: bool,
}

/// The batch's decisions and what the attempt will write.
pub(crate) struct Decided {
    pub(crate) results: Vec<Result<Decision>>,
    /// How many outbox rows the attempt inserts.
    pub(crate) events: usize,
    /// Whether the attempt stores or removes timers.
    pub(crate) wrote_timers: bool,
    /// The write (when there is anything to write) and `COMMIT`, in one
    /// string for one round trip.
    pub(crate) commit: String,
}

/// The net effect of a batch on timers, by (machine, stored key), in the
/// order the requests asked for it: `Some` stores the timer, `None` removes
/// it (one statement may touch a row only once).
#[derive(Default)]
pub(crate) struct TimerWrites<'a> {
    order: Vec<(&'a str, Vec<u8>)>,
    last: HashMap<(&'a str, Vec<u8>), Option<TimerRecord>>,
}

impl<'a> TimerWrites<'a> {
    fn remove(&mut self, machine: &'a str, key: &[u8]) {
        self.set(machine, key.to_vec(), None);
    }

    fn put(&mut self, machine: &'a str, timer: &TimerRecord) {
        self.set(machine, timer.stored_key(), Some(timer.clone()));
    }

    fn set(&mut self, machine: &'a str, key: Vec<u8>, timer: Option<TimerRecord>) {
        if self.last.insert((machine, key.clone()), timer).is_none() {
            self.order.push((machine, key));
        }
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The stored definition of a machine whose version is not the live one.
struct Stale<'a> {
    machine: &'a str,
    version: i64,
    definition: Option<String>,
}

/// Makes the stored definitions live where another process stored a newer
/// one; returns the machines whose stored definition cannot be read, and
/// why (their requests fail with `Corrupt`, the others go on).
fn adopt<'a>(requests: &[StoreRequest<'a>], stale: Vec<Stale<'a>>) -> Vec<(&'a str, String)> {
    let mut unreadable = Vec::new();
    for Stale {
        machine,
        version,
        definition,
    } in stale
    {
        let Some(live) = requests.iter().find(|request| request.machine == machine) else {
            continue;
        };
        let decoded = definition
            .ok_or_else(|| "the stored definition is missing".to_owned())
            .and_then(|text| {
                serde_json::from_str::<MachineDef>(&text)
                    .map_err(|error| format!("definition is not valid JSON: {error}"))
            })
            .and_then(|def| {
                u64::try_from(version)
                    .map(|version| (version, def))
                    .map_err(|_| format!("negative definition version {version}"))
            });
        match decoded {
            Ok((version, def)) => live.definition.adopt(version, def),
            Err(reason) => unreadable.push((machine, reason)),
        }
    }
    unreadable
}

/// The definition lock keys of a batch's machines, ascending and without repeats.
pub(crate) fn definition_lock_keys(schema: &str, requests: &[StoreRequest<'_>]) -> Vec<i64> {
    let mut keys: Vec<i64> = requests
        .iter()
        .map(|request| locks::definition_key(schema, request.machine))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The lock keys of a batch, ascending and without repeats.
pub(crate) fn lock_keys(schema: &str, requests: &[StoreRequest<'_>]) -> Vec<i64> {
    let mut keys = Vec::with_capacity(requests.len() * 2);
    for request in requests {
        keys.push(locks::row_key(
            schema,
            b'e',
            request.machine,
            request.id.as_bytes(),
        ));
        if let Some(key) = request.key {
            keys.push(locks::row_key(schema, b'k', request.machine, key));
        }
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Opens the batch's transaction, locks, loads and decides; returns the
/// decisions and the SQL that writes them and commits (for the caller to
/// send, see [`Decided::commit`]).
pub(crate) fn run(
    conn: &mut Conn,
    namespace: i32,
    definition_keys: &[i64],
    lock_keys: &[i64],
    requests: &[StoreRequest<'_>],
) -> std::result::Result<Decided, postgres::Error> {
    let (mut entities, mut keys, stale) =
        load::begin_and_load(conn, namespace, definition_keys, lock_keys, requests)?;
    let unreadable = adopt(requests, stale);
    let mut results = Vec::with_capacity(requests.len());
    let mut history: Vec<(&str, &str, i64, Vec<u8>)> = Vec::new();
    let mut timers = TimerWrites::default();
    for request in requests {
        if let Some((machine, reason)) = unreadable
            .iter()
            .find(|(machine, _)| *machine == request.machine)
        {
            let key = machine.as_bytes();
            results.push(Err(Error::corrupt("definitions", key, reason.as_str())));
            continue;
        }
        let entity = entities
            .get(&(request.machine, request.id))
            .and_then(|slot| slot.current.as_ref());
        let record = match entity {
            Some(Loaded::Corrupt(tree, key, reason)) => {
                results.push(Err(Error::corrupt(tree.as_str(), key, reason.as_str())));
                continue;
            }
            Some(Loaded::Record(record)) => Some(record),
            None => None,
        };
        let key_slot = request
            .key
            .and_then(|key| keys.get(&(request.machine, key)))
            .and_then(|slot| slot.current.as_ref());
        let seen = match key_slot {
            Some(Loaded::Corrupt(tree, key, reason)) => {
                results.push(Err(Error::corrupt(tree.as_str(), key, reason.as_str())));
                continue;
            }
            Some(Loaded::Record(record)) => Some(record),
            None => None,
        };
        let decision = match (request.decide)(record, seen) {
            Ok(decision) => decision,
            Err(error) => {
                results.push(Err(error));
                continue;
            }
        };
        if let Some(fired) = request.fired_timer {
            timers.remove(request.machine, fired);
        }
        let key_record = match &decision {
            Decision::Replay(_) => None,
            Decision::NoOp { key_record, .. } => key_record.as_ref(),
            Decision::Apply(applied) => {
                let slot = entities
                    .entry((request.machine, request.id))
                    .or_insert_with(|| EntitySlot {
                        read_version: None,
                        current: None,
                        dirty: false,
                    });
                slot.current = Some(Loaded::Record(applied.record.clone()));
                slot.dirty = true;
                history.push((
                    request.machine,
                    request.id,
                    db_int(applied.record.version),
                    codec::encode_change(&applied.history),
                ));
                if let Some(left) = &applied.disarm {
                    timers.remove(request.machine, left);
                }
                if let Some(timer) = &applied.arm {
                    timers.put(request.machine, timer);
                }
                applied.key_record.as_ref()
            }
        };
        if let (Some(key), Some(stored)) = (request.key, key_record) {
            let slot = keys
                .entry((request.machine, key))
                .or_insert_with(|| KeySlot {
                    read_expires_at: None,
                    current: None,
                    dirty: false,
                });
            slot.current = Some(Loaded::Record(stored.clone()));
            slot.dirty = true;
        }
        results.push(Ok(decision));
    }
    let events = history.len();
    let wrote_timers = !timers.is_empty();
    let commit = write::commit_sql(&entities, &keys, &history, &timers);
    Ok(Decided {
        results,
        events,
        wrote_timers,
        commit,
    })
}

type Entities<'a> = HashMap<(&'a str, &'a str), EntitySlot>;
type Keys<'a> = HashMap<(&'a str, &'a [u8]), KeySlot>;

/// What [`load`] read: entities, keys, and the machines whose stored
/// definition is not the live one.
type LoadedRows<'a> = (Entities<'a>, Keys<'a>, Vec<Stale<'a>>);

fn corrupt<T>(error: Error, key: &[u8]) -> Loaded<T> {
    match error {
        Error::Corrupt { tree, reason, .. } => Loaded::Corrupt(tree, key.to_vec(), reason),
        other => Loaded::Corrupt(String::from("unknown"), key.to_vec(), other.to_string()),
    }
}
