//! Connections: one set up the same way everywhere, and a small pool of them
//! for readers.
//!
//! The pool is ours rather than `r2d2_postgres`: that crate has had no
//! release since 2021 and pulls in `r2d2`, `scheduled-thread-pool` and
//! `parking_lot` for what is here a mutex around a vector. Readers take an
//! idle connection (or open one), run, and put it back unless it broke; at
//! most [`MAX_IDLE`] idle connections are kept. Reads are idempotent, so a
//! read that loses its connection is retried on a new one (with the
//! backoff of [`super::retry`]).

use std::collections::HashMap;
use std::sync::Mutex;

use postgres::{Client, NoTls, Statement};

use super::batch;
use super::blocking;
use super::config::PgOptions;
use super::retry::{classify, connection_lost, Backoff, Retry};
use crate::error::{Error, Result};

/// The most idle reader connections kept open.
const MAX_IDLE: usize = 8;

/// One connection with its session settings and prepared statements.
pub(crate) struct Conn {
    pub(crate) client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Conn {
    /// Connects and sets the session up: idemflow's schema first on the
    /// search path, `synchronous_commit` as the durability says, a timeout
    /// that ends a transaction left open by a stuck process (so its locks
    /// cannot stall the other processes for long), and generic plans for
    /// prepared statements (planning a batch's statements each time cost
    /// more than running them).
    pub(crate) fn open(
        options: &PgOptions,
        synchronous_commit: bool,
    ) -> std::result::Result<Conn, postgres::Error> {
        let mut client = options.client.connect(NoTls)?;
        client.batch_execute(&format!(
            "SET search_path TO {schema}, public; \
             SET synchronous_commit TO {commit}; \
             SET idle_in_transaction_session_timeout TO '60s'; \
             SET plan_cache_mode TO force_generic_plan",
            schema = options.quoted_schema(),
            commit = if synchronous_commit { "on" } else { "off" },
        ))?;
        Ok(Conn {
            client,
            statements: HashMap::new(),
        })
    }

    /// A connection for the writer: [`open`](Conn::open), plus planner
    /// settings that keep a batch's statements on index lookups, the
    /// batch's two statements prepared (`idemflow_load`, `idemflow_write`:
    /// a batch sends them with `EXECUTE` in simple queries, see
    /// `batch/literal.rs`) and the literal formats those rely on. The
    /// statements' joins with `unnest($n)` arrays are planned once (generic
    /// plans) with a guess of 10 array rows; on a small or freshly loaded
    /// table the planner would pick a hash join over a sequential scan,
    /// which costs a full scan per batch once the table is large. Every
    /// statement the writer runs has an index path.
    pub(crate) fn open_writer(
        options: &PgOptions,
        synchronous_commit: bool,
    ) -> std::result::Result<Conn, postgres::Error> {
        let mut conn = Conn::open(options, synchronous_commit)?;
        conn.client.batch_execute(
            // Not enable_seqscan: with it off, planning the outbox marker's
            // read of the sequence took about 200 ms.
            "SET enable_hashjoin TO off; SET enable_mergejoin TO off; \
             SET standard_conforming_strings TO on; SET bytea_output TO hex",
        )?;
        conn.client.batch_execute(batch::PREPARE_LOAD)?;
        conn.client.batch_execute(batch::PREPARE_WRITE)?;
        Ok(conn)
    }

    /// The prepared form of `sql` (prepared once per connection).
    pub(crate) fn prepared(
        &mut self,
        sql: &'static str,
    ) -> std::result::Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

/// A PostgreSQL failure as an [`Error::Storage`] with the server's words.
pub(crate) fn storage_error(context: &str, error: &postgres::Error) -> Error {
    Error::storage(context, std::io::Error::other(describe(error)))
}

/// The server's message (and code, detail, hint) or the client's.
pub(crate) fn describe(error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{} ({}: {})", db.message(), db.severity(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Reader connections.
pub(crate) struct Pool {
    options: PgOptions,
    idle: Mutex<Vec<Conn>>,
}

impl Drop for Pool {
    /// Closes the idle connections where closing may block (see
    /// [`blocking::drop_off_runtime`]).
    fn drop(&mut self) {
        let idle = std::mem::take(
            self.idle
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if !idle.is_empty() {
            blocking::drop_off_runtime(idle);
        }
    }
}

impl Pool {
    pub(crate) fn new(options: PgOptions) -> Self {
        Pool {
            options,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The options connections are opened with.
    pub(crate) fn options(&self) -> &PgOptions {
        &self.options
    }

    fn take(&self) -> std::result::Result<Conn, postgres::Error> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        match idle {
            Some(conn) if !conn.client.is_closed() => Ok(conn),
            _ => Conn::open(&self.options, true),
        }
    }

    /// Returns a connection to the pool (dropped if broken or the pool is full).
    pub(crate) fn give_back(&self, conn: Conn) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < MAX_IDLE && !conn.client.is_closed() {
            idle.push(conn);
        }
    }

    /// Runs `work` (which must be idempotent: it may run again after a lost
    /// connection or a serialization failure) on a pooled connection.
    /// Refused with [`Error::BlockingInAsync`] on a thread that runs async
    /// code (see [`super::blocking`]): every read of a caller comes here.
    pub(crate) fn run<T>(
        &self,
        context: &str,
        mut work: impl FnMut(&mut Conn) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        blocking::check(context)?;
        let mut backoff = Backoff::new();
        loop {
            let result = self.take().and_then(|mut conn| {
                let result = work(&mut conn);
                match &result {
                    Err(error) if connection_lost(error) => {}
                    _ => self.give_back(conn),
                }
                result
            });
            match result {
                Ok(value) => return Ok(value),
                Err(error) => {
                    if classify(&error) == Retry::No || !backoff.wait() {
                        return Err(storage_error(context, &error));
                    }
                }
            }
        }
    }
}
