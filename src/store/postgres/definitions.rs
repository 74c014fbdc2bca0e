//! Machine definitions on PostgreSQL: versions and their log, storing a new
//! version safely while other processes commit, migrating renamed states,
//! and counting what stored data uses a name.
//!
//! # Storing a version
//!
//! One transaction under the machine's definition lock, taken exclusively
//! (every batch takes it shared, see `batch.rs`), so no batch of any
//! process runs on the machine meanwhile:
//!
//! 1. read the stored version; if it is not the one the engine planned
//!    from, another process stored one since: store nothing and answer
//!    `false` (the engine plans again);
//! 2. if names were removed, count again what uses them (`references`):
//!    a batch may have used one between the engine's plan and this lock;
//!    any use left is `DefinitionMismatch`, as the plan would have said;
//! 3. move the current version to the log and store the new one.
//!
//! Once this commits, every batch (of every process) reads the new version
//! after its locks and adopts it before deciding.

use postgres::fallible_iterator::FallibleIterator;

use super::batch::db_int;
use super::locks;
use super::pool::Conn;
use super::reads::key_record;
use super::Shared;
use crate::definitions::{
    describe_changes, removed_names, state_renames, still_used, DefinitionVersion, References,
};
use crate::error::{Error, Missing, Result};
use crate::machine::MachineDef;
use crate::store::codec;

type PgResult<T> = std::result::Result<T, postgres::Error>;

const VERSION: &str = "SELECT version FROM definitions WHERE machine = $1";
const CURRENT: &str = "SELECT version, at, changes, definition FROM definitions WHERE machine = $1";
const LOG: &str = "SELECT version, at, changes, definition FROM definition_log \
     WHERE machine = $1 ORDER BY n";
const TO_LOG: &str = "\
INSERT INTO definition_log (machine, n, definition, version, at, changes)
SELECT d.machine, (SELECT count(*) FROM definition_log l WHERE l.machine = d.machine),
       d.definition, d.version, d.at, d.changes
FROM definitions d WHERE d.machine = $1";
const STORE: &str = "\
INSERT INTO definitions (machine, definition, version, at, changes) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (machine) DO UPDATE SET definition = EXCLUDED.definition,
    version = EXCLUDED.version, at = EXCLUDED.at, changes = EXCLUDED.changes, stored_at = now()";
const ALL: &str = "SELECT machine, definition FROM definitions ORDER BY machine COLLATE \"C\"";
const MIGRATE: &str = "\
WITH picked AS (
    SELECT id FROM entities WHERE machine = $1 AND state = $2 ORDER BY id LIMIT $4 FOR UPDATE
), moved AS (
    UPDATE entities e SET state = $3 FROM picked
    WHERE e.machine = $1 AND e.id = picked.id AND e.state = $2
    RETURNING 1
)
SELECT count(*) FROM moved";
const IN_STATES: &str = "SELECT state, count(*) FROM entities \
     WHERE machine = $1 AND state = ANY($2) GROUP BY state";
const HISTORY: &str = "SELECT id, version, change FROM history WHERE machine = $1";
const KEYS: &str = "SELECT key, record FROM keys WHERE machine = $1";

/// The version of the stored definition of `machine`.
pub(crate) fn version(shared: &Shared, machine: &str) -> Result<Option<u64>> {
    let row = shared.pool.run("reading a definition's version", |conn| {
        let statement = conn.prepared(VERSION)?;
        conn.client.query_opt(&statement, &[&machine])
    })?;
    match row {
        None => Ok(None),
        Some(row) => {
            let version: i64 = row.try_get(0).map_err(|error| corrupt(machine, error))?;
            Ok(Some(u64::try_from(version).unwrap_or(0)))
        }
    }
}

/// Every stored version of `machine`'s definition, oldest first.
pub(crate) fn log(shared: &Shared, machine: &str) -> Result<Vec<DefinitionVersion>> {
    let (logged, current) = shared.pool.run("reading a definition log", |conn| {
        let log = conn.prepared(LOG)?;
        let logged = conn.client.query(&log, &[&machine])?;
        let current = conn.prepared(CURRENT)?;
        let current = conn.client.query_opt(&current, &[&machine])?;
        Ok((logged, current))
    })?;
    let mut versions: Vec<DefinitionVersion> = Vec::with_capacity(logged.len() + 1);
    for row in logged.iter().chain(current.as_ref()) {
        let previous = versions.last().map(|version| &version.definition);
        let version = decode_version(machine, row, previous)?;
        versions.push(version);
    }
    Ok(versions)
}

/// A row of `version, at, changes, definition`. Versions stored before the
/// log kept changes get theirs computed from the previous one.
fn decode_version(
    machine: &str,
    row: &postgres::Row,
    previous: Option<&MachineDef>,
) -> Result<DefinitionVersion> {
    let version: Option<i64> = row.try_get(0).map_err(|error| corrupt(machine, error))?;
    let at: Option<i64> = row.try_get(1).map_err(|error| corrupt(machine, error))?;
    let changes: Option<String> = row.try_get(2).map_err(|error| corrupt(machine, error))?;
    let text: String = row.try_get(3).map_err(|error| corrupt(machine, error))?;
    let definition = decode_definition(machine, &text)?;
    let changes = match changes {
        Some(json) => serde_json::from_str(&json).map_err(|error| {
            Error::corrupt(
                "definitions",
                machine.as_bytes(),
                format!("changes are not valid JSON: {error}"),
            )
        })?,
        None => describe_changes(previous, &definition),
    };
    Ok(DefinitionVersion {
        version: version.and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
        at: at.and_then(|at| u64::try_from(at).ok()),
        changes,
        definition,
    })
}

/// A stored definition's JSON.
pub(crate) fn decode_definition(machine: &str, text: &str) -> Result<MachineDef> {
    serde_json::from_str(text).map_err(|error| {
        Error::corrupt(
            "definitions",
            machine.as_bytes(),
            format!("definition is not valid JSON: {error}"),
        )
    })
}

fn corrupt(machine: &str, error: postgres::Error) -> Error {
    Error::corrupt("definitions", machine.as_bytes(), error.to_string())
}

/// How storing a version ended (see the module docs).
pub(crate) enum Saved {
    Stored,
    /// Another process stored a version since the plan.
    Superseded,
    /// Stored data uses names the new version removes.
    Mismatch(Error),
}

/// Stores `version` inside an open transaction (see the module docs); the
/// caller commits on [`Saved::Stored`] and rolls back otherwise.
pub(crate) fn save(conn: &mut Conn, schema: &str, version: &DefinitionVersion) -> PgResult<Saved> {
    let def = &version.definition;
    let lock = locks::definition_key(schema, &def.name);
    conn.client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&lock])?;
    let current = conn.prepared(CURRENT)?;
    let stored = conn.client.query_opt(&current, &[&def.name])?;
    let stored_version: i64 = match &stored {
        Some(row) => row.try_get::<_, Option<i64>>(0)?.unwrap_or(0),
        None => 0,
    };
    if stored_version != db_int(version.version.saturating_sub(1)) {
        return Ok(Saved::Superseded);
    }
    if let Some(row) = &stored {
        let text: String = row.try_get(3)?;
        let Ok(stored_def) = decode_definition(&def.name, &text) else {
            // The engine's plan read it too and would have failed.
            return Ok(Saved::Superseded);
        };
        let (states, events) = removed_names(&stored_def, def);
        if !states.is_empty() || !events.is_empty() {
            let missing = match references(conn, &def.name, &states, &events)? {
                Ok(counts) => still_used(counts),
                Err(error) => return Ok(Saved::Mismatch(error)),
            };
            if !missing.is_empty() {
                return Ok(Saved::Mismatch(Error::DefinitionMismatch {
                    machine: def.name.clone(),
                    missing,
                }));
            }
        }
    }
    // Serializing plain strings, numbers and vectors cannot fail.
    let json = serde_json::to_string(def).unwrap_or_default();
    let changes = serde_json::to_string(&version.changes).unwrap_or_default();
    let to_log = conn.prepared(TO_LOG)?;
    conn.client.execute(&to_log, &[&def.name])?;
    let store = conn.prepared(STORE)?;
    conn.client.execute(
        &store,
        &[
            &def.name,
            &json,
            &db_int(version.version),
            &version.at.map(db_int),
            &changes,
        ],
    )?;
    Ok(Saved::Stored)
}

/// Moves up to `budget` entities of `machine` from state `from` to `to`.
pub(crate) fn migrate_state(
    conn: &mut Conn,
    machine: &str,
    from: &str,
    to: &str,
    budget: usize,
) -> PgResult<u64> {
    let budget = i64::try_from(budget).unwrap_or(i64::MAX);
    let statement = conn.prepared(MIGRATE)?;
    let moved: i64 = conn
        .client
        .query_one(&statement, &[&machine, &from, &to, &budget])?
        .try_get(0)?;
    Ok(u64::try_from(moved).unwrap_or(0))
}

/// Every stored definition's renames: (machine, former name, current name).
/// Definitions that do not decode are skipped (reads report them).
pub(crate) fn renames(conn: &mut Conn) -> PgResult<Vec<(String, String, String)>> {
    let statement = conn.prepared(ALL)?;
    let mut renames = Vec::new();
    for row in conn.client.query(&statement, &[])? {
        let machine: String = row.try_get(0)?;
        let text: String = row.try_get(1)?;
        if let Ok(def) = decode_definition(&machine, &text) {
            for (from, to) in state_renames(&def) {
                renames.push((machine.clone(), from, to));
            }
        }
    }
    Ok(renames)
}

/// What stored data of `machine` uses each of these names (entities by the
/// state index; history and key records by a scan). The outer error is the
/// connection's, the inner one a record that does not decode.
pub(crate) fn references(
    conn: &mut Conn,
    machine: &str,
    states: &[String],
    events: &[String],
) -> PgResult<Result<Vec<Missing>>> {
    let mut references = References::new(states, events);
    if references.is_empty() {
        return Ok(Ok(references.finish()));
    }
    let names: Vec<String> = references.states().map(str::to_owned).collect();
    let statement = conn.prepared(IN_STATES)?;
    for row in conn.client.query(&statement, &[&machine, &names])? {
        let state: String = row.try_get(0)?;
        let count: i64 = row.try_get(1)?;
        references.in_state(&state, u64::try_from(count).unwrap_or(0));
    }
    let tree = format!("history/{machine}");
    let statement = conn.prepared(HISTORY)?;
    let mut rows = conn.client.query_raw(&statement, [&machine])?;
    let mut failed = None;
    while let Some(row) = rows.next()? {
        let id: Vec<u8> = row.try_get(0)?;
        let version: i64 = row.try_get(1)?;
        let change: Vec<u8> = row.try_get(2)?;
        if failed.is_some() {
            continue; // read to the end: the connection must be left clean
        }
        let decoded = codec::decode_at(&tree, &id, || {
            let id = String::from_utf8(id.clone()).map_err(|_| "the id is not UTF-8".to_owned())?;
            let version = u64::try_from(version).map_err(|_| "negative version".to_owned())?;
            Ok((id, codec::decode_change(version, &change)?))
        });
        match decoded {
            Ok((id, entry)) => references.history_entry(&id, &entry),
            Err(error) => failed = Some(error),
        }
    }
    drop(rows);
    let statement = conn.prepared(KEYS)?;
    let mut rows = conn.client.query_raw(&statement, [&machine])?;
    while let Some(row) = rows.next()? {
        let key: Vec<u8> = row.try_get(0)?;
        let record: Vec<u8> = row.try_get(1)?;
        if failed.is_some() {
            continue;
        }
        match key_record(machine, &key, &record) {
            Ok(record) => references.key_record(&record.outcome),
            Err(error) => failed = Some(error),
        }
    }
    Ok(match failed {
        Some(error) => Err(error),
        None => Ok(references.finish()),
    })
}
