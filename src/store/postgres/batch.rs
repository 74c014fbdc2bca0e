//! One batch of requests as one database transaction.
//!
//! ```text
//! BEGIN ISOLATION LEVEL READ COMMITTED
//!   marker lock (outbox horizon, see outbox.rs)
//!   shared advisory lock of each machine's definition (see below)
//!   advisory locks of every entity and key of the batch, ascending
//!   one SELECT: the batch's entity rows, key rows and definition versions
//!   adopt a newer stored definition, if another process stored one
//!   decide each request in order, against the rows as the earlier ones left them
//!   one INSERT/UPDATE/DELETE statement (data-modifying CTEs): entities,
//!     keys, history, outbox, timers; updates re-check the version / expiry
//!     they read
//! COMMIT
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

use postgres::types::ToSql;

use super::locks;
use super::outbox::marker_sql;
use super::pool::Conn;
use super::reads::{entity_from_row, key_record};
use crate::decide::{Decision, KeyRecord};
use crate::error::{Error, Result};
use crate::machine::MachineDef;
use crate::outcome::EntityRecord;
use crate::store::codec;
use crate::store::StoreRequest;
use crate::timers::TimerRecord;

const LOAD: &str = "\
SELECT 0::int2, e.machine, e.id, e.state, e.version, e.created_at, e.updated_at, NULL::bytea
  FROM entities e JOIN unnest($1::text[], $2::bytea[]) AS r(machine, id)
    ON e.machine = r.machine AND e.id = r.id
UNION ALL
SELECT 1::int2, k.machine, k.key, NULL, k.expires_at, NULL, NULL, k.record
  FROM keys k JOIN unnest($3::text[], $4::bytea[]) AS r(machine, key)
    ON k.machine = r.machine AND k.key = r.key
UNION ALL
SELECT 2::int2, d.machine, NULL, CASE WHEN d.version <> r.live THEN d.definition END,
       d.version, NULL, NULL, NULL
  FROM definitions d JOIN unnest($5::text[], $6::int8[]) AS r(machine, live)
    ON d.machine = r.machine";

const WRITE: &str = "\
WITH new_entities AS (
    INSERT INTO entities (machine, id, state, version, created_at, updated_at)
    SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[], $4::int8[], $5::int8[], $6::int8[])
    ON CONFLICT DO NOTHING RETURNING 1
), moved_entities AS (
    UPDATE entities e SET state = u.state, version = u.version, updated_at = u.updated_at
    FROM unnest($7::text[], $8::bytea[], $9::text[], $10::int8[], $11::int8[], $12::int8[])
        AS u(machine, id, state, version, updated_at, read_version)
    WHERE e.machine = u.machine AND e.id = u.id AND e.version = u.read_version
    RETURNING 1
), new_keys AS (
    INSERT INTO keys (machine, key, expires_at, record)
    SELECT * FROM unnest($13::text[], $14::bytea[], $15::int8[], $16::bytea[])
    ON CONFLICT DO NOTHING RETURNING 1
), renewed_keys AS (
    UPDATE keys k SET expires_at = u.expires_at, record = u.record
    FROM unnest($17::text[], $18::bytea[], $19::int8[], $20::bytea[], $21::int8[])
        AS u(machine, key, expires_at, record, read_expires_at)
    WHERE k.machine = u.machine AND k.key = u.key AND k.expires_at = u.read_expires_at
    RETURNING 1
), history_rows AS (
    INSERT INTO history (machine, id, version, change)
    SELECT * FROM unnest($22::text[], $23::bytea[], $24::int8[], $25::bytea[])
    RETURNING 1
), outbox_rows AS (
    INSERT INTO outbox (machine, id, version, change)
    SELECT o.machine, o.id, o.version, o.change
    FROM unnest($26::text[], $27::bytea[], $28::int8[], $29::bytea[])
        WITH ORDINALITY AS o(machine, id, version, change, n)
    ORDER BY o.n
    RETURNING 1
), gone_timers AS (
    DELETE FROM timers t USING unnest($30::text[], $31::bytea[]) AS g(machine, key)
    WHERE t.machine = g.machine AND t.key = g.key
), armed_timers AS (
    INSERT INTO timers (machine, key, id, due_at, claimable_at, timer)
    SELECT a.machine, a.key, a.id, a.due_at, a.due_at, a.timer
    FROM unnest($32::text[], $33::bytea[], $34::bytea[], $35::int8[], $36::bytea[])
        AS a(machine, key, id, due_at, timer)
    ON CONFLICT (machine, key) DO UPDATE SET id = EXCLUDED.id, due_at = EXCLUDED.due_at,
        claimable_at = EXCLUDED.claimable_at, timer = EXCLUDED.timer
)
SELECT (SELECT count(*) FROM new_entities), (SELECT count(*) FROM moved_entities),
       (SELECT count(*) FROM new_keys), (SELECT count(*) FROM renewed_keys)";

/// A number as PostgreSQL's `bigint` (values past `i64::MAX` are clamped:
/// only expiry times can get there, and they then mean "never").
pub(crate) fn db_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// What an attempt failed with.
pub(crate) enum Failure {
    /// A statement failed; the transaction is open (roll it back).
    Statement(postgres::Error),
    /// The rows were not what the locks promised: roll back and retry.
    Conflict(String),
}

impl From<postgres::Error> for Failure {
    fn from(error: postgres::Error) -> Self {
        Failure::Statement(error)
    }
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

/// `BEGIN`, the marker, the definition locks (shared) and the row locks,
/// in one round trip.
pub(crate) fn begin(
    conn: &mut Conn,
    namespace: i32,
    definition_keys: &[i64],
    lock_keys: &[i64],
) -> std::result::Result<(), postgres::Error> {
    let list = |keys: &[i64]| {
        keys.iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    conn.client.simple_query(&format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED; {}; \
         SELECT pg_advisory_xact_lock_shared(k) FROM unnest('{{{}}}'::int8[]) AS k; \
         SELECT pg_advisory_xact_lock(k) FROM unnest('{{{}}}'::int8[]) AS k",
        marker_sql(namespace),
        list(definition_keys),
        list(lock_keys)
    ))?;
    Ok(())
}

/// Loads, decides and writes the batch inside the open transaction.
pub(crate) fn run(
    conn: &mut Conn,
    requests: &[StoreRequest<'_>],
) -> std::result::Result<Decided, Failure> {
    let (mut entities, mut keys, stale) = load(conn, requests)?;
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
    write(conn, &entities, &keys, &history, &timers)?;
    Ok(Decided {
        results,
        events,
        wrote_timers,
    })
}

/// Rows found by (machine, bytes), mapped back to what the requests hold.
type Lookup<'k, 'a, T> = HashMap<(&'k str, &'k [u8]), (&'a str, T)>;

type Entities<'a> = HashMap<(&'a str, &'a str), EntitySlot>;
type Keys<'a> = HashMap<(&'a str, &'a [u8]), KeySlot>;

/// What [`load`] read: entities, keys, and the machines whose stored
/// definition is not the live one.
type LoadedRows<'a> = (Entities<'a>, Keys<'a>, Vec<Stale<'a>>);

fn load<'a>(
    conn: &mut Conn,
    requests: &[StoreRequest<'a>],
) -> std::result::Result<LoadedRows<'a>, Failure> {
    let mut machines: Vec<&'a str> = Vec::new();
    let mut live_versions: Vec<i64> = Vec::new();
    for request in requests {
        if !machines.contains(&request.machine) {
            machines.push(request.machine);
            live_versions.push(db_int(request.definition.version()));
        }
    }
    let mut entity_machines = Vec::new();
    let mut entity_ids: Vec<&[u8]> = Vec::new();
    let mut key_machines = Vec::new();
    let mut key_bytes: Vec<&[u8]> = Vec::new();
    // (machine, id or key bytes) -> the same, as the requests hold them
    // (rows are looked up with keys that live only as long as the row).
    let mut by_id: Lookup<'_, 'a, &'a str> = HashMap::new();
    let mut by_key: Lookup<'_, 'a, &'a [u8]> = HashMap::new();
    for request in requests {
        if by_id
            .insert(
                (request.machine, request.id.as_bytes()),
                (request.machine, request.id),
            )
            .is_none()
        {
            entity_machines.push(request.machine);
            entity_ids.push(request.id.as_bytes());
        }
        if let Some(key) = request.key {
            if by_key
                .insert((request.machine, key), (request.machine, key))
                .is_none()
            {
                key_machines.push(request.machine);
                key_bytes.push(key);
            }
        }
    }
    let statement = conn.prepared(LOAD)?;
    let rows = conn.client.query(
        &statement,
        &[
            &entity_machines,
            &entity_ids,
            &key_machines,
            &key_bytes,
            &machines,
            &live_versions,
        ],
    )?;
    let mut entities: Entities<'a> = HashMap::new();
    let mut keys: Keys<'a> = HashMap::new();
    let mut stale = Vec::new();
    for row in rows {
        let kind: i16 = row.try_get(0)?;
        let machine: String = row.try_get(1)?;
        if kind == 2 {
            let version: i64 = row.try_get(4)?;
            let Some(index) = machines.iter().position(|name| *name == machine) else {
                continue;
            };
            if live_versions.get(index) != Some(&version) {
                stale.push(Stale {
                    machine: machines[index],
                    version,
                    definition: row.try_get(3)?,
                });
            }
            continue;
        }
        let id: Vec<u8> = row.try_get(2)?;
        if kind == 0 {
            let Some(&(machine, id)) = by_id.get(&(machine.as_str(), id.as_slice())) else {
                continue;
            };
            let loaded = match entity_from_row(machine, id, &row, 3) {
                Ok(record) => Loaded::Record(record),
                Err(error) => corrupt(error, id.as_bytes()),
            };
            let read_version = match &loaded {
                Loaded::Record(record) => Some(record.version),
                Loaded::Corrupt(..) => None,
            };
            entities.insert(
                (machine, id),
                EntitySlot {
                    read_version,
                    current: Some(loaded),
                    dirty: false,
                },
            );
        } else {
            let Some(&(machine, key)) = by_key.get(&(machine.as_str(), id.as_slice())) else {
                continue;
            };
            let expires_at: i64 = row.try_get(4)?;
            let record: Vec<u8> = row.try_get(7)?;
            let loaded = match key_record(machine, key, &record) {
                Ok(record) => Loaded::Record(record),
                Err(error) => corrupt(error, key),
            };
            keys.insert(
                (machine, key),
                KeySlot {
                    read_expires_at: Some(expires_at),
                    current: Some(loaded),
                    dirty: false,
                },
            );
        }
    }
    Ok((entities, keys, stale))
}

fn corrupt<T>(error: Error, key: &[u8]) -> Loaded<T> {
    match error {
        Error::Corrupt { tree, reason, .. } => Loaded::Corrupt(tree, key.to_vec(), reason),
        other => Loaded::Corrupt(String::from("unknown"), key.to_vec(), other.to_string()),
    }
}

fn write(
    conn: &mut Conn,
    entities: &Entities<'_>,
    keys: &Keys<'_>,
    history: &[(&str, &str, i64, Vec<u8>)],
    timers: &TimerWrites<'_>,
) -> std::result::Result<(), Failure> {
    #[derive(Default)]
    struct Columns<'a> {
        machine: Vec<&'a str>,
        id: Vec<&'a [u8]>,
        state: Vec<&'a str>,
        version: Vec<i64>,
        created: Vec<i64>,
        updated: Vec<i64>,
        read_version: Vec<i64>,
    }
    #[derive(Default)]
    struct KeyColumns<'a> {
        machine: Vec<&'a str>,
        key: Vec<&'a [u8]>,
        expires: Vec<i64>,
        record: Vec<Vec<u8>>,
        read_expires: Vec<i64>,
    }
    let mut new = Columns::default();
    let mut moved = Columns::default();
    for ((machine, id), slot) in entities {
        let (true, Some(Loaded::Record(record))) = (slot.dirty, &slot.current) else {
            continue;
        };
        let columns = match slot.read_version {
            None => &mut new,
            Some(read) => {
                moved.read_version.push(db_int(read));
                &mut moved
            }
        };
        columns.machine.push(machine);
        columns.id.push(id.as_bytes());
        columns.state.push(&record.state);
        columns.version.push(db_int(record.version));
        columns.created.push(db_int(record.created_at));
        columns.updated.push(db_int(record.updated_at));
    }
    let mut new_keys = KeyColumns::default();
    let mut renewed = KeyColumns::default();
    for ((machine, key), slot) in keys {
        let (true, Some(Loaded::Record(record))) = (slot.dirty, &slot.current) else {
            continue;
        };
        let columns = match slot.read_expires_at {
            None => &mut new_keys,
            Some(read) => {
                renewed.read_expires.push(read);
                &mut renewed
            }
        };
        columns.machine.push(machine);
        columns.key.push(key);
        columns.expires.push(db_int(record.expires_at));
        columns.record.push(codec::encode_key_record(record));
    }
    let mut gone: (Vec<&str>, Vec<&[u8]>) = Default::default();
    #[allow(clippy::type_complexity)]
    let mut armed: (Vec<&str>, Vec<&[u8]>, Vec<&[u8]>, Vec<i64>, Vec<Vec<u8>>) = Default::default();
    for (machine, key) in &timers.order {
        match timers.last.get(&(*machine, key.clone())) {
            Some(Some(timer)) => {
                armed.0.push(machine);
                armed.1.push(key);
                armed.2.push(timer.id.as_bytes());
                armed.3.push(db_int(timer.due_at));
                armed.4.push(codec::encode_timer(timer));
            }
            _ => {
                gone.0.push(machine);
                gone.1.push(key);
            }
        }
    }
    if new.machine.is_empty()
        && moved.machine.is_empty()
        && new_keys.machine.is_empty()
        && renewed.machine.is_empty()
        && timers.is_empty()
    {
        return Ok(());
    }
    let h_machine: Vec<&str> = history.iter().map(|row| row.0).collect();
    let h_id: Vec<&[u8]> = history.iter().map(|row| row.1.as_bytes()).collect();
    let h_version: Vec<i64> = history.iter().map(|row| row.2).collect();
    let h_change: Vec<&[u8]> = history.iter().map(|row| row.3.as_slice()).collect();
    let params: [&(dyn ToSql + Sync); 36] = [
        &new.machine,
        &new.id,
        &new.state,
        &new.version,
        &new.created,
        &new.updated,
        &moved.machine,
        &moved.id,
        &moved.state,
        &moved.version,
        &moved.updated,
        &moved.read_version,
        &new_keys.machine,
        &new_keys.key,
        &new_keys.expires,
        &new_keys.record,
        &renewed.machine,
        &renewed.key,
        &renewed.expires,
        &renewed.record,
        &renewed.read_expires,
        &h_machine,
        &h_id,
        &h_version,
        &h_change,
        // The outbox holds the same changes, in the batch's order.
        &h_machine,
        &h_id,
        &h_version,
        &h_change,
        &gone.0,
        &gone.1,
        &armed.0,
        &armed.1,
        &armed.2,
        &armed.3,
        &armed.4,
    ];
    let statement = conn.prepared(WRITE)?;
    let row = conn.client.query_one(&statement, &params)?;
    let counts: [i64; 4] = [
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
    ];
    let expected = [
        new.machine.len(),
        moved.machine.len(),
        new_keys.machine.len(),
        renewed.machine.len(),
    ];
    if counts
        .iter()
        .zip(expected)
        .any(|(&count, expected)| usize::try_from(count).ok() != Some(expected))
    {
        return Err(Failure::Conflict(format!(
            "rows changed under the batch's locks (written {counts:?}, expected {expected:?})"
        )));
    }
    Ok(())
}
