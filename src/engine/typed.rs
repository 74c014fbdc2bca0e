//! The typed handle of a machine.

use std::marker::PhantomData;
use std::sync::Arc;

use serde_json::Value;

use super::{relocate, Engine, MachineRuntime, NamedMachine};
use crate::decide::{CreateSpec, NamedGuardInput};
use crate::error::Result;
use crate::guard::{GuardInput, GuardScope};
use crate::machine::{MachineEvent, StateMachine};
use crate::outcome::{Entity, HistoryEntry, Outcome};
use crate::request::{Create, Request};
use crate::timers::ScheduledTimer;

/// The typed handle of one machine: create entities, request transitions, read
/// state and history. Owned (no lifetime), `Clone + Send + Sync`: move it into
/// threads and tasks freely.
///
/// See [`Engine`] for an example.
pub struct Machine<M: StateMachine> {
    engine: Engine,
    runtime: Arc<MachineRuntime>,
    machine: PhantomData<fn() -> M>,
}

impl<M: StateMachine> Clone for Machine<M> {
    fn clone(&self) -> Self {
        Machine {
            engine: self.engine.clone(),
            runtime: self.runtime.clone(),
            machine: PhantomData,
        }
    }
}

impl<M: StateMachine> std::fmt::Debug for Machine<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("name", &M::machine_name())
            .finish_non_exhaustive()
    }
}

impl<M: StateMachine> Machine<M> {
    pub(super) fn new(engine: Engine, runtime: Arc<MachineRuntime>) -> Self {
        Machine {
            engine,
            runtime,
            machine: PhantomData,
        }
    }

    /// Creates entity `id` in the initial state at version 1. Creating an
    /// existing entity is a no-op success returning its current state.
    pub fn create(&self, id: &str) -> Result<Outcome<M>> {
        self.create_with(id, None, None)
    }

    /// Creates entity `id` recording a payload and an actor in its first
    /// history entry and its creation event.
    pub fn create_with(
        &self,
        id: &str,
        payload: Option<Value>,
        actor: Option<String>,
    ) -> Result<Outcome<M>> {
        let record = self.engine.inner.create(
            &self.runtime,
            id,
            CreateSpec {
                payload,
                actor,
                ..CreateSpec::default()
            },
        )?;
        Outcome::from_record(record)
    }

    /// Creates entity `id` with options: an idempotency key (a retry replays
    /// the original creation), a payload, an actor; see [`Create`].
    pub fn create_request(&self, id: &str, create: Create) -> Result<Outcome<M>> {
        let key = create.spec.stored_key();
        let record = self.engine.inner.create(&self.runtime, id, create.spec)?;
        let replay_key = key.filter(|_| record.replay);
        Outcome::from_record(record).map_err(|error| match replay_key {
            Some(key) => relocate(error, "keys", self.name(), &key),
            None => relocate(error, "entities", self.name(), id.as_bytes()),
        })
    }

    /// Moves entity `id` to `state` (a no-op if it is there already).
    pub fn transition(&self, id: &str, state: M) -> Result<Outcome<M>> {
        self.apply(id, Request::to(state))
    }

    /// Fires `event` on entity `id`.
    pub fn fire(&self, id: &str, event: M::Event) -> Result<Outcome<M>> {
        self.apply(id, Request::fire(event))
    }

    /// Runs a request with all its options (key, expected version, payload, actor).
    ///
    /// ```
    /// # use idemflow::{Engine, Error, Request, StateMachine};
    /// # #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    /// # #[machine(name = "order", initial = Draft, events = OrderEvent)]
    /// # enum OrderState {
    /// #     #[on(submit = Submitted)] Draft,
    /// #     #[on(pay = Paid)] Submitted,
    /// #     #[terminal] Paid,
    /// # }
    /// let orders = Engine::temporary()?.machine::<OrderState>()?;
    /// orders.create("o-1")?;
    /// orders.fire("o-1", OrderEvent::Submit)?;
    /// // Someone else's view was version 1: the update is refused, not lost.
    /// let stale = orders.apply("o-1", Request::to(OrderState::Paid).expect_version(1));
    /// assert!(matches!(stale, Err(Error::VersionConflict { expected: 1, actual: 2, .. })));
    /// let paid = orders.apply("o-1", Request::to(OrderState::Paid).expect_version(2))?;
    /// assert_eq!((paid.state(), paid.version()), (OrderState::Paid, 3));
    /// # Ok::<(), idemflow::Error>(())
    /// ```
    pub fn apply(&self, id: &str, request: Request<M>) -> Result<Outcome<M>> {
        let key = request.spec.stored_key();
        let record = self.engine.inner.apply(&self.runtime, id, request.spec)?;
        let replay_key = key.filter(|_| record.replay);
        Outcome::from_record(record).map_err(|error| match replay_key {
            // A replayed outcome comes from the key record.
            Some(key) => relocate(error, "keys", self.name(), &key),
            None => relocate(error, "entities", self.name(), id.as_bytes()),
        })
    }

    /// The entity's current snapshot, if it exists.
    pub fn get(&self, id: &str) -> Result<Option<Entity<M>>> {
        let record = self.named().get(id)?;
        record
            .map(Entity::from_record)
            .transpose()
            .map_err(|error| relocate(error, "entities", self.name(), id.as_bytes()))
    }

    /// The entity's history, oldest first (empty if it does not exist).
    pub fn history(&self, id: &str) -> Result<Vec<HistoryEntry<M>>> {
        self.named()
            .history(id)?
            .into_iter()
            .map(|entry| {
                let version = entry.version;
                HistoryEntry::from_record(entry).map_err(|error| {
                    let key = crate::store::codec::history_key(id, version);
                    relocate(error, "history", self.name(), &key)
                })
            })
            .collect()
    }

    /// Every id in `state`, in id order, from the state index.
    pub fn in_state(&self, state: M) -> Result<Vec<String>> {
        self.named().in_state(state.name(), None, usize::MAX)
    }

    /// Up to `limit` ids in `state` after `after` (exclusive), in id order:
    /// pass the last id of a page to get the next one.
    pub fn in_state_page(
        &self,
        state: M,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.named().in_state(state.name(), after, limit)
    }

    /// Every state with its number of entities, in declaration order.
    pub fn count_by_state(&self) -> Result<Vec<(M, u64)>> {
        let counts = self.named().count_by_state()?;
        Ok(M::states()
            .iter()
            .zip(counts)
            .map(|(&state, (_, count))| (state, count))
            .collect())
    }

    fn name(&self) -> &str {
        self.runtime.name()
    }

    /// Attaches a guard to every transition *into* `state`. It sees the entity
    /// and the request and returns `Err(reason)` to reject it
    /// ([`Error::GuardRejected`](crate::Error::GuardRejected), nothing written).
    ///
    /// Guards run on the requesting caller's thread, before the request goes
    /// to the writer and with no lock held: a slow guard delays only its own
    /// request, and a panicking one fails only its own request
    /// ([`Error::GuardPanicked`](crate::Error::GuardPanicked)). The writer
    /// commits only if the entity is still at the version the guard saw;
    /// otherwise the guard runs again. So keep guards pure (a function of
    /// their input) and quick; a guard may run more than once per request.
    ///
    /// ```
    /// # use idemflow::{Engine, Error, Request, StateMachine};
    /// # #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    /// # #[machine(name = "order", initial = Draft, events = OrderEvent)]
    /// # enum OrderState {
    /// #     #[on(submit = Submitted)] Draft,
    /// #     #[on(pay = Paid)] Submitted,
    /// #     #[terminal] Paid,
    /// # }
    /// let orders = Engine::temporary()?.machine::<OrderState>()?;
    /// orders.guard_to(OrderState::Paid, |input| {
    ///     match input.payload.and_then(|p| p["amount"].as_u64()) {
    ///         Some(amount) if amount > 0 => Ok(()),
    ///         _ => Err("a payment needs a positive amount".to_owned()),
    ///     }
    /// });
    /// orders.create("o-1")?;
    /// orders.fire("o-1", OrderEvent::Submit)?;
    /// let refused = orders.fire("o-1", OrderEvent::Pay);
    /// assert!(matches!(refused, Err(Error::GuardRejected { .. })));
    /// orders.apply("o-1", Request::fire(OrderEvent::Pay).payload(serde_json::json!({"amount": 5})))?;
    /// # Ok::<(), idemflow::Error>(())
    /// ```
    pub fn guard_to<F>(&self, state: M, guard: F)
    where
        F: Fn(&GuardInput<'_, M>) -> std::result::Result<(), String> + Send + Sync + 'static,
    {
        self.add_typed_guard(GuardScope::To(state.name().to_owned()), guard);
    }

    /// Attaches a guard to every transition declared with `event`, whether the
    /// request fires the event or names the target state.
    pub fn guard_event<F>(&self, event: M::Event, guard: F)
    where
        F: Fn(&GuardInput<'_, M>) -> std::result::Result<(), String> + Send + Sync + 'static,
    {
        self.add_typed_guard(GuardScope::Event(event.name().to_owned()), guard);
    }

    fn add_typed_guard<F>(&self, scope: GuardScope, guard: F)
    where
        F: Fn(&GuardInput<'_, M>) -> std::result::Result<(), String> + Send + Sync + 'static,
    {
        let guard = Arc::new(guard);
        self.runtime.add_guard(move |guards| {
            guards.with(scope, move |input: &NamedGuardInput<'_>| {
                let typed = GuardInput::<M>::from_named(input)
                    .map_err(|error| format!("guard could not read the entity: {error}"))?;
                guard(&typed)
            })
        });
    }

    /// Stores a keyed request to apply to `id` after `after` (by the engine's
    /// clock): a durable timer, fired by the background runner (or
    /// [`Engine::run_due_timers`](crate::Engine::run_due_timers)) through the
    /// same write path as every request. The key identifies the timer:
    /// scheduling the same key and request again is a no-op (one timer), the
    /// same key with another request is
    /// [`Error::KeyReused`](crate::Error::KeyReused), and a request without
    /// a key is [`Error::InvalidInput`](crate::Error::InvalidInput). When it
    /// fires, the key is bound to the request as for any request, so a
    /// client's retry with that key replays the outcome.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use idemflow::{Engine, Request, StateMachine};
    /// use idemflow::testing::ManualClock;
    /// # #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    /// # #[machine(name = "invoice", initial = Draft, events = InvoiceEvent)]
    /// # enum Invoice {
    /// #     #[on(send = Sent)] Draft,
    /// #     #[timeout(after = "30m", fire = expire)]
    /// #     #[on(pay = Paid, expire = Expired)] Sent,
    /// #     #[terminal] Paid,
    /// #     #[terminal] Expired,
    /// # }
    /// let clock = ManualClock::new(1_800_000_000_000);
    /// let engine = Engine::builder().clock(clock.clone()).timers(false).temporary()?;
    /// let invoices = engine.machine::<Invoice>()?;
    /// invoices.create("i-1")?;
    /// invoices.fire("i-1", InvoiceEvent::Send)?;
    /// // Pay in 5 minutes (say, a standing order):
    /// let timer = invoices.schedule("i-1", Duration::from_secs(300),
    ///     Request::fire(InvoiceEvent::Pay).key("pay-i-1"))?;
    /// assert_eq!(timer.due_at, 1_800_000_300_000);
    /// assert_eq!(invoices.scheduled("i-1")?.len(), 2); // with the declared 30 min timeout
    /// clock.advance(Duration::from_secs(300));
    /// assert_eq!(engine.run_due_timers()?, 1);
    /// assert_eq!(invoices.get("i-1")?.unwrap().state, Invoice::Paid);
    /// // The timeout of `Sent` was disarmed when the invoice left it.
    /// assert!(invoices.scheduled("i-1")?.is_empty());
    /// # Ok::<(), idemflow::Error>(())
    /// ```
    pub fn schedule(
        &self,
        id: &str,
        after: std::time::Duration,
        request: Request<M>,
    ) -> Result<ScheduledTimer> {
        self.engine
            .inner
            .schedule(&self.runtime, id, after, request.spec)
    }

    /// The pending timers of `id`: its declared timeout (if its state has
    /// one) and its scheduled requests, in due order.
    pub fn scheduled(&self, id: &str) -> Result<Vec<ScheduledTimer>> {
        self.engine.inner.scheduled(&self.runtime, id)
    }

    /// Cancels the scheduled request of `id` with this (unscoped) key;
    /// returns whether it was pending (false once it fired).
    pub fn cancel_scheduled(&self, id: &str, key: &str) -> Result<bool> {
        self.engine
            .inner
            .cancel_scheduled(&self.runtime, id, None, key)
    }

    /// Cancels the scheduled request of `id` with this key in `scope`.
    pub fn cancel_scheduled_in(&self, id: &str, scope: &str, key: &str) -> Result<bool> {
        self.engine
            .inner
            .cancel_scheduled(&self.runtime, id, Some(scope), key)
    }

    /// Moves a pending scheduled request to `after` from now: cancel and
    /// schedule again, with the request it had. Returns the new timer, or
    /// `None` if nothing was pending under that key.
    pub fn reschedule(
        &self,
        id: &str,
        key: &str,
        after: std::time::Duration,
    ) -> Result<Option<ScheduledTimer>> {
        self.engine.inner.reschedule(&self.runtime, id, key, after)
    }

    /// The name-based handle of the same machine.
    pub fn named(&self) -> NamedMachine {
        NamedMachine::new(self.engine.clone(), self.runtime.clone())
    }

    /// The engine this handle belongs to.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}
