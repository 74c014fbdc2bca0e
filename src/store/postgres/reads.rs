//! Reads of one machine's entities, history, state index and keys, from the
//! reader pool (any thread, no lock of ours).

use std::sync::Arc;

use postgres::Row;

use super::{definitions, timers, Shared};
use crate::decide::KeyRecord;
use crate::error::{Error, Missing, Result};
use crate::machine::MachineDef;
use crate::outcome::{EntityRecord, HistoryRecord};
use crate::store::codec::{self, decode_at};
use crate::store::MachineStore;
use crate::timers::TimerRecord;

const GET: &str =
    "SELECT state, version, created_at, updated_at FROM entities WHERE machine = $1 AND id = $2";
const KEY: &str = "SELECT record FROM keys WHERE machine = $1 AND key = $2";
const HISTORY: &str =
    "SELECT version, change FROM history WHERE machine = $1 AND id = $2 ORDER BY version";
const IN_STATE: &str = "SELECT id FROM entities WHERE machine = $1 AND state = $2 \
     AND ($3::bytea IS NULL OR id > $3) ORDER BY id LIMIT $4";
const COUNT_IN_STATE: &str = "SELECT count(*) FROM entities WHERE machine = $1 AND state = $2";
const KEY_COUNT: &str = "SELECT count(*) FROM keys WHERE machine = $1";
const DEFINITIONS: &str =
    "SELECT machine, definition FROM definitions ORDER BY machine COLLATE \"C\"";
const DEFINITION: &str = "SELECT machine, definition FROM definitions WHERE machine = $1";

/// One machine's reads.
pub(crate) struct PgMachine {
    pub(super) shared: Arc<Shared>,
    pub(super) machine: String,
}

/// Decodes an entity row (`state, version, created_at, updated_at`).
pub(crate) fn entity_from_row(
    machine: &str,
    id: &str,
    row: &Row,
    first: usize,
) -> Result<EntityRecord> {
    let tree = format!("entities/{machine}");
    let column = |error: postgres::Error| Error::corrupt(&tree, id.as_bytes(), error.to_string());
    let state: String = row.try_get(first).map_err(column)?;
    let version: i64 = row.try_get(first + 1).map_err(column)?;
    let created_at: i64 = row.try_get(first + 2).map_err(column)?;
    let updated_at: i64 = row.try_get(first + 3).map_err(column)?;
    entity_record(machine, id, state, [version, created_at, updated_at])
}

/// Checks and assembles an entity record from its columns (`version`,
/// `created_at`, `updated_at` in that order).
pub(crate) fn entity_record(
    machine: &str,
    id: &str,
    state: String,
    [version, created_at, updated_at]: [i64; 3],
) -> Result<EntityRecord> {
    let tree = format!("entities/{machine}");
    let unsigned = |value: i64, what: &str| {
        u64::try_from(value)
            .map_err(|_| Error::corrupt(&tree, id.as_bytes(), format!("negative {what} {value}")))
    };
    let record = EntityRecord {
        id: id.to_owned(),
        state,
        version: unsigned(version, "version")?,
        created_at: unsigned(created_at, "created_at")?,
        updated_at: unsigned(updated_at, "updated_at")?,
    };
    if record.version == 0 {
        return Err(Error::corrupt(
            tree,
            id.as_bytes(),
            "version 0 (versions start at 1)",
        ));
    }
    Ok(record)
}

/// Decodes a stored key record.
pub(crate) fn key_record(machine: &str, key: &[u8], record: &[u8]) -> Result<KeyRecord> {
    decode_at(&format!("keys/{machine}"), key, || {
        codec::decode_key_record(record)
    })
}

impl MachineStore for PgMachine {
    fn key_record(&self, key: &[u8]) -> Result<Option<KeyRecord>> {
        let row = self.shared.pool.run("reading an idempotency key", |conn| {
            let statement = conn.prepared(KEY)?;
            conn.client.query_opt(&statement, &[&self.machine, &key])
        })?;
        match row {
            None => Ok(None),
            Some(row) => {
                let record: Vec<u8> = row.try_get(0).map_err(|error| {
                    Error::corrupt(format!("keys/{}", self.machine), key, error.to_string())
                })?;
                key_record(&self.machine, key, &record).map(Some)
            }
        }
    }

    fn get(&self, id: &str) -> Result<Option<EntityRecord>> {
        let row = self.shared.pool.run("reading an entity", |conn| {
            let statement = conn.prepared(GET)?;
            conn.client
                .query_opt(&statement, &[&self.machine, &id.as_bytes()])
        })?;
        match row {
            None => Ok(None),
            Some(row) => entity_from_row(&self.machine, id, &row, 0).map(Some),
        }
    }

    fn history(&self, id: &str) -> Result<Vec<HistoryRecord>> {
        let rows = self.shared.pool.run("reading history", |conn| {
            let statement = conn.prepared(HISTORY)?;
            conn.client
                .query(&statement, &[&self.machine, &id.as_bytes()])
        })?;
        let tree = format!("history/{}", self.machine);
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let version: i64 = row
                .try_get(0)
                .map_err(|error| Error::corrupt(&tree, id.as_bytes(), error.to_string()))?;
            let key = codec::history_key(id, u64::try_from(version).unwrap_or(0));
            let change: Vec<u8> = row
                .try_get(1)
                .map_err(|error| Error::corrupt(&tree, &key, error.to_string()))?;
            entries.push(decode_at(&tree, &key, || {
                let version = u64::try_from(version)
                    .ok()
                    .filter(|version| *version >= 1)
                    .ok_or_else(|| format!("version {version} (versions start at 1)"))?;
                codec::decode_change(version, &change)
            })?);
        }
        Ok(entries)
    }

    fn in_state(&self, state: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let after = after.map(str::as_bytes);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.shared.pool.run("reading the state index", |conn| {
            let statement = conn.prepared(IN_STATE)?;
            conn.client
                .query(&statement, &[&self.machine, &state, &after, &limit])
        })?;
        let tree = format!("entities/{}", self.machine);
        rows.iter()
            .map(|row| {
                let id: Vec<u8> = row
                    .try_get(0)
                    .map_err(|error| Error::corrupt(&tree, b"", error.to_string()))?;
                String::from_utf8(id)
                    .map_err(|error| Error::corrupt(&tree, error.as_bytes(), "the id is not UTF-8"))
            })
            .collect()
    }

    fn count_in_state(&self, state: &str) -> Result<u64> {
        self.count(COUNT_IN_STATE, "counting the state index", Some(state))
    }

    fn key_count(&self) -> Result<u64> {
        self.count(KEY_COUNT, "counting idempotency keys", None)
    }

    fn timer(&self, stored_key: &[u8]) -> Result<Option<TimerRecord>> {
        timers::one(&self.shared, &self.machine, stored_key)
    }

    fn timers_of(&self, id: &str) -> Result<Vec<TimerRecord>> {
        timers::of_entity(&self.shared, &self.machine, id)
    }

    fn timers(&self, limit: usize) -> Result<Vec<TimerRecord>> {
        timers::of_machine(&self.shared, &self.machine, limit)
    }

    fn pre_reads_keys(&self) -> bool {
        // A round trip the writer makes anyway, in its batch's load.
        false
    }

    fn references(&self, states: &[String], events: &[String]) -> Result<Vec<Missing>> {
        self.shared.pool.run("counting what uses a name", |conn| {
            definitions::references(conn, &self.machine, states, events)
        })?
    }
}

impl PgMachine {
    fn count(&self, sql: &'static str, context: &str, state: Option<&str>) -> Result<u64> {
        let count: i64 = self.shared.pool.run(context, |conn| {
            let statement = conn.prepared(sql)?;
            let row = match state {
                Some(state) => conn
                    .client
                    .query_one(&statement, &[&self.machine, &state])?,
                None => conn.client.query_one(&statement, &[&self.machine])?,
            };
            row.try_get(0)
        })?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

/// Every stored definition, by machine name.
pub(crate) fn definitions(shared: &Shared) -> Result<Vec<MachineDef>> {
    let rows = shared.pool.run("reading machine definitions", |conn| {
        let statement = conn.prepared(DEFINITIONS)?;
        conn.client.query(&statement, &[])
    })?;
    rows.iter().map(decode_definition).collect()
}

/// The stored definition of one machine.
pub(crate) fn definition(shared: &Shared, machine: &str) -> Result<Option<MachineDef>> {
    let row = shared.pool.run("reading a machine definition", |conn| {
        let statement = conn.prepared(DEFINITION)?;
        conn.client.query_opt(&statement, &[&machine])
    })?;
    row.as_ref().map(decode_definition).transpose()
}

fn decode_definition(row: &Row) -> Result<MachineDef> {
    let machine: String = row
        .try_get(0)
        .map_err(|error| Error::corrupt("definitions", b"", error.to_string()))?;
    let text: String = row
        .try_get(1)
        .map_err(|error| Error::corrupt("definitions", machine.as_bytes(), error.to_string()))?;
    definitions::decode_definition(&machine, &text)
}
