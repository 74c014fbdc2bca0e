//! Timers on PostgreSQL: one `timers` table for every machine, and claims
//! so that several engine processes rarely fire the same timer.
//!
//! A row holds the stored request (`store::codec`'s timer encoding), its due
//! time, and `claimable_at`: the due time until a process claims the timer
//! to fire it, then the end of that claim. Claiming is one statement:
//! `UPDATE ... SET claimable_at = now + CLAIM` over the rows picked with
//! `FOR UPDATE SKIP LOCKED` among those claimable at `now`, so two processes
//! claiming at once take disjoint sets, and a claimed timer is not handed
//! out again until its claim lapses. The claiming process fires it through
//! the write path, which removes the row in the atomic step of the request.
//! A process that dies (or fails to fire) leaves the row behind; another
//! process claims it once the claim lapses. Firing twice is safe anyway: a
//! timer's request is keyed and, for a timeout, version-checked, so a second
//! firing is a replay or a no-op ("once in effect", SPEC section 9).
//!
//! Times are the engine's clock (milliseconds since the epoch), like every
//! timestamp idemflow stores: processes sharing a database should share a
//! clock within much less than [`CLAIM_MS`].

use super::batch::db_int;
use super::pool::Conn;
use super::Shared;
use crate::error::{Error, Result};
use crate::store::codec::{self, decode_at};
use crate::timers::TimerRecord;

type PgResult<T> = std::result::Result<T, postgres::Error>;

/// How long a claim keeps other processes off a timer (ms): longer than a
/// firing round normally takes, short enough that a dead process's timers
/// fire soon after.
pub(crate) const CLAIM_MS: u64 = 10_000;

const CLAIM: &str = "\
WITH due AS (
    SELECT machine, key FROM timers WHERE claimable_at <= $1
    ORDER BY claimable_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
UPDATE timers t SET claimable_at = $3
  FROM due WHERE t.machine = due.machine AND t.key = due.key
RETURNING t.machine, t.key, t.timer";
const NEXT: &str = "SELECT min(claimable_at) FROM timers";
const PUT: &str = "\
INSERT INTO timers (machine, key, id, due_at, claimable_at, timer)
VALUES ($1, $2, $3, $4, $4, $5)
ON CONFLICT (machine, key) DO UPDATE SET id = EXCLUDED.id, due_at = EXCLUDED.due_at,
    claimable_at = EXCLUDED.claimable_at, timer = EXCLUDED.timer";
const REMOVE: &str = "DELETE FROM timers WHERE machine = $1 AND key = $2 RETURNING timer";
const ONE: &str = "SELECT timer FROM timers WHERE machine = $1 AND key = $2";
const OF_ENTITY: &str = "SELECT key, timer FROM timers WHERE machine = $1 AND id = $2 ORDER BY key";
const OF_MACHINE: &str =
    "SELECT key, timer FROM timers WHERE machine = $1 ORDER BY due_at, key LIMIT $2";

/// Decodes a stored timer of `machine` (key: its stored key).
fn decode(machine: &str, key: &[u8], value: &[u8]) -> Result<TimerRecord> {
    decode_at(&format!("timers/{machine}"), key, || {
        codec::decode_timer(value)
    })
}

/// A column of a timer row, or `Corrupt`.
fn column<T: for<'r> postgres::types::FromSql<'r>>(
    row: &postgres::Row,
    index: usize,
    machine: &str,
    key: &[u8],
) -> Result<T> {
    row.try_get(index)
        .map_err(|error| Error::corrupt(format!("timers/{machine}"), key, error.to_string()))
}

/// Claims up to `limit` timers due at `now` (see the module docs); in due order.
pub(crate) fn claim_due(
    shared: &Shared,
    now: u64,
    limit: usize,
) -> Result<Vec<(String, TimerRecord)>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (now, until) = (db_int(now), db_int(now.saturating_add(CLAIM_MS)));
    let rows = shared.pool.run("claiming due timers", |conn| {
        let statement = conn.prepared(CLAIM)?;
        conn.client.query(&statement, &[&now, &limit, &until])
    })?;
    let mut due = Vec::with_capacity(rows.len());
    for row in rows {
        let machine: String = column(&row, 0, "?", b"")?;
        let key: Vec<u8> = column(&row, 1, &machine, b"")?;
        let value: Vec<u8> = column(&row, 2, &machine, &key)?;
        match decode(&machine, &key, &value) {
            Ok(timer) => due.push((machine, timer)),
            // Reported, and left claimed: it will be reported again later,
            // without stopping the others.
            Err(error) => tracing::warn!(%error, "a stored timer cannot be decoded"),
        }
    }
    due.sort_by_key(|(_, timer)| timer.due_at);
    Ok(due)
}

/// When the earliest timer may next be claimed.
pub(crate) fn next_claimable(shared: &Shared) -> Result<Option<u64>> {
    let next: Option<i64> = shared.pool.run("reading timers", |conn| {
        let statement = conn.prepared(NEXT)?;
        conn.client.query_one(&statement, &[])?.try_get(0)
    })?;
    Ok(next.map(|at| u64::try_from(at).unwrap_or(0)))
}

/// Stores a timer (replacing one with the same key; a claim on it ends).
pub(crate) fn put(conn: &mut Conn, machine: &str, timer: &TimerRecord) -> PgResult<()> {
    let statement = conn.prepared(PUT)?;
    let key = timer.stored_key();
    conn.client.execute(
        &statement,
        &[
            &machine,
            &key,
            &timer.id.as_bytes(),
            &db_int(timer.due_at),
            &codec::encode_timer(timer),
        ],
    )?;
    Ok(())
}

/// Removes a timer; returns its stored form if it was pending.
pub(crate) fn remove(conn: &mut Conn, machine: &str, key: &[u8]) -> PgResult<Option<Vec<u8>>> {
    let statement = conn.prepared(REMOVE)?;
    conn.client
        .query_opt(&statement, &[&machine, &key])?
        .map(|row| row.try_get(0))
        .transpose()
}

/// Decodes what [`remove`] returned.
pub(crate) fn decode_removed(
    machine: &str,
    key: &[u8],
    value: Option<Vec<u8>>,
) -> Result<Option<TimerRecord>> {
    value.map(|value| decode(machine, key, &value)).transpose()
}

/// The pending timer of `machine` with this stored key.
pub(crate) fn one(shared: &Shared, machine: &str, key: &[u8]) -> Result<Option<TimerRecord>> {
    let row = shared.pool.run("reading timers", |conn| {
        let statement = conn.prepared(ONE)?;
        conn.client.query_opt(&statement, &[&machine, &key])
    })?;
    match row {
        None => Ok(None),
        Some(row) => {
            let value: Vec<u8> = column(&row, 0, machine, key)?;
            decode(machine, key, &value).map(Some)
        }
    }
}

/// The pending timers of entity `id`, in key order.
pub(crate) fn of_entity(shared: &Shared, machine: &str, id: &str) -> Result<Vec<TimerRecord>> {
    let rows = shared.pool.run("reading timers", |conn| {
        let statement = conn.prepared(OF_ENTITY)?;
        conn.client.query(&statement, &[&machine, &id.as_bytes()])
    })?;
    decode_rows(machine, &rows)
}

/// Up to `limit` pending timers of `machine`, in due order.
pub(crate) fn of_machine(shared: &Shared, machine: &str, limit: usize) -> Result<Vec<TimerRecord>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = shared.pool.run("reading timers", |conn| {
        let statement = conn.prepared(OF_MACHINE)?;
        conn.client.query(&statement, &[&machine, &limit])
    })?;
    decode_rows(machine, &rows)
}

fn decode_rows(machine: &str, rows: &[postgres::Row]) -> Result<Vec<TimerRecord>> {
    rows.iter()
        .map(|row| {
            let key: Vec<u8> = column(row, 0, machine, b"")?;
            let value: Vec<u8> = column(row, 1, machine, &key)?;
            decode(machine, &key, &value)
        })
        .collect()
}
