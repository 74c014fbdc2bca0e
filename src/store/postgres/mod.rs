//! The PostgreSQL backend (feature `postgres`): many engine processes, one
//! shared database.
//!
//! # The client crate
//!
//! `postgres` (rust-postgres, the blocking wrapper of `tokio-postgres`). The
//! engine is blocking and thread-based: callers run on their own threads
//! and one of them leads each batch, so a blocking client fits without an
//! async runtime of our own; `sqlx` would bring macros, a runtime and far
//! more dependencies for nothing we use. rust-postgres is maintained, speaks
//! the extended protocol with binary parameters (arrays of `bytea` and
//! `bigint` for whole batches), and supports `LISTEN/NOTIFY`. Its versions
//! that build on the MSRV (1.85) are pinned in `Cargo.lock`: `postgres`
//! 0.19.13, `tokio-postgres` 0.7.17, `postgres-protocol` 0.6.10 (0.6.11
//! moved to `sha2` 0.11, which needs Rust 1.88). TLS is not supported yet
//! (connections use `NoTls`; `sslmode=require` fails to connect).
//!
//! # Layout
//!
//! - [`config`]: the connection string (and idemflow's `schema=` parameter);
//! - [`pool`]: connections and the small reader pool;
//! - [`blocking`]: whether a caller's thread may use the blocking client
//!   (not on a thread that runs async code);
//! - [`schema`]: tables, created and upgraded on connect, versioned;
//! - [`locks`]: advisory lock keys;
//! - [`batch`]: one batch of requests = one transaction in two round
//!   trips (the isolation scheme is argued there, and how each commit
//!   checks the definition version);
//! - [`definitions`]: definition versions and their log, storing a version
//!   while other processes commit, migrating renamed states;
//! - [`timers`]: the timers table and claims (timers fire once in effect
//!   across processes);
//! - [`writer`]: the write side ([`StoreWriter`]): batches, commit outcome,
//!   durability, acknowledgements, key purge;
//! - [`retry`]: which failures are retried, and the backoff;
//! - [`reads`]: entity, history, state index and key reads;
//! - [`outbox`]: the outbox horizon (commit order across processes) and
//!   what "durable" means here;
//! - [`listen`]: `LISTEN/NOTIFY` for subscriptions.
//!
//! # Round trips
//!
//! A request with an idempotency key costs, with one caller, two round
//! trips to the server: `BEGIN`, the locks and the load in one simple
//! query; the write and `COMMIT` in another (`batch/load.rs`,
//! `batch/write.rs`). The blocking client sends one extended-protocol
//! statement per round trip, so the batch's statements are prepared once
//! per connection (`PREPARE`) and sent with `EXECUTE` and literal
//! arguments in multi-statement simple queries. The caller does not read
//! the key first ([`MachineStore::pre_reads_keys`] is `false` here): that
//! read would be a third round trip, and the writer reads the key under
//! its locks anyway (a replay is answered by the writer, from a
//! transaction that writes nothing). Requests without a key, or with
//! guards to run, are read by the caller first as on sled.
//!
//! # Durability
//!
//! `Durability::Immediate` runs the writer's session with
//! `synchronous_commit = on`: `COMMIT` returns once the commit is in the WAL
//! on stable storage, so the file sync that [`StoreWriter::flush`] returns
//! has nothing to do. `Buffered` runs it with `off`: `COMMIT` returns at
//! once and PostgreSQL's WAL writer flushes shortly after; the file sync
//! then runs a small transaction with `synchronous_commit = on` on a reader
//! connection (it may run while the next batch commits on the writer's),
//! whose commit waits until the WAL is flushed up to it, and so past every
//! commit made before `flush` was called. It fails if the server restarted
//! since those commits (they may be lost), as does a sync after the
//! writer's connection was lost with commits not yet vouched for.
//!
//! A PostgreSQL server that crashes loses nothing committed under
//! `Immediate`; under `Buffered` it may lose the last commits (never half of
//! one). An engine process that dies loses nothing committed either way: the
//! server has it.

mod batch;
mod blocking;
mod config;
mod definitions;
mod listen;
mod locks;
mod outbox;
mod pool;
mod reads;
mod retry;
mod schema;
mod timers;
mod writer;

use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};

pub(crate) use self::config::PgOptions;
use self::listen::Listener;
use self::pool::{storage_error, Conn, Pool};
use self::reads::PgMachine;
use self::writer::PgWriter;
use super::{MachineStore, OutboxWaiter, PendingEntry, Store, StoreWriter};
use crate::definitions::DefinitionVersion;
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::machine::MachineDef;
use crate::timers::TimerRecord;

/// What readers and the writer share.
pub(crate) struct Shared {
    pool: Pool,
    schema: String,
    /// The first key of outbox markers (see `outbox.rs`).
    namespace: i32,
    /// The `NOTIFY` channel of this schema.
    channel: String,
    durability: Durability,
    /// Under `Buffered`: outbox positions up to here are known durable.
    durable_through: AtomicI64,
    /// The `sync_slots` row readers update to wait for the WAL.
    sync_slot: i32,
    /// Started by the first subscription.
    listener: Mutex<Option<Listener>>,
}

/// A PostgreSQL database (one schema of it).
pub(crate) struct PgStore {
    shared: Arc<Shared>,
    /// Taken by [`Store::writer`].
    writer: Mutex<Option<PgWriter>>,
}

impl PgStore {
    /// Connects, creates or upgrades the schema, and opens the writer's connection.
    /// Refused with [`Error::BlockingInAsync`] on a thread that runs async
    /// code, before connecting.
    pub(crate) fn connect(options: PgOptions) -> Result<PgStore> {
        blocking::check("connecting to PostgreSQL")?;
        let place = describe_place(&options);
        let connect_error = |error: postgres::Error| {
            storage_error(&format!("connecting to PostgreSQL at {place}"), &error)
        };
        let mut reader = Conn::open(&options, true).map_err(connect_error)?;
        schema::migrate(&mut reader, &options.schema)?;
        let writer = Conn::open_writer(&options, options.durability == Durability::Immediate)
            .map_err(connect_error)?;
        let shared = Arc::new(Shared {
            namespace: locks::marker_namespace(&options.schema),
            channel: listen::channel(&options.schema),
            schema: options.schema.clone(),
            durability: options.durability,
            durable_through: AtomicI64::new(0),
            sync_slot: (std::process::id().wrapping_add(32) % 64) as i32,
            listener: Mutex::new(None),
            pool: Pool::new(options),
        });
        // The migration's connection is a good first reader.
        shared.pool.give_back(reader);
        Ok(PgStore {
            writer: Mutex::new(Some(PgWriter::new(shared.clone(), writer))),
            shared,
        })
    }
}

/// `host:port/dbname (schema s)`, without user or password.
fn describe_place(options: &PgOptions) -> String {
    let host = match options.client.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = options.client.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port}/{} (schema {})",
        options.client.get_dbname().unwrap_or("(default database)"),
        options.schema
    )
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Stops the listener thread, if one was started.
        self.shared
            .listener
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
    }
}

impl Store for PgStore {
    fn definitions(&self) -> Result<Vec<MachineDef>> {
        reads::definitions(&self.shared)
    }

    fn definition(&self, machine: &str) -> Result<Option<MachineDef>> {
        reads::definition(&self.shared, machine)
    }

    fn definition_version(&self, machine: &str) -> Result<Option<u64>> {
        definitions::version(&self.shared, machine)
    }

    fn definition_log(&self, machine: &str) -> Result<Vec<DefinitionVersion>> {
        definitions::log(&self.shared, machine)
    }

    fn due_timers(&self, now: u64, limit: usize) -> Result<Vec<(String, TimerRecord)>> {
        timers::claim_due(&self.shared, now, limit)
    }

    fn next_timer_due(&self) -> Result<Option<u64>> {
        timers::next_claimable(&self.shared)
    }

    fn machine(&self, machine: &str) -> Result<Arc<dyn MachineStore>> {
        Ok(Arc::new(PgMachine {
            shared: self.shared.clone(),
            machine: machine.to_owned(),
        }))
    }

    fn outbox_after(&self, after: Option<u64>, limit: usize) -> Result<Vec<PendingEntry>> {
        let shared = &self.shared;
        let after = after.map_or(0, batch::db_int);
        shared.pool.run("reading the outbox", |conn| {
            let horizon = outbox::horizon(conn, shared.namespace)?;
            if horizon <= after {
                return Ok(Vec::new());
            }
            if shared.durability == Durability::Buffered {
                outbox::flush_through(conn, horizon, &shared.durable_through, shared.sync_slot)?;
            }
            outbox::rows_after(conn, after, horizon, limit)
        })
    }

    fn outbox_last_position(&self) -> Result<Option<u64>> {
        let shared = &self.shared;
        let horizon = shared.pool.run("reading the outbox", |conn| {
            outbox::horizon(conn, shared.namespace)
        })?;
        Ok(u64::try_from(horizon).ok().filter(|position| *position > 0))
    }

    fn outbox_len(&self) -> Result<usize> {
        let count: i64 = self.shared.pool.run("counting the outbox", |conn| {
            conn.client
                .query_one("SELECT count(*) FROM outbox", &[])?
                .try_get(0)
        })?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    fn size_on_disk(&self) -> Result<u64> {
        let schema = self.shared.schema.clone();
        let bytes: i64 = self.shared.pool.run("measuring the database", |conn| {
            conn.client
                .query_one(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relkind IN ('r', 'S', 'm')",
                    &[&schema],
                )?
                .try_get(0)
        })?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    fn writer(&self) -> Result<Box<dyn StoreWriter>> {
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .map(|writer| Box::new(writer) as Box<dyn StoreWriter>)
            .ok_or_else(|| {
                Error::storage(
                    "starting the writer",
                    std::io::Error::other("the database already has its writer"),
                )
            })
    }

    fn check_caller(&self, operation: &str) -> Result<()> {
        blocking::check(operation)
    }

    fn outbox_waiter(&self) -> Option<Box<dyn OutboxWaiter>> {
        let mut listener = self
            .shared
            .listener
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if listener.is_none() {
            match Listener::start(
                self.shared.pool.options().clone(),
                self.shared.channel.clone(),
            ) {
                Ok(started) => *listener = Some(started),
                Err(error) => {
                    tracing::warn!(%error, "could not start the outbox listener thread");
                    return None;
                }
            }
        }
        listener.as_ref().map(Listener::waiter)
    }
}
