//! Async handles for tokio services (feature `tokio`): [`AsyncMachine`] and
//! [`NamedAsyncMachine`].
//!
//! The engine blocks: a request may wait for a disk sync (under
//! [`Durability::Immediate`](crate::Durability::Immediate)) or for the batch
//! it joined. An async handle runs each call on tokio's blocking pool
//! ([`tokio::task::spawn_blocking`]), so the runtime's worker threads never
//! wait for the disk, and awaits its answer. The call runs inside the span
//! that was current when it was made, so its `idemflow` span is a child of
//! the caller's (an HTTP request's, say).
//!
//! # Dropping a future does not cancel the request
//!
//! Once polled, a call is on the blocking pool and **runs to completion**,
//! whether or not its future is still awaited: dropping the future (a client
//! that went away, a `tokio::time::timeout`, the losing branch of a
//! `select!`) only drops the answer, never the commit. A request whose
//! answer was lost this way may have been applied. The safe way on is the
//! one for any unknown outcome: **send the request again with the same
//! idempotency key**. If the first one committed, the retry is a replay of
//! its outcome (`is_replay()`); if not, the retry applies it, once. A
//! request without a key is safe to repeat when its target state makes it
//! a no-op (see `docs/semantics.md`); otherwise give it a key.
//!
//! # Errors
//!
//! Every error is an [`Error`]: the engine's own, or, if the blocking task
//! itself failed (it panicked, or the runtime shut down before it ran), an
//! [`Error::CommitUnknown`] for a call that writes (retry with the same key)
//! and an [`Error::Storage`] for a read. A call made outside a tokio runtime
//! is an [`Error::InvalidInput`] about the configuration: no call ever
//! panics.
//!
//! ```
//! # use idemflow::{Engine, Request, StateMachine};
//! # #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
//! # #[machine(name = "order", initial = Draft, events = OrderEvent)]
//! # enum OrderState {
//! #     #[on(submit = Submitted)] Draft,
//! #     #[on(pay = Paid)] Submitted,
//! #     #[terminal] Paid,
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), idemflow::Error> {
//! let engine = Engine::temporary()?;
//! let orders = engine.machine_async::<OrderState>().await?;
//! orders.create("o-1").await?;
//! orders.fire("o-1", OrderEvent::Submit).await?;
//! let pay = Request::to(OrderState::Paid).key("pay-o-1");
//! assert!(orders.apply("o-1", pay.clone()).await?.was_applied());
//! assert!(orders.apply("o-1", pay).await?.is_replay());
//! // The name-based handle of the same machine, for HTTP services:
//! let named = orders.named();
//! assert_eq!(named.get("o-1").await?.map(|record| record.version), Some(3));
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use serde_json::Value;

use crate::engine::{Engine, Machine, NamedMachine};
use crate::error::{Error, InputField, Result};
use crate::machine::{MachineDef, StateMachine};
use crate::outcome::{Entity, EntityRecord, HistoryEntry, HistoryRecord, Outcome, OutcomeRecord};
use crate::request::{Create, NamedRequest, Request};
use crate::timers::ScheduledTimer;

/// What a failed blocking task means for its caller.
enum Failure {
    /// A call that may write: its outcome is unknown.
    Write { machine: String, id: String },
    /// A call that only reads, or a task about the engine itself.
    Read(&'static str),
}

impl Failure {
    fn write(machine: &str, id: &str) -> Self {
        Failure::Write {
            machine: machine.to_owned(),
            id: id.to_owned(),
        }
    }

    fn into_error(self, join: &tokio::task::JoinError) -> Error {
        let reason = if join.is_panic() {
            "the blocking task running the call panicked".to_owned()
        } else {
            "the blocking task running the call was cancelled (the runtime is shutting down)"
                .to_owned()
        };
        match self {
            Failure::Write { machine, id } => Error::CommitUnknown {
                machine,
                id,
                reason,
            },
            Failure::Read(what) => Error::storage(what, std::io::Error::other(reason)),
        }
    }
}

/// Runs a blocking engine call on tokio's blocking pool, in the caller's
/// span, and turns a failed task into an [`Error`].
async fn run<T, F>(failure: Failure, call: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        Error::invalid_input(
            InputField::Config,
            "an async idemflow handle needs a tokio runtime: call it from a task of one \
             (or use the blocking handle)",
        )
    })?;
    let span = tracing::Span::current();
    match runtime.spawn_blocking(move || span.in_scope(call)).await {
        Ok(result) => result,
        Err(join) => Err(failure.into_error(&join)),
    }
}

/// The async handle of a machine `M` (feature `tokio`): the methods of
/// [`Machine`], as `async fn`s that run the engine on tokio's blocking pool.
/// Cheap to clone, `Send + Sync`.
///
/// **Dropping a future does not cancel its request**: see the
/// [module documentation](crate::asynchronous) for why, and for the safe
/// way on after a dropped future or a timeout (a retry with the same key).
///
/// Get one with [`Engine::machine_async`] or from a [`Machine`]
/// (`AsyncMachine::from(machine)`); [`named`](AsyncMachine::named) gives
/// the name-based async handle of the same machine.
pub struct AsyncMachine<M: StateMachine> {
    machine: Machine<M>,
}

impl<M: StateMachine> Clone for AsyncMachine<M> {
    fn clone(&self) -> Self {
        AsyncMachine {
            machine: self.machine.clone(),
        }
    }
}

impl<M: StateMachine> std::fmt::Debug for AsyncMachine<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncMachine")
            .field("name", &M::machine_name())
            .finish_non_exhaustive()
    }
}

impl<M: StateMachine> From<Machine<M>> for AsyncMachine<M> {
    fn from(machine: Machine<M>) -> Self {
        AsyncMachine { machine }
    }
}

impl Engine {
    /// The async handle of machine `M` (feature `tokio`): like
    /// [`Engine::machine`], which it runs on tokio's blocking pool (storing
    /// the definition may write).
    pub async fn machine_async<M: StateMachine>(&self) -> Result<AsyncMachine<M>> {
        let engine = self.clone();
        run(Failure::Read("installing a machine"), move || {
            engine.machine::<M>()
        })
        .await
        .map(AsyncMachine::from)
    }
}

impl<M: StateMachine> AsyncMachine<M> {
    fn failure(&self, id: &str) -> Failure {
        Failure::write(M::machine_name(), id)
    }

    /// Creates entity `id`; see [`Machine::create`].
    pub async fn create(&self, id: &str) -> Result<Outcome<M>> {
        let (machine, owned) = (self.machine.clone(), id.to_owned());
        run(self.failure(id), move || machine.create(&owned)).await
    }

    /// Creates entity `id` with a payload and an actor; see [`Machine::create_with`].
    pub async fn create_with(
        &self,
        id: &str,
        payload: Option<Value>,
        actor: Option<String>,
    ) -> Result<Outcome<M>> {
        let (machine, owned) = (self.machine.clone(), id.to_owned());
        run(self.failure(id), move || {
            machine.create_with(&owned, payload, actor)
        })
        .await
    }

    /// Creates entity `id` with options (a key: a retry replays the
    /// creation); see [`Machine::create_request`].
    pub async fn create_request(&self, id: &str, create: Create) -> Result<Outcome<M>> {
        let (machine, owned) = (self.machine.clone(), id.to_owned());
        run(self.failure(id), move || {
            machine.create_request(&owned, create)
        })
        .await
    }

    /// Runs a request with all its options; see [`Machine::apply`].
    pub async fn apply(&self, id: &str, request: Request<M>) -> Result<Outcome<M>> {
        let (machine, owned) = (self.machine.clone(), id.to_owned());
        run(self.failure(id), move || machine.apply(&owned, request)).await
    }

    /// Moves entity `id` to `state`; see [`Machine::transition`].
    pub async fn transition(&self, id: &str, state: M) -> Result<Outcome<M>> {
        self.apply(id, Request::to(state)).await
    }

    /// Fires `event` on entity `id`; see [`Machine::fire`].
    pub async fn fire(&self, id: &str, event: M::Event) -> Result<Outcome<M>> {
        self.apply(id, Request::fire(event)).await
    }

    /// The entity's current snapshot; see [`Machine::get`].
    pub async fn get(&self, id: &str) -> Result<Option<Entity<M>>> {
        let (machine, owned) = (self.machine.clone(), id.to_owned());
        run(Failure::Read("reading an entity"), move || {
            machine.get(&owned)
        })
        .await
    }

    /// The entity's history, oldest first; see [`Machine::history`].
    pub async fn history(&self, id: &str) -> Result<Vec<HistoryEntry<M>>> {
        let (machine, owned) = (self.machine.clone(), id.to_owned());
        run(Failure::Read("reading a history"), move || {
            machine.history(&owned)
        })
        .await
    }

    /// Every id in `state`; see [`Machine::in_state`].
    pub async fn in_state(&self, state: M) -> Result<Vec<String>> {
        let machine = self.machine.clone();
        run(Failure::Read("reading the state index"), move || {
            machine.in_state(state)
        })
        .await
    }

    /// A page of the ids in `state`; see [`Machine::in_state_page`].
    pub async fn in_state_page(
        &self,
        state: M,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let (machine, after) = (self.machine.clone(), after.map(str::to_owned));
        run(Failure::Read("reading the state index"), move || {
            machine.in_state_page(state, after.as_deref(), limit)
        })
        .await
    }

    /// Every state with its number of entities; see [`Machine::count_by_state`].
    pub async fn count_by_state(&self) -> Result<Vec<(M, u64)>> {
        let machine = self.machine.clone();
        run(Failure::Read("counting entities by state"), move || {
            machine.count_by_state()
        })
        .await
    }

    /// Stores a keyed request to apply after `after`; see [`Machine::schedule`].
    pub async fn schedule(
        &self,
        id: &str,
        after: Duration,
        request: Request<M>,
    ) -> Result<ScheduledTimer> {
        let (machine, owned) = (self.machine.clone(), id.to_owned());
        run(self.failure(id), move || {
            machine.schedule(&owned, after, request)
        })
        .await
    }

    /// The pending timers of `id`; see [`Machine::scheduled`].
    pub async fn scheduled(&self, id: &str) -> Result<Vec<ScheduledTimer>> {
        let (machine, owned) = (self.machine.clone(), id.to_owned());
        run(Failure::Read("reading timers"), move || {
            machine.scheduled(&owned)
        })
        .await
    }

    /// Cancels the scheduled request of `id` with this (unscoped) key; see
    /// [`Machine::cancel_scheduled`].
    pub async fn cancel_scheduled(&self, id: &str, key: &str) -> Result<bool> {
        let (machine, owned, key) = (self.machine.clone(), id.to_owned(), key.to_owned());
        run(self.failure(id), move || {
            machine.cancel_scheduled(&owned, &key)
        })
        .await
    }

    /// Cancels the scheduled request of `id` with this key in `scope`; see
    /// [`Machine::cancel_scheduled_in`].
    pub async fn cancel_scheduled_in(&self, id: &str, scope: &str, key: &str) -> Result<bool> {
        let machine = self.machine.clone();
        let (owned, scope, key) = (id.to_owned(), scope.to_owned(), key.to_owned());
        run(self.failure(id), move || {
            machine.cancel_scheduled_in(&owned, &scope, &key)
        })
        .await
    }

    /// The name-based async handle of the same machine.
    pub fn named(&self) -> NamedAsyncMachine {
        NamedAsyncMachine::from(self.machine.named())
    }

    /// The blocking handle of the same machine (for guards, which are
    /// registered on it and apply to every handle of the machine).
    pub fn blocking(&self) -> &Machine<M> {
        &self.machine
    }
}

/// The name-based async handle of a machine (feature `tokio`): the methods
/// of [`NamedMachine`] as `async fn`s on tokio's blocking pool, for services
/// that work with state and event names. Same cancellation rule as
/// [`AsyncMachine`]: dropping a future does not cancel its request.
///
/// Get one with [`AsyncMachine::named`] or from a [`NamedMachine`]
/// (`NamedAsyncMachine::from(engine.register(def)?)`).
#[derive(Clone)]
pub struct NamedAsyncMachine {
    machine: NamedMachine,
    /// The machine's name (for the errors of failed tasks).
    name: std::sync::Arc<str>,
}

impl std::fmt::Debug for NamedAsyncMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedAsyncMachine")
            .field("machine", &self.machine)
            .finish()
    }
}

impl From<NamedMachine> for NamedAsyncMachine {
    fn from(machine: NamedMachine) -> Self {
        let name = machine.definition().name.into();
        NamedAsyncMachine { machine, name }
    }
}

impl NamedAsyncMachine {
    fn failure(&self, id: &str) -> Failure {
        Failure::write(&self.name, id)
    }

    /// The machine's current definition (no I/O).
    pub fn definition(&self) -> MachineDef {
        self.machine.definition()
    }

    /// Creates entity `id`; see [`NamedMachine::create`].
    pub async fn create(&self, id: &str) -> Result<OutcomeRecord> {
        let (machine, owned) = (self.machine.clone(), id.to_owned());
        run(self.failure(id), move || machine.create(&owned)).await
    }

    /// Creates entity `id` with a payload and an actor; see
    /// [`NamedMachine::create_with`].
    pub async fn create_with(
        &self,
        id: &str,
        payload: Option<Value>,
        actor: Option<String>,
    ) -> Result<OutcomeRecord> {
        let (machine, owned) = (self.machine.clone(), id.to_owned());
        run(self.failure(id), move || {
            machine.create_with(&owned, payload, actor)
        })
        .await
    }

    /// Creates entity `id` with options; see [`NamedMachine::create_request`].
    pub async fn create_request(&self, id: &str, create: Create) -> Result<OutcomeRecord> {
        let (machine, owned) = (self.machine.clone(), id.to_owned());
        run(self.failure(id), move || {
            machine.create_request(&owned, create)
        })
        .await
    }

    /// Runs a request given by names; see [`NamedMachine::apply`].
    pub async fn apply(&self, id: &str, request: NamedRequest) -> Result<OutcomeRecord> {
        let (machine, owned) = (self.machine.clone(), id.to_owned());
        run(self.failure(id), move || machine.apply(&owned, request)).await
    }

    /// The entity's stored record; see [`NamedMachine::get`].
    pub async fn get(&self, id: &str) -> Result<Option<EntityRecord>> {
        let (machine, owned) = (self.machine.clone(), id.to_owned());
        run(Failure::Read("reading an entity"), move || {
            machine.get(&owned)
        })
        .await
    }

    /// The entity's history; see [`NamedMachine::history`].
    pub async fn history(&self, id: &str) -> Result<Vec<HistoryRecord>> {
        let (machine, owned) = (self.machine.clone(), id.to_owned());
        run(Failure::Read("reading a history"), move || {
            machine.history(&owned)
        })
        .await
    }

    /// A page of the ids in the state named `state`; see [`NamedMachine::in_state`].
    pub async fn in_state(
        &self,
        state: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let machine = self.machine.clone();
        let (state, after) = (state.to_owned(), after.map(str::to_owned));
        run(Failure::Read("reading the state index"), move || {
            machine.in_state(&state, after.as_deref(), limit)
        })
        .await
    }

    /// Every state with its number of entities; see [`NamedMachine::count_by_state`].
    pub async fn count_by_state(&self) -> Result<Vec<(String, u64)>> {
        let machine = self.machine.clone();
        run(Failure::Read("counting entities by state"), move || {
            machine.count_by_state()
        })
        .await
    }

    /// Stores a keyed request to apply after `after`; see [`NamedMachine::schedule`].
    pub async fn schedule(
        &self,
        id: &str,
        after: Duration,
        request: NamedRequest,
    ) -> Result<ScheduledTimer> {
        let (machine, owned) = (self.machine.clone(), id.to_owned());
        run(self.failure(id), move || {
            machine.schedule(&owned, after, request)
        })
        .await
    }

    /// The pending timers of `id`; see [`NamedMachine::scheduled`].
    pub async fn scheduled(&self, id: &str) -> Result<Vec<ScheduledTimer>> {
        let (machine, owned) = (self.machine.clone(), id.to_owned());
        run(Failure::Read("reading timers"), move || {
            machine.scheduled(&owned)
        })
        .await
    }

    /// Cancels the scheduled request of `id` with this (unscoped) key; see
    /// [`NamedMachine::cancel_scheduled`].
    pub async fn cancel_scheduled(&self, id: &str, key: &str) -> Result<bool> {
        let (machine, owned, key) = (self.machine.clone(), id.to_owned(), key.to_owned());
        run(self.failure(id), move || {
            machine.cancel_scheduled(&owned, &key)
        })
        .await
    }

    /// The blocking handle of the same machine.
    pub fn blocking(&self) -> &NamedMachine {
        &self.machine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime")
    }

    #[test]
    fn a_panicking_write_task_is_commit_unknown() {
        let result: Result<()> =
            runtime().block_on(run(Failure::write("order", "o-1"), || panic!("boom")));
        match result {
            Err(Error::CommitUnknown {
                machine,
                id,
                reason,
            }) => {
                assert_eq!((machine.as_str(), id.as_str()), ("order", "o-1"));
                assert!(reason.contains("panicked"), "{reason}");
            }
            other => panic!("expected CommitUnknown, got {other:?}"),
        }
    }

    #[test]
    fn a_panicking_read_task_is_a_storage_error() {
        let result: Result<()> =
            runtime().block_on(run(Failure::Read("reading an entity"), || panic!("boom")));
        assert!(
            matches!(&result, Err(Error::Storage { context, .. }) if context == "reading an entity"),
            "{result:?}"
        );
    }

    #[test]
    fn outside_a_runtime_a_call_is_an_error_not_a_panic() {
        // Polled by a plain executor, without tokio.
        let future = run(Failure::Read("reading"), || Ok(1));
        let result = block_on_without_tokio(future);
        assert!(
            matches!(
                result,
                Err(Error::InvalidInput {
                    field: InputField::Config,
                    ..
                })
            ),
            "{result:?}"
        );
    }

    /// Polls a future to completion on this thread, without any runtime.
    fn block_on_without_tokio<F: std::future::Future>(future: F) -> F::Output {
        use std::sync::Arc;
        use std::task::{Context, Poll, Wake, Waker};

        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut context = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            match future.as_mut().poll(&mut context) {
                Poll::Ready(output) => return output,
                Poll::Pending => std::thread::park(),
            }
        }
    }
}
