//! The first round trip of a batch: `BEGIN`, the locks and the load, sent
//! together as one simple query.
//!
//! One string, four statements run in order by the server: `BEGIN`; the
//! outbox marker; the definition locks (shared) and the row locks,
//! ascending; then the load (`EXECUTE idemflow_load(...)`, prepared when the
//! writer's connection opened). Under READ COMMITTED each statement of a
//! simple query takes its own snapshot when it starts, so the load sees
//! every commit made before its locks were granted, exactly as when it was
//! a round trip of its own.

use std::collections::HashMap;

use postgres::SimpleQueryMessage;

use super::literal::{self, decode_bytea, decode_int};
use super::{corrupt, db_int, EntitySlot, KeySlot, Loaded, LoadedRows, Stale};
use crate::error::{Error, Result};
use crate::store::postgres::outbox::marker_sql;
use crate::store::postgres::pool::Conn;
use crate::store::postgres::reads::{entity_record, key_record};
use crate::store::StoreRequest;

/// The load, prepared on the writer's connection as `idemflow_load`: the
/// batch's entity rows (kind 0), key rows (kind 1) and the stored
/// definition version of each machine (kind 2, with the definition's text
/// when it is not the live one).
pub(crate) const PREPARE_LOAD: &str = "\
PREPARE idemflow_load(text[], bytea[], text[], bytea[], text[], int8[]) AS
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

/// Rows found by (machine, bytes), mapped back to what the requests hold.
type Lookup<'k, 'a, T> = HashMap<(&'k str, &'k [u8]), (&'a str, T)>;

/// Opens the batch's transaction, takes its locks and loads its rows, in
/// one round trip.
pub(crate) fn begin_and_load<'a>(
    conn: &mut Conn,
    namespace: i32,
    definition_keys: &[i64],
    lock_keys: &[i64],
    requests: &[StoreRequest<'a>],
) -> std::result::Result<LoadedRows<'a>, postgres::Error> {
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
    let mut sql = String::with_capacity(512 + 64 * requests.len());
    sql.push_str("BEGIN ISOLATION LEVEL READ COMMITTED; ");
    sql.push_str(&marker_sql(namespace));
    sql.push_str("; SELECT pg_advisory_xact_lock_shared(k) FROM unnest(");
    literal::ints(&mut sql, definition_keys);
    sql.push_str(") AS k; SELECT pg_advisory_xact_lock(k) FROM unnest(");
    literal::ints(&mut sql, lock_keys);
    sql.push_str(") AS k; EXECUTE idemflow_load(");
    literal::texts(&mut sql, &entity_machines);
    sql.push(',');
    literal::byteas(&mut sql, &entity_ids);
    sql.push(',');
    literal::texts(&mut sql, &key_machines);
    sql.push(',');
    literal::byteas(&mut sql, &key_bytes);
    sql.push(',');
    literal::texts(&mut sql, &machines);
    sql.push(',');
    literal::ints(&mut sql, &live_versions);
    sql.push(')');
    // The rows of the last statement (the load).
    let mut rows = Vec::new();
    let mut current = Vec::new();
    for message in conn.client.simple_query(&sql)? {
        match message {
            SimpleQueryMessage::Row(row) => current.push(row),
            SimpleQueryMessage::CommandComplete(_) => rows = std::mem::take(&mut current),
            _ => {}
        }
    }
    let mut loaded: LoadedRows<'a> = (HashMap::new(), HashMap::new(), Vec::new());
    for row in rows {
        // Every column is text here; a value that does not parse is a
        // corrupt record, like one that does not decode.
        let text = |n: usize| row.try_get(n).map(Option::unwrap_or_default);
        let kind = text(0)?;
        let machine = text(1)?;
        if kind == "2" {
            let Some(index) = machines.iter().position(|name| *name == machine) else {
                continue;
            };
            // Unparsable (it cannot be: the column is a bigint), it is a
            // stored definition that cannot be adopted.
            let version = decode_int(text(4)?).unwrap_or(-1);
            if live_versions.get(index) != Some(&version) {
                loaded.2.push(Stale {
                    machine: machines[index],
                    version,
                    definition: row.try_get(3)?.map(str::to_owned),
                });
            }
            continue;
        }
        let Ok(bytes) = decode_bytea(text(2)?) else {
            continue;
        };
        if kind == "0" {
            let Some(&(machine, id)) = by_id.get(&(machine, bytes.as_slice())) else {
                continue;
            };
            let bad = |reason: String| {
                Error::corrupt(format!("entities/{machine}"), id.as_bytes(), reason)
            };
            let int = |n: usize| -> Result<i64> {
                let value = text(n).map_err(|error| bad(error.to_string()))?;
                decode_int(value).map_err(bad)
            };
            let record = (|| {
                let state = text(3).map_err(|error| bad(error.to_string()))?;
                entity_record(machine, id, state.to_owned(), [int(4)?, int(5)?, int(6)?])
            })();
            let record = match record {
                Ok(record) => Loaded::Record(record),
                Err(error) => corrupt(error, id.as_bytes()),
            };
            let read_version = match &record {
                Loaded::Record(record) => Some(record.version),
                Loaded::Corrupt(..) => None,
            };
            loaded.0.insert(
                (machine, id),
                EntitySlot {
                    read_version,
                    current: Some(record),
                    dirty: false,
                },
            );
        } else {
            let Some(&(machine, key)) = by_key.get(&(machine, bytes.as_slice())) else {
                continue;
            };
            let expires_at = decode_int(text(4)?);
            let record = decode_bytea(text(7)?)
                .map_err(|reason| Error::corrupt(format!("keys/{machine}"), key, reason))
                .and_then(|record| key_record(machine, key, &record));
            let record = match (record, &expires_at) {
                (Ok(record), Ok(_)) => Loaded::Record(record),
                (Err(error), _) => corrupt(error, key),
                (Ok(_), Err(reason)) => {
                    corrupt(Error::corrupt(format!("keys/{machine}"), key, reason), key)
                }
            };
            loaded.1.insert(
                (machine, key),
                KeySlot {
                    read_expires_at: expires_at.ok(),
                    current: Some(record),
                    dirty: false,
                },
            );
        }
    }
    Ok(loaded)
}
