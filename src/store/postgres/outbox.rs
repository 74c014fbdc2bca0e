//! The outbox on PostgreSQL: what is safe to hand out, and in which order.
//!
//! # Positions and the horizon
//!
//! A position is drawn from the sequence `outbox_position` when a row is
//! inserted, which is not commit order: a transaction may draw 10, another
//! draw 11 and commit first. A reader that handed out 11 and moved its
//! cursor past it would never see 10. So a writer, before it draws any
//! position, takes a *marker*: a shared two-key advisory lock
//! `(namespace, L mod 2^32)` where `L` is the sequence's last value at that
//! moment, held until its transaction ends (after its commit is visible). A
//! reader computes the *horizon* in this order: first `S`, the sequence's
//! last value; then the smallest `L` among the markers held now (read from
//! `pg_locks`). Every row at or below `min(S, L...)` is committed (or rolled
//! back) for good: a transaction that drew such a position before `S` was
//! read either had committed, or still held its marker, whose `L` is below
//! its positions. Readers hand out rows up to the horizon only, in position
//! order, so no row can later appear behind a cursor. An entity's events are
//! in version order: a writer draws a position only after it holds the
//! entity's lock, so the later version gets the larger position.
//!
//! # Durable
//!
//! Under `Immediate` (`synchronous_commit = on`) PostgreSQL flushes a
//! commit's WAL before it makes the commit visible, so every row a reader
//! can see is on stable storage. Under `Buffered` (`off`) a commit is
//! visible before its WAL is flushed (the WAL writer flushes within about
//! three `wal_writer_delay`s, 600 ms by default). A Buffered engine's
//! outbox therefore forces a flush before it hands out rows beyond what it
//! knows is durable: one small transaction with `synchronous_commit = on`,
//! whose commit waits for the WAL up to its own commit record, and so past
//! every commit visible before it. One flush covers every row up to the
//! horizon it was taken for, so consumers pay one flush per read that finds
//! new rows, not one per event. An `Immediate` engine does not flush: it
//! assumes the database's other writers are `Immediate` too.

use std::sync::atomic::{AtomicI64, Ordering};

use super::pool::Conn;
use crate::store::codec;
use crate::store::PendingEntry;

type PgResult<T> = std::result::Result<T, postgres::Error>;

const SEQUENCE_VALUE: &str = "SELECT last_value, is_called FROM outbox_position";
const MARKERS: &str = "SELECT objid::bigint FROM pg_locks \
     WHERE locktype = 'advisory' AND objsubid = 2 AND classid::bigint = $1 \
       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
const ROWS: &str = "SELECT position, machine, id, version, change FROM outbox \
     WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3";
const FLUSH: &str = "UPDATE sync_slots SET syncs = syncs + 1 WHERE slot = $1";

/// The SQL a writer runs (inside its transaction, before drawing positions)
/// to take its marker; `namespace` is [`super::locks::marker_namespace`].
pub(crate) fn marker_sql(namespace: i32) -> String {
    format!(
        "SELECT pg_advisory_xact_lock_shared({namespace}, \
         ((CASE WHEN is_called THEN last_value ELSE last_value - 1 END) & 4294967295)::bit(32)::integer) \
         FROM outbox_position"
    )
}

/// The highest position below which every row is settled (see the module docs).
pub(crate) fn horizon(conn: &mut Conn, namespace: i32) -> PgResult<i64> {
    let statement = conn.prepared(SEQUENCE_VALUE)?;
    let row = conn.client.query_one(&statement, &[])?;
    let last: i64 = row.try_get(0)?;
    let called: bool = row.try_get(1)?;
    let drawn = if called { last } else { last - 1 };
    let statement = conn.prepared(MARKERS)?;
    let namespace = i64::from(namespace as u32);
    let mut horizon = drawn;
    for row in conn.client.query(&statement, &[&namespace])? {
        let low: i64 = row.try_get(0)?;
        horizon = horizon.min(unwrap_marker(drawn, low));
    }
    Ok(horizon)
}

/// The position `L` whose low 32 bits are `low`, at most `drawn` and within
/// 2^32 of it (a marker is never that far behind the sequence).
fn unwrap_marker(drawn: i64, low: i64) -> i64 {
    let behind = (drawn.wrapping_sub(low)) & 0xffff_ffff;
    drawn - behind
}

/// Up to `limit` entries after `after` and at most at `horizon`.
pub(crate) fn rows_after(
    conn: &mut Conn,
    after: i64,
    horizon: i64,
    limit: usize,
) -> PgResult<Vec<PendingEntry>> {
    let statement = conn.prepared(ROWS)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = conn.client.query(&statement, &[&after, &horizon, &limit])?;
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let position: i64 = row.try_get(0)?;
        let machine: String = row.try_get(1)?;
        let id: Vec<u8> = row.try_get(2)?;
        let version: i64 = row.try_get(3)?;
        let change: Vec<u8> = row.try_get(4)?;
        entries.push(decode(position, machine, id, version, &change));
    }
    Ok(entries)
}

fn decode(
    position: i64,
    machine: String,
    id: Vec<u8>,
    version: i64,
    change: &[u8],
) -> PendingEntry {
    let position = u64::try_from(position).unwrap_or(0);
    let decoded = (|| {
        let id = String::from_utf8(id.clone()).map_err(|_| "the id is not UTF-8".to_owned())?;
        let version = u64::try_from(version)
            .ok()
            .filter(|version| *version >= 1)
            .ok_or_else(|| format!("version {version} (versions start at 1)"))?;
        let change = codec::decode_change(version, change)?;
        Ok::<_, String>(codec::outbox_event(position, machine.clone(), id, change))
    })();
    match decoded {
        Ok(event) => PendingEntry::Event(event),
        Err(reason) => {
            let mut key = format!("{position}/{machine}/").into_bytes();
            key.extend_from_slice(&id);
            PendingEntry::Undecodable {
                position,
                error: crate::error::Error::corrupt("outbox", &key, reason),
            }
        }
    }
}

/// Under `Buffered`: makes every commit visible so far durable, once per
/// horizon (see the module docs). `durable_through` is the highest horizon
/// known durable.
pub(crate) fn flush_through(
    conn: &mut Conn,
    horizon: i64,
    durable_through: &AtomicI64,
    slot: i32,
) -> PgResult<()> {
    if durable_through.load(Ordering::SeqCst) >= horizon {
        return Ok(());
    }
    // Reader connections run with synchronous_commit on: this commit waits
    // for the WAL flush up to itself.
    let statement = conn.prepared(FLUSH)?;
    conn.client.execute(&statement, &[&slot])?;
    durable_through.fetch_max(horizon, Ordering::SeqCst);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::unwrap_marker;

    #[test]
    fn markers_unwrap_to_the_position_they_were_taken_at() {
        assert_eq!(unwrap_marker(0, 0), 0);
        assert_eq!(unwrap_marker(100, 90), 90);
        assert_eq!(unwrap_marker(100, 100), 100);
        let big = (7_i64 << 32) + 5;
        assert_eq!(unwrap_marker(big, 5), big);
        assert_eq!(unwrap_marker(big, 0xffff_fff0), (7_i64 << 32) - 16);
    }
}
