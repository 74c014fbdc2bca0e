//! The outbox: one event per applied change, delivered at least once.

use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::error::Result;
use crate::observe::{self, Call, Subject};
use crate::outcome::OutboxEvent;
use crate::store::{OutboxWaiter, PendingEntry};
use crate::write::jobs::Task;

/// The outbox of an engine: every applied change (creations included) as an
/// [`OutboxEvent`], written in the same atomic step as the change.
///
/// Consumers read [`pending`](Outbox::pending) events, process them, then
/// [`ack`](Outbox::ack) them. Delivery is at least once (a consumer that
/// crashes before acknowledging sees the events again), so consumers
/// deduplicate on `(machine, id, version)`.
///
/// The outbox hands out only events that are on stable storage, so no
/// consumer ever acts on a change that a crash could take back; it never
/// forces a sync to do so. Under [`Durability::Buffered`](crate::Durability::Buffered)
/// an event appears once the background sync covered it (100 ms by default)
/// or after [`Engine::flush`].
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

/// How many entries a scan reads at a time.
const SCAN_CHUNK: usize = 256;

impl Outbox {
    pub(crate) fn new(engine: Engine) -> Self {
        Outbox { engine }
    }

    /// Up to `limit` pending events, oldest first (in commit order; an
    /// entity's events are in version order). An entry that fails to decode
    /// does not block the others: it is skipped here (and logged as a
    /// `tracing` warning); [`pending_entries`](Outbox::pending_entries)
    /// reports it with its position, to acknowledge or quarantine.
    pub fn pending(&self, limit: usize) -> Result<Vec<OutboxEvent>> {
        observe::call(Call::OutboxPending, Subject::default(), || {
            self.read_pending(limit)
        })
    }

    fn read_pending(&self, limit: usize) -> Result<Vec<OutboxEvent>> {
        let mut events = Vec::with_capacity(limit.min(SCAN_CHUNK));
        let mut after = None;
        while events.len() < limit {
            let entries = self.engine.inner().store.outbox_after(after, SCAN_CHUNK)?;
            let done = entries.len() < SCAN_CHUNK;
            for entry in entries {
                after = Some(entry.position());
                match entry {
                    PendingEntry::Event(event) if events.len() < limit => events.push(event),
                    PendingEntry::Event(_) => break,
                    PendingEntry::Undecodable { position, error } => {
                        let error = observe::loggable(&error);
                        tracing::warn!(position, error, "skipped an undecodable outbox entry");
                    }
                }
            }
            if done {
                break;
            }
        }
        Ok(events)
    }

    /// Up to `limit` pending entries, oldest first, including the ones that
    /// fail to decode ([`PendingEntry::Undecodable`], with their position and
    /// the `Corrupt` error), so a consumer can acknowledge
    /// ([`ack_positions`](Outbox::ack_positions)) or
    /// [`quarantine`](Outbox::quarantine) them.
    pub fn pending_entries(&self, limit: usize) -> Result<Vec<PendingEntry>> {
        self.engine.inner().store.outbox_after(None, limit)
    }

    /// Removes processed events; returns how many were still pending.
    /// Acknowledging an event twice is harmless.
    pub fn ack(&self, events: &[OutboxEvent]) -> Result<usize> {
        let positions: Vec<u64> = events.iter().map(|event| event.position).collect();
        self.ack_positions(&positions)
    }

    /// Removes the entries at these positions (decodable or not); returns how
    /// many were still pending.
    pub fn ack_positions(&self, positions: &[u64]) -> Result<usize> {
        if positions.is_empty() {
            return Ok(0);
        }
        observe::call(Call::OutboxAck, Subject::default(), || {
            let positions = positions.to_vec();
            let task: Task = Box::new(move |store| {
                store
                    .outbox_remove(&positions)
                    .map(|removed| removed as u64)
            });
            let removed = self
                .engine
                .inner()
                .run_task(task, "acknowledging outbox events")
                .map(|removed| usize::try_from(removed).unwrap_or(usize::MAX))?;
            observe::outbox_removed(removed);
            Ok(removed)
        })
    }

    /// Moves the entry at `position` out of the outbox into the
    /// `outbox_quarantine` tree, where it is kept (for inspection) but never
    /// delivered. Returns whether it was pending.
    pub fn quarantine(&self, position: u64) -> Result<bool> {
        let task: Task = Box::new(move |store| store.outbox_quarantine(position).map(u64::from));
        let moved = self
            .engine
            .inner()
            .run_task(task, "quarantining an outbox entry")?;
        observe::outbox_removed(usize::from(moved > 0));
        Ok(moved > 0)
    }

    /// The number of pending entries (including ones not yet durable).
    pub fn len(&self) -> Result<usize> {
        let pending = self.engine.inner().store.outbox_len()?;
        observe::outbox_pending(pending);
        Ok(pending)
    }

    /// Whether no entry is pending.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A blocking feed of the events committed from now on, in commit order,
    /// for services that react at once. Each event is handed out once it is
    /// durable. The feed reads the outbox itself (it keeps only its position),
    /// so a subscription that is never polled costs nothing and blocks no
    /// one, and one that falls behind catches up from the outbox (events
    /// acknowledged meanwhile are skipped). It does not remove events:
    /// acknowledge them (or rely on [`pending`](Outbox::pending)) for
    /// at-least-once delivery across restarts.
    pub fn subscribe(&self) -> Subscription {
        let after = self.last_position();
        Subscription {
            waiter: self.engine.inner().store.outbox_waiter(),
            engine: self.engine.clone(),
            after,
        }
    }

    /// The position of the newest entry (durable or not), if any.
    fn last_position(&self) -> Option<u64> {
        self.engine
            .inner()
            .store
            .outbox_last_position()
            .ok()
            .flatten()
    }
}

/// A blocking iterator over newly committed outbox events; see [`Outbox::subscribe`].
pub struct Subscription {
    engine: Engine,
    /// The position of the last entry handed out (or skipped).
    after: Option<u64>,
    /// The backend's wake-up (PostgreSQL: `LISTEN/NOTIFY`); `None`: the
    /// engine's own notifier.
    waiter: Option<Box<dyn OutboxWaiter>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Waits up to `timeout` for the next event (`None` if none came). An
    /// entry that fails to decode is handed out as its `Corrupt` error; the
    /// feed goes on after it.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<OutboxEvent>> {
        let deadline = Instant::now() + timeout;
        let published = self.engine.inner().writer.published();
        loop {
            // Read the generation before the outbox, so an event published
            // between the two wakes the wait below.
            let seen = published.generation();
            if let Some(waiter) = &mut self.waiter {
                waiter.arm();
            }
            match self.engine.inner().store.outbox_after(self.after, 1) {
                Err(error) => return Some(Err(error)),
                Ok(entries) => {
                    if let Some(entry) = entries.into_iter().next() {
                        self.after = Some(entry.position());
                        return Some(match entry {
                            PendingEntry::Event(event) => Ok(event),
                            PendingEntry::Undecodable { error, .. } => Err(error),
                        });
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match &mut self.waiter {
                Some(waiter) => waiter.wait(left),
                None => {
                    published.wait_past(seen, left);
                }
            }
        }
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
