//! One runtime per machine: its live rules, its store and its guards, shared
//! by every handle of the machine (typed or by name, obtained before or after
//! a change of the definition).
//!
//! Installing a definition runs on the writer (under the leadership that
//! every commit takes), in one step: check the stored definition against
//! the new one and the stored data, store the new version, and swap the live
//! rules. So no commit is ever decided under a definition that is no longer
//! the current one: commits before the step used the old rules, commits after
//! it the new ones.
//!
//! On a database that several processes share (PostgreSQL), another process
//! may store a new version at any time: each commit checks, inside its
//! atomic step, that the live version is the stored one, and otherwise
//! adopts the stored definition ([`LiveDefinition::adopt`]) and decides
//! under it. Two processes storing definitions at once: the second sees
//! that the stored version moved (`save_definition` answers `false`) and
//! plans again against it.

use std::sync::{Arc, RwLock};

use super::{lock, EngineInner};
use crate::decide::MachineRules;
use crate::definitions::{
    describe_changes, removed_names, state_renames, still_used, DefinitionVersion,
};
use crate::error::{Error, Result};
use crate::guard::Guards;
use crate::machine::MachineDef;
use crate::observe::{self, Call, Subject};
use crate::store::{LiveDefinition, MachineStore, Store};
use crate::write::jobs::Task;

/// The rules of the current definition and its stored version.
pub(crate) struct LiveRules {
    pub(crate) version: u64,
    pub(crate) rules: MachineRules,
}

/// A machine's live rules, store and guards, shared by every handle on it.
pub(crate) struct MachineRuntime {
    name: String,
    live: RwLock<Arc<LiveRules>>,
    pub(crate) store: Arc<dyn MachineStore>,
    guards: RwLock<Arc<Guards>>,
}

impl MachineRuntime {
    /// The rules as they are now: a snapshot.
    pub(crate) fn rules(&self) -> Arc<LiveRules> {
        self.live
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_rules(&self, version: u64, def: MachineDef) {
        *self
            .live
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(LiveRules {
            version,
            rules: MachineRules::new(def),
        });
    }

    /// The guards as they are now: a snapshot to run without holding a lock.
    pub(crate) fn guards(&self) -> Arc<Guards> {
        self.guards
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Adds a guard (a new snapshot replaces the old one).
    pub(crate) fn add_guard(&self, add: impl FnOnce(&Guards) -> Guards) {
        let mut guards = self
            .guards
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *guards = Arc::new(add(&guards));
    }

    /// The machine's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Renames the live definition declares whose former names entities may
    /// still hold: (former name, current name).
    pub(crate) fn pending_renames(&self) -> Vec<(String, String)> {
        state_renames(self.rules().rules.def())
    }
}

impl LiveDefinition for MachineRuntime {
    fn version(&self) -> u64 {
        self.rules().version
    }

    fn adopt(&self, version: u64, definition: MachineDef) {
        tracing::info!(
            machine = self.name,
            version,
            "adopted a definition another process stored"
        );
        self.set_rules(version, definition);
    }
}

impl EngineInner {
    pub(super) fn runtime_for(&self, def: MachineDef) -> Result<Arc<MachineRuntime>> {
        let name = def.name.clone();
        observe::call(Call::Install, Subject::machine(&name), || self.install(def))
    }

    fn install(&self, def: MachineDef) -> Result<Arc<MachineRuntime>> {
        def.validate()?;
        let mut machines = lock(&self.machines);
        let existing = machines.get(&def.name).cloned();
        if let Some(runtime) = &existing {
            if runtime.rules().rules.def() == &def {
                return Ok(runtime.clone());
            }
        }
        let runtime = match existing {
            Some(runtime) => runtime,
            None => {
                // The trees must exist before a reader opens them.
                let name = def.name.clone();
                let task: Task = Box::new(move |writer| writer.prepare_machine(&name).map(|()| 0));
                self.run_task(task, "preparing a machine's storage")?;
                Arc::new(MachineRuntime {
                    name: def.name.clone(),
                    live: RwLock::new(Arc::new(LiveRules {
                        version: 0,
                        rules: MachineRules::new(def.clone()),
                    })),
                    store: self.store.machine(&def.name)?,
                    guards: RwLock::new(Arc::default()),
                })
            }
        };
        let store = self.store.clone();
        let installed = runtime.clone();
        let now = self.clock.now_ms();
        let task: Task = Box::new(move |writer| {
            // Planned again when another process stored a version meanwhile
            // (a database shared by several processes).
            for _ in 0..INSTALL_ATTEMPTS {
                let version = match plan(&*store, &*installed.store, &def, now)? {
                    Plan::Keep(version) => version,
                    Plan::Store(version) => {
                        if !writer.save_definition(&version)? {
                            continue;
                        }
                        observe::definition_stored(
                            &def.name,
                            version.version,
                            version.changes.len(),
                        );
                        version.version
                    }
                };
                installed.set_rules(version, def);
                return Ok(version);
            }
            Err(Error::storage(
                "storing a machine definition",
                std::io::Error::other(
                    "other processes kept storing definitions of this machine meanwhile",
                ),
            ))
        });
        self.run_task(task, "storing a machine definition")?;
        machines.insert(runtime.name().to_owned(), runtime.clone());
        Ok(runtime)
    }

    /// The runtime of a machine a timer belongs to.
    pub(super) fn runtime_by_name_for_timers(&self, name: &str) -> Result<Arc<MachineRuntime>> {
        self.runtime_by_name(name)
    }

    pub(super) fn runtime_by_name(&self, name: &str) -> Result<Arc<MachineRuntime>> {
        if let Some(runtime) = lock(&self.machines).get(name) {
            return Ok(runtime.clone());
        }
        match self.store.definition(name)? {
            Some(def) => self.runtime_for(def),
            None => Err(Error::UnknownMachine {
                machine: name.to_owned(),
            }),
        }
    }

    /// Moves one batch of entities still stored under a former name of a
    /// state to the current name (each batch its own step on the writer, so
    /// requests interleave); returns how many moved, 0 when none is left.
    /// Idempotent and resumable: what is left is simply what the state index
    /// still lists under a former name. The housekeeper runs it in the
    /// background too.
    pub(crate) fn migrate_step(&self, runtime: &MachineRuntime) -> Result<u64> {
        for (from, to) in runtime.pending_renames() {
            let (machine, from, to) = (runtime.name().to_owned(), from.clone(), to.clone());
            let names = (from.clone(), to.clone());
            let task: Task =
                Box::new(move |writer| writer.migrate_state(&machine, &from, &to, MIGRATION_BATCH));
            let moved = self.run_task(task, "migrating a renamed state")?;
            if moved > 0 {
                observe::migrated(runtime.name(), &names.0, &names.1, moved);
                return Ok(moved);
            }
        }
        Ok(0)
    }
}

/// How many times installing a definition plans again when other processes
/// store definitions of the same machine meanwhile.
const INSTALL_ATTEMPTS: usize = 8;

/// How many entities one migration step moves.
pub(crate) const MIGRATION_BATCH: usize = 512;

/// What installing a definition does.
enum Plan {
    /// The stored definition is this one, at this version.
    Keep(u64),
    /// Store this new version.
    Store(DefinitionVersion),
}

/// Decides whether `new` may replace the stored definition: every state and
/// event name that stored data still uses must be a current name or an alias.
fn plan(store: &dyn Store, machine: &dyn MachineStore, new: &MachineDef, now: u64) -> Result<Plan> {
    let stored = store.definition(&new.name)?;
    let version = store.definition_version(&new.name)?.unwrap_or(0);
    if let Some(stored) = &stored {
        if stored == new {
            return Ok(Plan::Keep(version));
        }
        let (states, events) = removed_names(stored, new);
        let missing = still_used(machine.references(&states, &events)?);
        if !missing.is_empty() {
            return Err(Error::DefinitionMismatch {
                machine: new.name.clone(),
                missing,
            });
        }
    }
    Ok(Plan::Store(DefinitionVersion {
        version: version + 1,
        at: Some(now),
        changes: describe_changes(stored.as_ref(), new),
        definition: new.clone(),
    }))
}
