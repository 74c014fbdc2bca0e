//! The write side: one connection, owned by whichever caller leads the
//! engine's commit pipeline (one batch at a time per process).

use std::sync::Arc;

use postgres::error::SqlState;

use super::batch::{self, db_int};
use super::blocking;
use super::definitions::{self, Saved};
use super::listen::Announcer;
use super::locks;
use super::pool::{describe, storage_error, Conn};
use super::retry::{classify, connection_lost, Backoff, Retry};
use super::{timers, Shared};
use crate::decide::Decision;
use crate::definitions::DefinitionVersion;
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::store::{FileSync, PurgeRound, StoreRequest, StoreWriter};
use crate::timers::TimerRecord;
use crate::write::jobs::writes;

type PgResult<T> = std::result::Result<T, postgres::Error>;

/// The one writer of an engine process.
pub(crate) struct PgWriter {
    shared: Arc<Shared>,
    conn: Option<Conn>,
    /// Under `Buffered`: whether commits on this connection await a sync.
    unsynced: bool,
    /// A connection with commits awaiting a sync was lost: the next sync
    /// cannot vouch for them and says so.
    lost_unsynced: bool,
    /// The `sync_slots` row this writer updates to wait for the WAL.
    sync_slot: i32,
    /// Sends the `NOTIFY` after commits that wrote outbox rows.
    announcer: Option<Announcer>,
    /// When the server that took this writer's unsynced commits started
    /// (`pg_postmaster_start_time()`), to tell a restart from a lost
    /// connection.
    server_started: Option<String>,
}

impl Drop for PgWriter {
    /// Closes the connection where closing may block (see
    /// [`blocking::drop_off_runtime`]): the last engine handle may be
    /// dropped in async code.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            blocking::drop_off_runtime(conn);
        }
    }
}

/// How one attempt of a batch ended.
enum Attempt {
    Done(Vec<Result<Decision>>),
    Retry(String),
    Fail(Error),
}

impl PgWriter {
    pub(super) fn new(shared: Arc<Shared>, mut conn: Conn) -> Self {
        let server_started = conn
            .client
            .query_one("SELECT pg_postmaster_start_time()::text", &[])
            .ok()
            .and_then(|row| row.try_get(0).ok());
        let sync_slot = (std::process::id() % 64) as i32;
        let announcer = Announcer::start(shared.pool.options().clone(), shared.channel.clone())
            .map_err(|error| tracing::warn!(%error, "could not start the outbox announcer thread"))
            .ok();
        PgWriter {
            shared,
            conn: Some(conn),
            unsynced: false,
            lost_unsynced: false,
            sync_slot,
            announcer,
            server_started,
        }
    }

    /// Notes a write outside a batch (under Buffered it awaits a sync).
    fn note_write(&mut self) {
        if !self.synchronous() {
            self.unsynced = true;
        }
    }

    fn synchronous(&self) -> bool {
        self.shared.durability == Durability::Immediate
    }

    /// The connection, reconnecting if it was lost.
    fn conn(&mut self) -> PgResult<&mut Conn> {
        if self
            .conn
            .as_ref()
            .is_some_and(|conn| conn.client.is_closed())
        {
            self.drop_conn();
        }
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let mut conn = Conn::open_writer(self.shared.pool.options(), self.synchronous())?;
                if !self.synchronous() && !self.unsynced {
                    self.server_started = Some(
                        conn.client
                            .query_one("SELECT pg_postmaster_start_time()::text", &[])?
                            .try_get(0)?,
                    );
                }
                conn
            }
        };
        Ok(self.conn.insert(conn))
    }

    fn drop_conn(&mut self) {
        if self.conn.take().is_some() && self.unsynced {
            self.lost_unsynced = true;
            self.unsynced = false;
        }
    }

    /// Rolls back after a failed statement; drops the connection if that fails.
    fn roll_back(&mut self, error: Option<&postgres::Error>) {
        if error.is_some_and(connection_lost) {
            self.drop_conn();
            return;
        }
        let failed = match self.conn.as_mut() {
            Some(conn) => conn.client.batch_execute("ROLLBACK").is_err(),
            None => false,
        };
        if failed {
            self.drop_conn();
        }
    }

    fn attempt(
        &mut self,
        requests: &[StoreRequest<'_>],
        definition_keys: &[i64],
        lock_keys: &[i64],
    ) -> Attempt {
        let namespace = self.shared.namespace;
        let conn = match self.conn() {
            Ok(conn) => conn,
            Err(error) => return Attempt::Retry(describe(&error)),
        };
        let decided = match batch::run(conn, namespace, definition_keys, lock_keys, requests) {
            Ok(decided) => decided,
            Err(error) => {
                self.roll_back(Some(&error));
                return retry_or_fail(&error);
            }
        };
        let wrote = decided.wrote_timers
            || decided
                .results
                .iter()
                .any(|result| matches!(result, Ok(decision) if writes(decision)));
        // The write and COMMIT, in one round trip.
        match conn.client.batch_execute(&decided.commit) {
            Ok(()) => {}
            Err(error) if connection_lost(&error) => {
                // COMMIT was sent; whether it arrived is unknown.
                self.drop_conn();
                let reason = format!(
                    "the connection to PostgreSQL was lost during COMMIT ({})",
                    describe(&error)
                );
                return Attempt::Done(commit_unknown(requests, decided.results, &reason));
            }
            Err(error) => {
                // The server answered with an error: the write failed (and
                // the COMMIT after it never ran) or the COMMIT did; either
                // way nothing was committed. ROLLBACK ends the transaction
                // if it is still open.
                self.roll_back(Some(&error));
                if let Some(reason) = conflict(&error) {
                    return Attempt::Retry(reason);
                }
                return retry_or_fail(&error);
            }
        }
        if wrote && !self.synchronous() {
            self.unsynced = true;
        }
        if decided.events > 0 {
            if let Some(announcer) = &self.announcer {
                announcer.announce();
            }
        }
        Attempt::Done(decided.results)
    }

    /// Runs an idempotent write (in its own transaction when it needs one),
    /// retrying on a lost connection.
    fn with_retry<T>(
        &mut self,
        context: &str,
        mut work: impl FnMut(&mut Conn) -> PgResult<T>,
    ) -> Result<T> {
        let mut backoff = Backoff::new();
        loop {
            let result = self.conn().and_then(&mut work);
            match result {
                Ok(value) => return Ok(value),
                Err(error) => {
                    self.roll_back(Some(&error));
                    if classify(&error) == Retry::No || !backoff.wait() {
                        return Err(storage_error(context, &error));
                    }
                }
            }
        }
    }
}

/// The reason, when the write failed because rows changed under the
/// batch's locks (see `batch/write.rs`): the attempt is retried.
fn conflict(error: &postgres::Error) -> Option<String> {
    let db = error.as_db_error()?;
    (*db.code() == SqlState::INVALID_TEXT_REPRESENTATION && db.message().contains(batch::CONFLICT))
        .then(|| describe(error))
}

fn retry_or_fail(error: &postgres::Error) -> Attempt {
    match classify(error) {
        Retry::Again => Attempt::Retry(describe(error)),
        Retry::No => Attempt::Fail(storage_error("committing requests", error)),
    }
}

/// The batch's answers when its COMMIT's outcome is unknown: the requests
/// that wrote get `CommitUnknown`; the others wrote nothing, so their
/// answers stand.
fn commit_unknown(
    requests: &[StoreRequest<'_>],
    results: Vec<Result<Decision>>,
    reason: &str,
) -> Vec<Result<Decision>> {
    requests
        .iter()
        .zip(results)
        .map(|(request, result)| match result {
            Ok(decision) if writes(&decision) => Err(Error::CommitUnknown {
                machine: request.machine.to_owned(),
                id: request.id.to_owned(),
                reason: reason.to_owned(),
            }),
            other => other,
        })
        .collect()
}

const OUTBOX_REMOVE: &str = "DELETE FROM outbox WHERE position = ANY($1)";
const OUTBOX_QUARANTINE: &str = "\
WITH moved AS (
    DELETE FROM outbox WHERE position = $1 RETURNING machine, id, version, position, change
), kept AS (
    INSERT INTO outbox_quarantine (machine, id, version, position, change)
    SELECT * FROM moved ON CONFLICT (position) DO NOTHING
)
SELECT count(*) FROM moved";
const PURGE: &str = "\
WITH gone AS (
    DELETE FROM keys WHERE (machine, key) IN (
        SELECT machine, key FROM keys WHERE expires_at <= $1
        ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) FROM gone";
const SYNC: &str = "UPDATE sync_slots SET syncs = syncs + 1 WHERE slot = $1 \
     RETURNING pg_postmaster_start_time()::text";

impl StoreWriter for PgWriter {
    fn execute(&mut self, requests: &[StoreRequest<'_>]) -> Result<Vec<Result<Decision>>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        // Everything that identifies the attempt is fixed here, outside the loop.
        let definition_keys = batch::definition_lock_keys(&self.shared.schema, requests);
        let lock_keys = batch::lock_keys(&self.shared.schema, requests);
        let mut backoff = Backoff::new();
        loop {
            match self.attempt(requests, &definition_keys, &lock_keys) {
                Attempt::Done(results) => return Ok(results),
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry(reason) => {
                    if !backoff.wait() {
                        return Err(Error::storage(
                            "committing requests",
                            std::io::Error::other(format!(
                                "gave up after {} attempts: {reason}",
                                backoff.attempts
                            )),
                        ));
                    }
                    tracing::debug!(%reason, attempt = backoff.attempts, "retrying a batch");
                }
            }
        }
    }

    fn save_definition(&mut self, version: &DefinitionVersion) -> Result<bool> {
        let schema = self.shared.schema.clone();
        let saved = self.with_retry("storing a machine definition", |conn| {
            conn.client.batch_execute("BEGIN")?;
            let saved = definitions::save(conn, &schema, version)?;
            match saved {
                Saved::Stored => conn.client.batch_execute("COMMIT")?,
                Saved::Superseded | Saved::Mismatch(_) => conn.client.batch_execute("ROLLBACK")?,
            }
            Ok(saved)
        })?;
        match saved {
            Saved::Stored => Ok(true),
            Saved::Superseded => Ok(false),
            Saved::Mismatch(error) => Err(error),
        }
    }

    fn migrate_state(&mut self, machine: &str, from: &str, to: &str, budget: usize) -> Result<u64> {
        self.with_retry("migrating a renamed state", |conn| {
            definitions::migrate_state(conn, machine, from, to, budget)
        })
    }

    fn migrate_renamed_states(&mut self, budget: usize) -> Result<u64> {
        let renames = self.with_retry("reading machine definitions", definitions::renames)?;
        let mut moved = 0;
        for (machine, from, to) in renames {
            let left = budget.saturating_sub(usize::try_from(moved).unwrap_or(usize::MAX));
            if left == 0 {
                break;
            }
            moved += self.migrate_state(&machine, &from, &to, left)?;
        }
        Ok(moved)
    }

    fn put_timer(&mut self, machine: &str, timer: &TimerRecord) -> Result<()> {
        self.with_retry("scheduling a request", |conn| {
            timers::put(conn, machine, timer)
        })?;
        self.note_write();
        Ok(())
    }

    fn remove_timer(&mut self, machine: &str, stored_key: &[u8]) -> Result<Option<TimerRecord>> {
        let removed = self.with_retry("removing a timer", |conn| {
            timers::remove(conn, machine, stored_key)
        })?;
        self.note_write();
        timers::decode_removed(machine, stored_key, removed)
    }

    fn prepare_machine(&mut self, _machine: &str) -> Result<()> {
        // The tables are shared by every machine and exist since connect.
        Ok(())
    }

    fn outbox_remove(&mut self, positions: &[u64]) -> Result<usize> {
        let positions: Vec<i64> = positions.iter().map(|&position| db_int(position)).collect();
        let removed = self.with_retry("acknowledging outbox events", |conn| {
            let statement = conn.prepared(OUTBOX_REMOVE)?;
            conn.client.execute(&statement, &[&positions])
        })?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    fn outbox_quarantine(&mut self, position: u64) -> Result<bool> {
        let position = db_int(position);
        let moved: i64 = self.with_retry("quarantining an outbox entry", |conn| {
            let statement = conn.prepared(OUTBOX_QUARANTINE)?;
            conn.client.query_one(&statement, &[&position])?.try_get(0)
        })?;
        Ok(moved > 0)
    }

    fn purge_expired_keys(&mut self, now: u64, budget: usize) -> Result<PurgeRound> {
        let now = db_int(now);
        let budget_sql = i64::try_from(budget).unwrap_or(i64::MAX);
        let lock = locks::purge_key(&self.shared.schema);
        let purged: Option<i64> = self.with_retry("purging idempotency keys", |conn| {
            conn.client.batch_execute("BEGIN")?;
            let mine: bool = conn
                .client
                .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&lock])?
                .try_get(0)?;
            if !mine {
                // Another process is purging: nothing to do here.
                conn.client.batch_execute("ROLLBACK")?;
                return Ok(None);
            }
            let statement = conn.prepared(PURGE)?;
            let purged: i64 = conn
                .client
                .query_one(&statement, &[&now, &budget_sql])?
                .try_get(0)?;
            conn.client.batch_execute("COMMIT")?;
            Ok(Some(purged))
        })?;
        let purged = u64::try_from(purged.unwrap_or(0)).unwrap_or(0);
        Ok(PurgeRound {
            purged,
            corrupt: Vec::new(),
            more: budget > 0 && purged >= budget as u64,
        })
    }

    fn flush(&mut self) -> Result<FileSync> {
        if self.lost_unsynced {
            self.lost_unsynced = false;
            return Err(Error::storage(
                "syncing the database",
                std::io::Error::other(
                    "the connection to PostgreSQL was lost before earlier Buffered commits were \
                     confirmed on stable storage; they may be lost",
                ),
            ));
        }
        if self.synchronous() {
            // Under Immediate every commit waited for its WAL flush.
            return Ok(Box::new(|| Ok(())));
        }
        // Under Buffered: the WAL flush, on a reader connection (the next
        // leader uses the writer's meanwhile). Its commit waits until the
        // WAL is on stable storage up to itself, so past every commit made
        // before this call; unless the server restarted since those commits
        // (Buffered commits not yet flushed are then gone), which it checks.
        self.unsynced = false;
        let shared = self.shared.clone();
        let slot = self.sync_slot;
        let started = self.server_started.clone();
        Ok(Box::new(move || {
            let now: String = shared.pool.run("syncing the database", |conn| {
                let statement = conn.prepared(SYNC)?;
                conn.client.query_one(&statement, &[&slot])?.try_get(0)
            })?;
            match started {
                Some(started) if started != now => Err(Error::storage(
                    "syncing the database",
                    std::io::Error::other(
                        "the PostgreSQL server restarted since earlier Buffered commits; \
                         they may be lost",
                    ),
                )),
                _ => Ok(()),
            }
        }))
    }
}
