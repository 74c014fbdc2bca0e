//! Waking outbox subscriptions with `LISTEN/NOTIFY`.
//!
//! One listening connection per engine, on a thread of its own, started by
//! the first subscription: it `LISTEN`s on the schema's channel and bumps an
//! in-process counter for every notification; subscriptions wait on that
//! counter. One connection rather than one per subscription, because a
//! connection that listens but is not read holds back PostgreSQL's
//! notification queue (shared by the whole cluster; when it fills, every
//! `NOTIFY` fails), and a subscription is allowed to go unpolled: the
//! listener thread always reads.
//!
//! Writers notify right after their commit, not inside it: a transaction
//! that notifies takes a cluster-wide lock from its pre-commit until its
//! commit is done, WAL flush included, which would serialize the commits of
//! every engine process. The `NOTIFY` is sent by an [`Announcer`] thread on
//! a connection of its own, so the commit pipeline does not wait for it, and
//! commits made meanwhile share one notification. A notification lost
//! between a commit and its `NOTIFY` (the process died) costs latency, not
//! events: a subscription also re-reads every [`RECHECK`], and after the
//! listener reconnects.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use super::config::PgOptions;
use super::pool::Conn;
use super::retry::Backoff;
use crate::store::OutboxWaiter;
use crate::write::Notifier;

/// The longest a subscription waits without re-reading the outbox.
pub(crate) const RECHECK: Duration = Duration::from_secs(5);

/// The shortest time between two `NOTIFY`s of one engine.
const COALESCE: Duration = Duration::from_millis(3);

/// How often the listener thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(250);

/// The channel of a schema: `idemflow_outbox_<schema>` (a hash when too long).
pub(crate) fn channel(schema: &str) -> String {
    let channel = format!("idemflow_outbox_{schema}");
    if channel.len() <= 63 {
        channel
    } else {
        let hash = blake3::hash(schema.as_bytes()).to_hex();
        format!("idemflow_outbox_{}", &hash.as_str()[..32])
    }
}

/// The listener thread's handle.
pub(crate) struct Listener {
    notifier: Arc<Notifier>,
    stop: Arc<AtomicBool>,
}

impl Listener {
    /// Starts the listener thread.
    pub(crate) fn start(options: PgOptions, channel: String) -> std::io::Result<Listener> {
        let notifier = Arc::new(Notifier::default());
        let stop = Arc::new(AtomicBool::new(false));
        {
            let notifier = notifier.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("idemflow-pg-listen".to_owned())
                .spawn(move || listen(&options, &channel, &notifier, &stop))?;
        }
        Ok(Listener { notifier, stop })
    }

    /// A waiter for one subscription.
    pub(crate) fn waiter(&self) -> Box<dyn OutboxWaiter> {
        Box::new(Waiter {
            notifier: self.notifier.clone(),
            seen: 0,
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn listen(options: &PgOptions, channel: &str, notifier: &Notifier, stop: &AtomicBool) {
    let mut backoff = Backoff::new();
    while !stop.load(Ordering::SeqCst) {
        let mut conn = match Conn::open(options, true).and_then(|mut conn| {
            conn.client
                .batch_execute(&format!("LISTEN \"{channel}\""))?;
            Ok(conn)
        }) {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(error = %super::pool::describe(&error), "the outbox listener could not connect; retrying");
                if !backoff.wait() {
                    backoff = Backoff::new();
                }
                continue;
            }
        };
        backoff = Backoff::new();
        // Events may have been committed while no one listened.
        notifier.bump();
        'connected: while !stop.load(Ordering::SeqCst) {
            let mut notifications = conn.client.notifications();
            let mut iter = notifications.timeout_iter(POLL);
            loop {
                match iter.next() {
                    Ok(Some(_)) => notifier.bump(),
                    Err(_) => break 'connected,
                    Ok(None) => break,
                }
            }
            drop(iter);
            drop(notifications);
            if conn.client.is_closed() {
                break;
            }
        }
    }
}

/// Sends the writer's `NOTIFY`s from a thread of its own, on a connection
/// of its own, so that the notification costs the commit pipeline no round
/// trip; commits that happen while one is being sent share the next one.
pub(crate) struct Announcer {
    wake: std::sync::mpsc::SyncSender<()>,
}

impl Announcer {
    /// Starts the announcer thread; it ends when the announcer is dropped.
    pub(crate) fn start(options: PgOptions, channel: String) -> std::io::Result<Announcer> {
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("idemflow-pg-notify".to_owned())
            .spawn(move || announce(&options, &channel, &woken))?;
        Ok(Announcer { wake })
    }

    /// Asks for a `NOTIFY` (after a commit that wrote outbox rows). Never
    /// blocks: a request already pending covers this one.
    pub(crate) fn announce(&self) {
        let _ = self.wake.try_send(());
    }
}

fn announce(options: &PgOptions, channel: &str, woken: &std::sync::mpsc::Receiver<()>) {
    let mut conn: Option<Conn> = None;
    while woken.recv().is_ok() {
        for attempt in 0..3 {
            let connected = match conn.take() {
                Some(conn) if !conn.client.is_closed() => Ok(conn),
                _ => Conn::open(options, false),
            };
            match connected.and_then(|mut c| {
                c.client.execute("SELECT pg_notify($1, '')", &[&channel])?;
                Ok(c)
            }) {
                Ok(c) => {
                    conn = Some(c);
                    // Commits of the next moment share the next NOTIFY: one
                    // per COALESCE at most, instead of one per commit (each
                    // is a transaction of its own on the server).
                    std::thread::sleep(COALESCE);
                    break;
                }
                Err(error) => {
                    tracing::warn!(attempt, error = %super::pool::describe(&error), "could not notify outbox subscribers");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// What one subscription waits on.
struct Waiter {
    notifier: Arc<Notifier>,
    seen: u64,
}

impl OutboxWaiter for Waiter {
    fn arm(&mut self) {
        self.seen = self.notifier.generation();
    }

    fn wait(&mut self, timeout: Duration) {
        self.notifier.wait_past(self.seen, timeout.min(RECHECK));
    }
}
