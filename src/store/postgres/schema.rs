//! The tables, created and upgraded on connect.
//!
//! Migrations are numbered; `schema_version` records each one applied. On
//! connect, a process takes a transaction-scoped advisory lock of the schema,
//! creates the schema if needed, applies in one transaction every migration
//! newer than the recorded version, and commits. Processes connecting at once
//! queue on the lock, and the later ones find nothing left to do. A database
//! whose schema is newer than this build knows is refused with a clear error
//! (an older build must not write to tables it does not understand).
//!
//! The layout (described in `docs/storage-format.md`, section "PostgreSQL"):
//! the same records as on sled, with ids and idempotency keys as `bytea` (the
//! exact bytes, so ordering is byte order as on sled and no text encoding or
//! NUL byte can get in the way), and history and outbox changes in the
//! versioned binary encoding of `store::codec` (one decoder and one
//! `Corrupt` report for both backends).
//!
//! Migration 2 adds timers (a `timers` table indexed by due time and by
//! when a timer may next be claimed) and definition versions (`version`,
//! `at` and `changes` on `definitions` and `definition_log`; definitions
//! stored before count from their log, as on sled).

use super::locks;
use super::pool::Conn;
use crate::error::{Error, Result};

/// The newest schema version this build knows.
pub(crate) const SCHEMA_VERSION: i32 = 2;

/// Migration 1: the tables of the `Store` contract as of format version 1.
const V1: &str = r#"
CREATE TABLE entities (
    machine    text   NOT NULL,
    id         bytea  NOT NULL,
    state      text   NOT NULL,
    version    bigint NOT NULL CHECK (version >= 1),
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (machine, id)
);
-- The state index: in_state and count_by_state read this index only.
CREATE INDEX entities_by_state ON entities (machine, state, id);

CREATE TABLE history (
    machine text   NOT NULL,
    id      bytea  NOT NULL,
    version bigint NOT NULL,
    change  bytea  NOT NULL,
    PRIMARY KEY (machine, id, version)
);

CREATE TABLE keys (
    machine    text   NOT NULL,
    key        bytea  NOT NULL,
    expires_at bigint NOT NULL,
    record     bytea  NOT NULL,
    PRIMARY KEY (machine, key)
);
CREATE INDEX keys_by_expiry ON keys (expires_at);

-- CACHE 1 (the default) matters: the outbox horizon reads the sequence's
-- last value and must see every position a session has drawn.
CREATE SEQUENCE outbox_position AS bigint CACHE 1;
CREATE TABLE outbox (
    machine  text   NOT NULL,
    id       bytea  NOT NULL,
    version  bigint NOT NULL,
    position bigint NOT NULL DEFAULT nextval('outbox_position') UNIQUE,
    change   bytea  NOT NULL,
    PRIMARY KEY (machine, id, version)
);
ALTER SEQUENCE outbox_position OWNED BY outbox.position;

CREATE TABLE outbox_quarantine (
    machine        text        NOT NULL,
    id             bytea       NOT NULL,
    version        bigint      NOT NULL,
    position       bigint      PRIMARY KEY,
    change         bytea       NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE definitions (
    machine    text        PRIMARY KEY,
    definition text        NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE definition_log (
    machine     text        NOT NULL,
    n           bigint      NOT NULL,
    definition  text        NOT NULL,
    replaced_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (machine, n)
);

-- Rows a Buffered sync updates (with synchronous_commit on) to wait for the
-- WAL flush; several slots so processes rarely wait on one another's row.
CREATE TABLE sync_slots (
    slot  integer PRIMARY KEY,
    syncs bigint  NOT NULL DEFAULT 0
);
INSERT INTO sync_slots (slot) SELECT generate_series(0, 63);
"#;

/// Migration 2: timers and definition versions.
const V2: &str = r#"
-- A pending timer: `timer` is the stored request (store::codec's timer
-- encoding). `claimable_at` is `due_at` until a process claims the timer to
-- fire it, then the end of that claim (see timers.rs).
CREATE TABLE timers (
    machine      text   NOT NULL,
    key          bytea  NOT NULL,
    id           bytea  NOT NULL,
    due_at       bigint NOT NULL,
    claimable_at bigint NOT NULL,
    timer        bytea  NOT NULL,
    PRIMARY KEY (machine, key)
);
CREATE INDEX timers_by_claim ON timers (claimable_at);
CREATE INDEX timers_by_due ON timers (machine, due_at, key);
CREATE INDEX timers_by_entity ON timers (machine, id, key);

-- Definition versions: a definition stored before versions counts from its log.
ALTER TABLE definitions ADD COLUMN version bigint NOT NULL DEFAULT 0;
ALTER TABLE definitions ADD COLUMN at bigint;
ALTER TABLE definitions ADD COLUMN changes text;
UPDATE definitions d
   SET version = 1 + (SELECT count(*) FROM definition_log l WHERE l.machine = d.machine);
ALTER TABLE definition_log ADD COLUMN version bigint;
ALTER TABLE definition_log ADD COLUMN at bigint;
ALTER TABLE definition_log ADD COLUMN changes text;
UPDATE definition_log SET version = n + 1;
"#;

/// Every migration, in order: (version, what it does, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "entities, history, keys, outbox, definitions", V1),
    (2, "timers, definition versions", V2),
];

/// Creates or upgrades the schema; safe when several processes do it at once.
pub(crate) fn migrate(conn: &mut Conn, schema: &str) -> Result<()> {
    let quoted = format!("\"{schema}\"");
    let client = &mut conn.client;
    let failed = |error: postgres::Error| {
        super::pool::storage_error("creating or upgrading the idemflow schema", &error)
    };
    client.batch_execute("BEGIN").map_err(failed)?;
    let result = (|| -> Result<()> {
        client
            .execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&locks::migration_key(schema)],
            )
            .map_err(failed)?;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {quoted}; \
                 CREATE TABLE IF NOT EXISTS {quoted}.schema_version ( \
                     version     integer     PRIMARY KEY, \
                     description text        NOT NULL, \
                     applied_at  timestamptz NOT NULL DEFAULT now())"
            ))
            .map_err(failed)?;
        let current: i32 = client
            .query_one(
                &format!("SELECT coalesce(max(version), 0) FROM {quoted}.schema_version"),
                &[],
            )
            .map_err(failed)?
            .try_get(0)
            .map_err(failed)?;
        if current > SCHEMA_VERSION {
            return Err(Error::storage(
                "opening the PostgreSQL database",
                std::io::Error::other(format!(
                    "schema {schema:?} is at version {current}, newer than this build of idemflow \
                     knows (version {SCHEMA_VERSION}); upgrade idemflow"
                )),
            ));
        }
        for (version, description, sql) in MIGRATIONS {
            if *version <= current {
                continue;
            }
            client
                .batch_execute(&format!("SET LOCAL search_path TO {quoted}; {sql}"))
                .map_err(failed)?;
            client
                .execute(
                    &format!("INSERT INTO {quoted}.schema_version (version, description) VALUES ($1, $2)"),
                    &[version, description],
                )
                .map_err(failed)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => client.batch_execute("COMMIT").map_err(failed),
        Err(error) => {
            let _ = client.batch_execute("ROLLBACK");
            Err(error)
        }
    }
}
