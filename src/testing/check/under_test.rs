//! What the model is checked against: the [`UnderTest`] contract, what it
//! reads back from storage ([`Stored`]), and the real engine on a temporary
//! on-disk database with a manual clock ([`EngineUnderTest`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::error::Error;
use crate::machine::{MachineEvent, StateMachine};
use crate::outcome::{HistoryRecord, OutboxEvent, OutcomeRecord};
use crate::request::{Create, Request};
use crate::testing::ManualClock;
use crate::{Durability, Engine, Machine};

use super::model::{model_error, ModelError};
use super::ops::{IDS, START_MS};
use super::request::{Req, Target};

/// Ids per state name.
pub(super) type StateIndex = BTreeMap<String, Vec<String>>;

/// What one entity looks like in storage.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Stored {
    /// Each existing entity's history, by id.
    pub(super) histories: BTreeMap<String, Vec<HistoryRecord>>,
    /// Ids per state, from the state index.
    pub(super) index: StateIndex,
    /// The outbox events of the machine, in commit order.
    pub(super) outbox: Vec<OutboxEvent>,
}

/// The system the model is checked against: the engine, or (in this
/// module's tests) a broken double of it.
pub(super) trait UnderTest: Sized {
    /// Opens a fresh one.
    fn start(dir: &Path) -> Result<Self, String>;
    /// Runs a request.
    fn run(&self, req: &Req) -> Result<OutcomeRecord, ModelError>;
    /// Runs the same request twice at once.
    fn run_twice_at_once(&self, req: &Req) -> [Result<OutcomeRecord, ModelError>; 2];
    /// Moves the clock.
    fn advance(&self);
    /// Reads what is stored.
    fn stored(&self) -> Result<Stored, String>;
    /// Closes and opens the database again.
    fn reopen(self, dir: &Path) -> Result<Self, String>;
}

/// The engine, on a temporary on-disk database with a manual clock.
pub(super) struct EngineUnderTest<M: StateMachine> {
    /// The engine.
    engine: Engine,
    /// Its handle on `M`.
    machine: Machine<M>,
    /// The clock it runs on.
    clock: ManualClock,
}

impl<M: StateMachine> EngineUnderTest<M> {
    /// Opens the engine on `dir` (waiting up to 5 s for sled to let go of
    /// a previous handle's lock) and installs `M`.
    fn open(dir: &Path, clock: ManualClock) -> Result<Self, String> {
        let started = std::time::Instant::now();
        loop {
            let opened = Engine::builder()
                .durability(Durability::Buffered)
                .clock(clock.clone())
                .timers(false)
                .open(dir);
            match opened {
                Ok(engine) => {
                    let machine = engine
                        .machine::<M>()
                        .map_err(|error| format!("installing the machine: {error}"))?;
                    return Ok(EngineUnderTest {
                        engine,
                        machine,
                        clock,
                    });
                }
                // sled lets go of its lock a moment after the last handle drops.
                Err(Error::Locked { .. }) if started.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(error) => return Err(format!("opening the database: {error}")),
            }
        }
    }
}

/// The typed transition request that `req` stands for.
fn typed_request<M: StateMachine>(req: &Req, target: &Target) -> Result<Request<M>, ModelError> {
    let unknown = |name: &str| ModelError::Other(format!("{name:?} does not resolve"));
    let mut request = match target {
        Target::To(state) => Request::<M>::to(M::from_name(state).ok_or_else(|| unknown(state))?),
        Target::Fire(event) => {
            Request::fire(M::Event::from_name(event).ok_or_else(|| unknown(event))?)
        }
    };
    if let Some(key) = &req.key {
        request = request.key(key.key.clone());
        if let Some(scope) = &key.scope {
            request = request.scope(scope.clone());
        }
    }
    if let Some(expected) = req.expected {
        request = request.expect_version(expected);
    }
    if let Some(payload) = &req.payload {
        request = request.payload(payload.clone());
    }
    if let Some(actor) = &req.actor {
        request = request.actor(actor.clone());
    }
    Ok(request)
}

/// Runs `req` (a creation or a transition) on `machine`.
fn run_on<M: StateMachine>(machine: &Machine<M>, req: &Req) -> Result<OutcomeRecord, ModelError> {
    let outcome = match &req.target {
        None => {
            let mut create = Create::new();
            if let Some(key) = &req.key {
                create = create.key(key.key.clone());
                if let Some(scope) = &key.scope {
                    create = create.scope(scope.clone());
                }
            }
            if let Some(payload) = &req.payload {
                create = create.payload(payload.clone());
            }
            if let Some(actor) = &req.actor {
                create = create.actor(actor.clone());
            }
            machine.create_request(&req.id, create)
        }
        Some(target) => machine.apply(&req.id, typed_request::<M>(req, target)?),
    };
    outcome
        .map(|outcome| outcome.to_record())
        .map_err(model_error)
}

impl<M: StateMachine> UnderTest for EngineUnderTest<M> {
    fn start(dir: &Path) -> Result<Self, String> {
        EngineUnderTest::open(dir, ManualClock::new(START_MS))
    }

    fn run(&self, req: &Req) -> Result<OutcomeRecord, ModelError> {
        run_on(&self.machine, req)
    }

    fn run_twice_at_once(&self, req: &Req) -> [Result<OutcomeRecord, ModelError>; 2] {
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            let both = [(); 2].map(|()| {
                scope.spawn(|| {
                    barrier.wait();
                    run_on(&self.machine, req)
                })
            });
            both.map(|thread| {
                thread.join().unwrap_or_else(|_| {
                    Err(ModelError::Other(
                        "the request's thread panicked".to_owned(),
                    ))
                })
            })
        })
    }

    fn advance(&self) {
        self.clock.advance(Duration::from_millis(1));
    }

    fn stored(&self) -> Result<Stored, String> {
        let failed = |what: &str, error: Error| format!("reading {what}: {error}");
        let named = self.machine.named();
        let mut histories = BTreeMap::new();
        for id in IDS {
            let record = named.get(id).map_err(|e| failed("a record", e))?;
            let history = named.history(id).map_err(|e| failed("a history", e))?;
            // The typed views must read what the named ones do.
            let typed = self
                .machine
                .history(id)
                .map_err(|e| failed("a typed history", e))?;
            if typed.len() != history.len() {
                return Err(format!(
                    "{id}: the typed history has {} entries, the named one {}",
                    typed.len(),
                    history.len()
                ));
            }
            match (record, history.last()) {
                (None, None) => continue,
                (Some(record), Some(last)) => {
                    if record.version != history.len() as u64 || record.state != last.to {
                        return Err(format!(
                            "{id}: the record (state {:?}, version {}) disagrees with its history (last state {:?}, {} entries)",
                            record.state,
                            record.version,
                            last.to,
                            history.len()
                        ));
                    }
                    let entity = self
                        .machine
                        .get(id)
                        .map_err(|e| failed("a typed record", e))?;
                    if entity.map(|entity| (entity.state.name(), entity.version))
                        != Some((record.state.as_str(), record.version))
                    {
                        return Err(format!("{id}: the typed record differs from the named one"));
                    }
                }
                (record, _) => {
                    return Err(format!(
                        "{id}: record {record:?} with {} history entries",
                        history.len()
                    ))
                }
            }
            histories.insert(id.to_owned(), history);
        }
        let mut index = BTreeMap::new();
        for state in M::states() {
            let ids = self
                .machine
                .in_state(*state)
                .map_err(|e| failed("the state index", e))?;
            if !ids.is_empty() {
                index.insert(state.name().to_owned(), ids);
            }
        }
        let counted: u64 = self
            .machine
            .count_by_state()
            .map_err(|e| failed("counts by state", e))?
            .iter()
            .map(|(_, count)| count)
            .sum();
        let indexed: usize = index.values().map(Vec::len).sum();
        if counted != indexed as u64 {
            return Err(format!(
                "count_by_state counts {counted} entities, in_state lists {indexed}"
            ));
        }
        self.engine.flush().map_err(|e| failed("(flushing)", e))?;
        let outbox = self
            .engine
            .outbox()
            .pending(usize::MAX)
            .map_err(|e| failed("the outbox", e))?
            .into_iter()
            .filter(|event| event.machine == M::machine_name())
            .collect();
        Ok(Stored {
            histories,
            index,
            outbox,
        })
    }

    fn reopen(self, dir: &Path) -> Result<Self, String> {
        let clock = self.clock.clone();
        drop(self);
        EngineUnderTest::open(dir, clock)
    }
}
