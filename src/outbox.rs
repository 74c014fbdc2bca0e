//! The outbox: one event per applied change, delivered at least once.

use std::time::Duration;

use crate::engine::Engine;
use crate::error::Result;
use crate::outcome::OutboxEvent;
use crate::store::OutboxWatcher;

/// The outbox of an engine: every applied change (creations included) as an
/// [`OutboxEvent`], written in the same atomic step as the change.
///
/// Consumers read [`pending`](Outbox::pending) events, process them, then
/// [`ack`](Outbox::ack) them. Delivery is at least once (a consumer that
/// crashes before acknowledging sees the events again), so consumers
/// deduplicate on `(machine, id, version)`.
///
/// ```
/// use idemflow::{Engine, MachineDef};
///
/// let engine = Engine::temporary()?;
/// let doors = engine.register(
///     MachineDef::new("door", "closed").state("closed").terminal_state("open")
///         .transition("closed", "open", "open"),
/// )?;
/// doors.create("front")?;
/// let outbox = engine.outbox();
/// let events = outbox.pending(100)?;
/// assert_eq!(events.len(), 1);
/// assert_eq!((events[0].id.as_str(), events[0].version), ("front", 1));
/// outbox.ack(&events)?;
/// assert!(outbox.pending(100)?.is_empty());
/// # Ok::<(), idemflow::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Outbox {
    engine: Engine,
}

impl Outbox {
    pub(crate) fn new(engine: Engine) -> Self {
        Outbox { engine }
    }

    /// Up to `limit` pending events, oldest first; an entity's events are in
    /// version order. Makes the database durable first, so it never hands out
    /// an event that a crash could still lose (even under `Buffered`).
    pub fn pending(&self, limit: usize) -> Result<Vec<OutboxEvent>> {
        self.engine.flush()?;
        self.engine.inner().store.outbox_pending(limit)
    }

    /// Removes processed events; returns how many were still pending.
    /// Acknowledging an event twice is harmless.
    pub fn ack(&self, events: &[OutboxEvent]) -> Result<usize> {
        self.engine.inner().store.outbox_ack(events)
    }

    /// The number of pending events.
    pub fn len(&self) -> Result<usize> {
        self.engine.inner().store.outbox_len()
    }

    /// Whether no event is pending.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A blocking feed of the events committed from now on, in commit order,
    /// for services that react at once. Each event is handed out only once it
    /// is durable. It does not remove events: acknowledge them (or rely on
    /// [`pending`](Outbox::pending)) for at-least-once delivery across restarts.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            engine: self.engine.clone(),
            watcher: self.engine.inner().store.outbox_watcher(),
        }
    }
}

/// A blocking iterator over newly committed outbox events; see [`Outbox::subscribe`].
pub struct Subscription {
    engine: Engine,
    watcher: Box<dyn OutboxWatcher>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Subscription {
    /// Waits up to `timeout` for the next event (`None` if none came).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<OutboxEvent>> {
        let event = self.watcher.next_event(timeout)?;
        Some(self.engine.flush().and(event))
    }
}

impl Iterator for Subscription {
    type Item = Result<OutboxEvent>;

    /// Blocks until the next event.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(event) = self.next_timeout(Duration::from_secs(3600)) {
                return Some(event);
            }
        }
    }
}
