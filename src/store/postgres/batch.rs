//! One batch of requests as one database transaction.
//!
//! ```text
//! BEGIN ISOLATION LEVEL READ COMMITTED
//!   marker lock (outbox horizon, see outbox.rs)
//!   advisory locks of every entity and key of the batch, ascending
//!   one SELECT: the batch's entity rows and key rows
//!   decide each request in order, against the rows as the earlier ones left them
//!   one INSERT/UPDATE statement (data-modifying CTEs): entities, keys,
//!     history, outbox; updates re-check the version / expiry they read
//! COMMIT
//! ```
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
use crate::outcome::EntityRecord;
use crate::store::codec;
use crate::store::StoreRequest;

const LOAD: &str = "\
SELECT 0::int2, e.machine, e.id, e.state, e.version, e.created_at, e.updated_at, NULL::bytea
  FROM entities e JOIN unnest($1::text[], $2::bytea[]) AS r(machine, id)
    ON e.machine = r.machine AND e.id = r.id
UNION ALL
SELECT 1::int2, k.machine, k.key, NULL, k.expires_at, NULL, NULL, k.record
  FROM keys k JOIN unnest($3::text[], $4::bytea[]) AS r(machine, key)
    ON k.machine = r.machine AND k.key = r.key";

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

/// `BEGIN`, the marker and the row locks, in one round trip.
pub(crate) fn begin(
    conn: &mut Conn,
    namespace: i32,
    lock_keys: &[i64],
) -> std::result::Result<(), postgres::Error> {
    let list: Vec<String> = lock_keys.iter().map(i64::to_string).collect();
    conn.client.simple_query(&format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED; {}; \
         SELECT pg_advisory_xact_lock(k) FROM unnest('{{{}}}'::int8[]) AS k",
        marker_sql(namespace),
        list.join(",")
    ))?;
    Ok(())
}

/// Loads, decides and writes the batch inside the open transaction.
pub(crate) fn run(
    conn: &mut Conn,
    requests: &[StoreRequest<'_>],
) -> std::result::Result<Decided, Failure> {
    let (mut entities, mut keys) = load(conn, requests)?;
    let mut results = Vec::with_capacity(requests.len());
    let mut history: Vec<(&str, &str, i64, Vec<u8>)> = Vec::new();
    for request in requests {
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
    write(conn, &entities, &keys, &history)?;
    Ok(Decided { results, events })
}

/// Rows found by (machine, bytes), mapped back to what the requests hold.
type Lookup<'k, 'a, T> = HashMap<(&'k str, &'k [u8]), (&'a str, T)>;

type Entities<'a> = HashMap<(&'a str, &'a str), EntitySlot>;
type Keys<'a> = HashMap<(&'a str, &'a [u8]), KeySlot>;

fn load<'a>(
    conn: &mut Conn,
    requests: &[StoreRequest<'a>],
) -> std::result::Result<(Entities<'a>, Keys<'a>), Failure> {
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
        &[&entity_machines, &entity_ids, &key_machines, &key_bytes],
    )?;
    let mut entities: Entities<'a> = HashMap::new();
    let mut keys: Keys<'a> = HashMap::new();
    for row in rows {
        let kind: i16 = row.try_get(0)?;
        let machine: String = row.try_get(1)?;
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
    Ok((entities, keys))
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
    if new.machine.is_empty()
        && moved.machine.is_empty()
        && new_keys.machine.is_empty()
        && renewed.machine.is_empty()
    {
        return Ok(());
    }
    let h_machine: Vec<&str> = history.iter().map(|row| row.0).collect();
    let h_id: Vec<&[u8]> = history.iter().map(|row| row.1.as_bytes()).collect();
    let h_version: Vec<i64> = history.iter().map(|row| row.2).collect();
    let h_change: Vec<&[u8]> = history.iter().map(|row| row.3.as_slice()).collect();
    let params: [&(dyn ToSql + Sync); 29] = [
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
