//! The name-based handle of a machine.

use std::sync::Arc;

use serde_json::Value;

use super::{Engine, MachineRuntime};
use crate::decide::{CreateSpec, NamedGuardInput};
use crate::error::{Error, InputField, Result};
use crate::guard::GuardScope;
use crate::machine::MachineDef;
use crate::observe::{self, Call, Subject};
use crate::outcome::{EntityRecord, HistoryRecord, OutcomeRecord};
use crate::request::{Create, NamedRequest};
use crate::timers::ScheduledTimer;

/// The name-based handle of one machine, for tools, the CLI and HTTP services
/// that have no Rust type for it: states and events are given and returned by
/// name. Same semantics as [`Machine`](crate::Machine).
///
/// ```
/// use idemflow::{Engine, MachineDef, NamedRequest};
///
/// let engine = Engine::temporary()?;
/// let doors = engine.register(
///     MachineDef::new("door", "closed")
///         .state("closed")
///         .terminal_state("open")
///         .transition("closed", "open", "open"),
/// )?;
/// doors.create("front")?;
/// let outcome = doors.apply("front", NamedRequest::fire("open").key("k-1"))?;
/// assert_eq!((outcome.state.as_str(), outcome.version), ("open", 2));
/// assert!(doors.apply("front", NamedRequest::to("nowhere")).is_err());
/// # Ok::<(), idemflow::Error>(())
/// ```
#[derive(Clone)]
pub struct NamedMachine {
    engine: Engine,
    runtime: Arc<MachineRuntime>,
}

impl std::fmt::Debug for NamedMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedMachine")
            .field("name", &self.runtime.name())
            .finish_non_exhaustive()
    }
}

impl NamedMachine {
    pub(super) fn new(engine: Engine, runtime: Arc<MachineRuntime>) -> Self {
        NamedMachine { engine, runtime }
    }

    /// The machine's current definition (every handle of a machine uses
    /// the current one, also after another handle installed a newer one).
    pub fn definition(&self) -> MachineDef {
        self.runtime.rules().rules.def().clone()
    }

    /// The stored version of the current definition (1 for the first one
    /// stored; see [`Engine::definition_log`](crate::Engine::definition_log)).
    pub fn definition_version(&self) -> u64 {
        self.runtime.rules().version
    }

    /// Creates entity `id` (a no-op if it exists).
    pub fn create(&self, id: &str) -> Result<OutcomeRecord> {
        self.engine
            .inner
            .create(&self.runtime, id, CreateSpec::default())
    }

    /// Creates entity `id` recording a payload and an actor.
    pub fn create_with(
        &self,
        id: &str,
        payload: Option<Value>,
        actor: Option<String>,
    ) -> Result<OutcomeRecord> {
        self.engine.inner.create(
            &self.runtime,
            id,
            CreateSpec {
                payload,
                actor,
                ..CreateSpec::default()
            },
        )
    }

    /// Creates entity `id` with options (key, scope, payload, actor); see
    /// [`Create`].
    pub fn create_request(&self, id: &str, create: Create) -> Result<OutcomeRecord> {
        self.engine.inner.create(&self.runtime, id, create.spec)
    }

    /// Runs a request given by names. An unknown state or event name is
    /// [`Error::InvalidInput`].
    pub fn apply(&self, id: &str, request: NamedRequest) -> Result<OutcomeRecord> {
        self.engine.inner.apply(&self.runtime, id, request.spec)
    }

    /// The entity's stored record, if it exists.
    pub fn get(&self, id: &str) -> Result<Option<EntityRecord>> {
        observe::call(Call::Get, Subject::entity(self.runtime.name(), id), || {
            self.engine.inner.limits.check_id(id)?;
            let record = self.settled(self.runtime.store.get(id))?;
            // A record not yet migrated after a rename reads as the current name.
            Ok(record.map(|mut record| {
                let live = self.runtime.rules();
                let current = live.rules.canonical_state(&record.state);
                if current != record.state {
                    record.state = current.to_owned();
                }
                record
            }))
        })
    }

    /// The entity's history, oldest first.
    pub fn history(&self, id: &str) -> Result<Vec<HistoryRecord>> {
        observe::call(
            Call::History,
            Subject::entity(self.runtime.name(), id),
            || {
                self.engine.inner.limits.check_id(id)?;
                self.settled(self.runtime.store.history(id))
            },
        )
    }

    /// Up to `limit` ids in the state named `state` after `after`, in id order.
    /// Entities still stored under a former name of the state (a rename the
    /// engine is migrating) are included.
    pub fn in_state(&self, state: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let at = Subject::machine(self.runtime.name());
        observe::call(Call::InState, at, || self.ids_in_state(state, after, limit))
    }

    fn ids_in_state(&self, state: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.check_state(state)?;
        let live = self.runtime.rules();
        let mut names = live.rules.state_names(live.rules.canonical_state(state));
        // Former names first: an entity the background migration moves to
        // the current name between the two scans is then seen at least once.
        names.rotate_left(1);
        let ids = if names.len() == 1 {
            self.runtime.store.in_state(names[0], after, limit)
        } else {
            let mut ids = std::collections::BTreeSet::new();
            for name in names {
                ids.extend(self.runtime.store.in_state(name, after, limit)?);
            }
            Ok(ids.into_iter().take(limit).collect())
        };
        self.settled(ids)
    }

    /// Every state with its number of entities, in declaration order
    /// (entities under a former name count for the current one). Like any
    /// count taken while requests commit, it is not a snapshot across states.
    pub fn count_by_state(&self) -> Result<Vec<(String, u64)>> {
        let at = Subject::machine(self.runtime.name());
        observe::call(Call::CountByState, at, || self.counts_by_state())
    }

    fn counts_by_state(&self) -> Result<Vec<(String, u64)>> {
        let live = self.runtime.rules();
        let counts = live
            .rules
            .def()
            .states
            .iter()
            .map(|state| {
                let mut count = 0;
                for name in live.rules.state_names(&state.name) {
                    count += self.runtime.store.count_in_state(name)?;
                }
                Ok((state.name.clone(), count))
            })
            .collect();
        self.settled(counts)
    }

    /// How many entities are still stored under a former name of a state
    /// (renamed by `#[alias]`): the engine migrates them in the background;
    /// reads already count them under the current name.
    pub fn pending_migration(&self) -> Result<u64> {
        let mut left = 0;
        for (former, _) in self.runtime.pending_renames() {
            left += self.runtime.store.count_in_state(&former)?;
        }
        Ok(left)
    }

    /// Migrates one batch (up to 512) of entities stored under a former
    /// state name to the current name; returns how many moved (0 when none
    /// is left). Idempotent and resumable; the engine also does this in the
    /// background. The CLI's `migrate` command loops over it to show progress.
    pub fn migrate_step(&self) -> Result<u64> {
        self.engine.inner.migrate_step(&self.runtime)
    }

    /// Stores a keyed request to apply to `id` after `after`; see
    /// [`Machine::schedule`](crate::Machine::schedule).
    pub fn schedule(
        &self,
        id: &str,
        after: std::time::Duration,
        request: NamedRequest,
    ) -> Result<ScheduledTimer> {
        self.engine
            .inner
            .schedule(&self.runtime, id, after, request.spec)
    }

    /// The pending timers of `id`, in due order.
    pub fn scheduled(&self, id: &str) -> Result<Vec<ScheduledTimer>> {
        self.engine.inner.scheduled(&self.runtime, id)
    }

    /// Cancels the scheduled request of `id` with this (unscoped) key;
    /// returns whether it was pending.
    pub fn cancel_scheduled(&self, id: &str, key: &str) -> Result<bool> {
        self.engine
            .inner
            .cancel_scheduled(&self.runtime, id, None, key)
    }

    /// How many idempotency key records the machine stores: live ones, and
    /// expired ones the purge has not deleted yet.
    pub fn key_count(&self) -> Result<u64> {
        self.settled(self.runtime.store.key_count())
    }

    /// Under `Immediate`, a read answers only once what it read is durable,
    /// so no caller sees a change that a crash could still take back.
    fn settled<T>(&self, read: Result<T>) -> Result<T> {
        let value = read?;
        self.engine.inner.settle_read()?;
        Ok(value)
    }

    /// Attaches a name-based guard to every transition into the state `state`.
    /// Same rules as [`Machine::guard_to`](crate::Machine::guard_to): it runs
    /// on the requesting caller's thread, may run more than once, and must be
    /// pure and quick.
    pub fn guard_to<F>(&self, state: &str, guard: F) -> Result<()>
    where
        F: Fn(&NamedGuardInput<'_>) -> std::result::Result<(), String> + Send + Sync + 'static,
    {
        self.check_state(state)?;
        let scope = GuardScope::To(state.to_owned());
        let guard = Arc::new(guard);
        self.runtime.add_guard(move |guards| {
            guards.with(scope, move |input: &NamedGuardInput<'_>| guard(input))
        });
        Ok(())
    }

    fn check_state(&self, state: &str) -> Result<()> {
        if self
            .runtime
            .rules()
            .rules
            .def()
            .resolve_state(state)
            .is_some()
        {
            Ok(())
        } else {
            Err(Error::invalid_input(
                InputField::State,
                format!(
                    "{state:?} is not a state of machine {}",
                    self.runtime.name()
                ),
            ))
        }
    }

    /// The engine this handle belongs to.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}
