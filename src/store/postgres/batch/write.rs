//! The second round trip of a batch: the write and `COMMIT`, sent together
//! as one simple query.
//!
//! The write is one statement (data-modifying CTEs: entities, keys,
//! history, outbox, timers), prepared when the writer's connection opened
//! as `idemflow_write`. Its updates re-check the version or expiry the load
//! read, its inserts skip rows that exist, and it compares the rows it
//! wrote with the rows it was given: when they differ (a row changed
//! although the locks say it cannot) the statement itself fails with
//! [`CONFLICT`] in its message, the `COMMIT` after it in the same string is
//! never run, and the attempt is rolled back and retried. Nothing is
//! committed that the counts would have refused.

use super::literal;
use super::{db_int, Entities, Keys, Loaded, TimerWrites};
use crate::store::codec;

/// What the write's error message contains when rows changed under the
/// batch's locks.
pub(crate) const CONFLICT: &str = "idemflow: rows changed under the batch's locks";

/// The write, prepared on the writer's connection as `idemflow_write`.
/// `$37..$40` are the rows the four checked parts must write; when one
/// differs, the final `SELECT` casts a message that names the counts to an
/// integer, which fails (`22P02`) at run time: the branch depends on the
/// CTEs' rows, so the planner cannot evaluate it ahead.
pub(crate) const PREPARE_WRITE: &str = "\
PREPARE idemflow_write(text[], bytea[], text[], int8[], int8[], int8[],
    text[], bytea[], text[], int8[], int8[], int8[],
    text[], bytea[], int8[], bytea[],
    text[], bytea[], int8[], bytea[], int8[],
    text[], bytea[], int8[], bytea[],
    text[], bytea[],
    text[], bytea[], bytea[], int8[], bytea[],
    int8, int8, int8, int8) AS
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
    FROM unnest($22::text[], $23::bytea[], $24::int8[], $25::bytea[])
        WITH ORDINALITY AS o(machine, id, version, change, n)
    ORDER BY o.n
    RETURNING 1
), gone_timers AS (
    DELETE FROM timers t USING unnest($26::text[], $27::bytea[]) AS g(machine, key)
    WHERE t.machine = g.machine AND t.key = g.key
), armed_timers AS (
    INSERT INTO timers (machine, key, id, due_at, claimable_at, timer)
    SELECT a.machine, a.key, a.id, a.due_at, a.due_at, a.timer
    FROM unnest($28::text[], $29::bytea[], $30::bytea[], $31::int8[], $32::bytea[])
        AS a(machine, key, id, due_at, timer)
    ON CONFLICT (machine, key) DO UPDATE SET id = EXCLUDED.id, due_at = EXCLUDED.due_at,
        claimable_at = EXCLUDED.claimable_at, timer = EXCLUDED.timer
), written AS (
    SELECT (SELECT count(*) FROM new_entities) AS a, (SELECT count(*) FROM moved_entities) AS b,
           (SELECT count(*) FROM new_keys) AS c, (SELECT count(*) FROM renewed_keys) AS d
)
SELECT CASE WHEN a = $33 AND b = $34 AND c = $35 AND d = $36 THEN 0
    ELSE ('idemflow: rows changed under the batch''s locks (written ' || a || ' ' || b || ' '
          || c || ' ' || d || ', expected ' || $33 || ' ' || $34 || ' ' || $35 || ' ' || $36
          || ')')::int END
FROM written";

/// The SQL that ends the batch's transaction: `COMMIT`, after the write
/// when the batch wrote anything.
pub(crate) fn commit_sql(
    entities: &Entities<'_>,
    keys: &Keys<'_>,
    history: &[(&str, &str, i64, Vec<u8>)],
    timers: &TimerWrites<'_>,
) -> String {
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
        && timers.is_empty()
    {
        return "COMMIT".to_owned();
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
    let h_machine: Vec<&str> = history.iter().map(|row| row.0).collect();
    let h_id: Vec<&[u8]> = history.iter().map(|row| row.1.as_bytes()).collect();
    let h_version: Vec<i64> = history.iter().map(|row| row.2).collect();
    let h_change: Vec<&[u8]> = history.iter().map(|row| row.3.as_slice()).collect();
    let bytes: usize = history.iter().map(|row| row.3.len()).sum();
    let mut sql = String::with_capacity(1024 + 2 * bytes + 256 * history.len());
    sql.push_str("EXECUTE idemflow_write(");
    let args: [&dyn Fn(&mut String); 36] = [
        &|out| literal::texts(out, &new.machine),
        &|out| literal::byteas(out, &new.id),
        &|out| literal::texts(out, &new.state),
        &|out| literal::ints(out, &new.version),
        &|out| literal::ints(out, &new.created),
        &|out| literal::ints(out, &new.updated),
        &|out| literal::texts(out, &moved.machine),
        &|out| literal::byteas(out, &moved.id),
        &|out| literal::texts(out, &moved.state),
        &|out| literal::ints(out, &moved.version),
        &|out| literal::ints(out, &moved.updated),
        &|out| literal::ints(out, &moved.read_version),
        &|out| literal::texts(out, &new_keys.machine),
        &|out| literal::byteas(out, &new_keys.key),
        &|out| literal::ints(out, &new_keys.expires),
        &|out| literal::byteas(out, &new_keys.record),
        &|out| literal::texts(out, &renewed.machine),
        &|out| literal::byteas(out, &renewed.key),
        &|out| literal::ints(out, &renewed.expires),
        &|out| literal::byteas(out, &renewed.record),
        &|out| literal::ints(out, &renewed.read_expires),
        // History; the outbox holds the same changes, in the batch's order.
        &|out| literal::texts(out, &h_machine),
        &|out| literal::byteas(out, &h_id),
        &|out| literal::ints(out, &h_version),
        &|out| literal::byteas(out, &h_change),
        &|out| literal::texts(out, &gone.0),
        &|out| literal::byteas(out, &gone.1),
        &|out| literal::texts(out, &armed.0),
        &|out| literal::byteas(out, &armed.1),
        &|out| literal::byteas(out, &armed.2),
        &|out| literal::ints(out, &armed.3),
        &|out| literal::byteas(out, &armed.4),
        &|out| count(out, new.machine.len()),
        &|out| count(out, moved.machine.len()),
        &|out| count(out, new_keys.machine.len()),
        &|out| count(out, renewed.machine.len()),
    ];
    for (n, arg) in args.iter().enumerate() {
        if n > 0 {
            sql.push(',');
        }
        arg(&mut sql);
    }
    sql.push_str("); COMMIT");
    sql
}

fn count(out: &mut String, n: usize) {
    out.push_str(&n.to_string());
}
