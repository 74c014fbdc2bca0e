//! One runtime per machine: its rules, its store and its guards, shared by
//! every handle of the machine.

use std::sync::{Arc, RwLock};

use super::{lock, EngineInner};
use crate::decide::MachineRules;
use crate::error::{Error, MissingState, Result};
use crate::guard::Guards;
use crate::machine::MachineDef;
use crate::store::MachineStore;
use crate::write::jobs::Task;

/// A machine's rules, store and guards, shared by every handle on it.
pub(crate) struct MachineRuntime {
    pub(crate) rules: MachineRules,
    pub(crate) store: Arc<dyn MachineStore>,
    guards: RwLock<Arc<Guards>>,
}

impl MachineRuntime {
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
        self.rules.name()
    }
}

impl EngineInner {
    pub(super) fn runtime_for(&self, def: MachineDef) -> Result<Arc<MachineRuntime>> {
        def.validate()?;
        let mut machines = lock(&self.machines);
        let previous = machines.get(&def.name).cloned();
        if let Some(runtime) = &previous {
            if runtime.rules.def() == &def {
                return Ok(runtime.clone());
            }
        }
        // The writer checks the stored definition and stores the new one in
        // one step: no commit can move an entity into a removed state between
        // the check and the change. It also creates the machine's trees
        // (readers never create trees).
        let store = self.store.clone();
        let to_install = def.clone();
        let task: Task = Box::new(move |writer| {
            writer.prepare_machine(&to_install.name)?;
            let stored = store.definition(&to_install.name)?;
            match stored {
                Some(stored) if stored == to_install => Ok(0),
                Some(stored) => {
                    check_compatible(&*store.machine(&to_install.name)?, &stored, &to_install)?;
                    writer.save_definition(&to_install).map(|()| 1)
                }
                None => writer.save_definition(&to_install).map(|()| 1),
            }
        });
        self.run_task(task, "storing a machine definition")?;
        let guards = previous.map(|runtime| runtime.guards()).unwrap_or_default();
        let runtime = Arc::new(MachineRuntime {
            store: self.store.machine(&def.name)?,
            rules: MachineRules::new(def.clone()),
            guards: RwLock::new(guards),
        });
        machines.insert(def.name, runtime.clone());
        Ok(runtime)
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
}

/// A new definition may replace the stored one unless it removes a state
/// that stored entities still hold.
fn check_compatible(store: &dyn MachineStore, stored: &MachineDef, new: &MachineDef) -> Result<()> {
    let mut missing = Vec::new();
    for state in &stored.states {
        if !new.has_state(&state.name) {
            let entities = store.count_in_state(&state.name)?;
            if entities > 0 {
                missing.push(MissingState {
                    state: state.name.clone(),
                    entities,
                });
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::DefinitionMismatch {
            machine: new.name.clone(),
            missing,
        })
    }
}
