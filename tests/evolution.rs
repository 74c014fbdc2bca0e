//! Machines that evolve (SPEC section 6): renames and merges by alias, one
//! live definition per machine, retries across a change, removals refused
//! while stored data uses a name, migrations that are resumable after
//! kill -9, and a property test of random definition changes interleaved
//! with requests and reopens.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use idemflow::{
    Durability, Engine, Error, MachineDef, NameKind, NamedMachine, NamedRequest, OutcomeRecord,
    Request, StateMachine,
};
use proptest::prelude::*;

mod common;

use common::backend::{Backend, TestDb};
use common::{open_sled, retry_locked, watchdog};

/// The ticket machine as it was first deployed.
mod v1 {
    #[derive(idemflow::StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[machine(name = "ticket", initial = Open, events = TicketEvent)]
    pub enum Ticket {
        #[on(start = InProgress)]
        Open,
        #[on(finish = Closed)]
        InProgress,
        #[terminal]
        Closed,
    }
}

/// The ticket machine after a rename: `in_progress` is now `working`, the
/// event `finish` is now `close`.
mod v2 {
    #[derive(idemflow::StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[machine(name = "ticket", initial = Open, events = TicketEvent)]
    #[event_alias(close = "finish")]
    pub enum Ticket {
        #[on(start = Working)]
        Open,
        #[alias("in_progress")]
        #[on(close = Closed)]
        Working,
        #[terminal]
        Closed,
    }
}

fn open(dir: &Path) -> Engine {
    retry_locked(|| Engine::builder().durability(Durability::Buffered).open(dir))
}

fn open_db(db: &TestDb) -> Engine {
    db.open(Engine::builder().durability(Durability::Buffered))
}

/// Entities stored under each state name in the raw state index.
fn raw_index_names(dir: &Path) -> BTreeMap<String, usize> {
    let db = retry_locked(|| open_sled(dir));
    let tree = db.open_tree("by_state/ticket").unwrap();
    let mut names = BTreeMap::new();
    for key in tree.iter().keys() {
        let key = key.unwrap();
        let length = u32::from_be_bytes(key[..4].try_into().unwrap()) as usize;
        let name = String::from_utf8(key[4..4 + length].to_vec()).unwrap();
        *names.entry(name).or_insert(0) += 1;
    }
    names
}

/// On both backends; the raw look at sled's state index is sled's.
fn a_rename_by_alias_migrates_records_and_keeps_replays(db: &TestDb) {
    let db = db.clone();
    watchdog("rename by alias", Duration::from_secs(120), move || {
        let started = {
            let engine = open_db(&db);
            let tickets = engine.machine::<v1::Ticket>().unwrap();
            for n in 0..1200 {
                tickets.create(&format!("t-{n}")).unwrap();
            }
            let mut started = Vec::new();
            for n in 0..1100 {
                let id = format!("t-{n}");
                let request = Request::to(v1::Ticket::InProgress).key(format!("start-{n}"));
                started.push((id.clone(), tickets.apply(&id, request).unwrap()));
            }
            tickets
                .apply(
                    "t-0",
                    Request::fire(v1::TicketEvent::Finish).key("finish-0"),
                )
                .unwrap();
            engine.flush().unwrap();
            started
        };
        if let Some(dir) = db.dir() {
            assert_eq!(raw_index_names(&dir)["in_progress"], 1099);
        }

        let engine = open_db(&db);
        let tickets = engine.machine::<v2::Ticket>().unwrap();
        assert_eq!(tickets.named().definition_version(), 2);
        // Reads see migrated and not yet migrated entities under the new name.
        let counts = tickets.count_by_state().unwrap();
        assert!(counts.contains(&(v2::Ticket::Working, 1099)), "{counts:?}");
        assert_eq!(tickets.in_state(v2::Ticket::Working).unwrap().len(), 1099);
        assert_eq!(
            tickets.get("t-5").unwrap().unwrap().state,
            v2::Ticket::Working
        );
        // History keeps what was written; typed reads map the old names.
        let history = tickets.history("t-0").unwrap();
        assert_eq!(history[1].to, v2::Ticket::Working);
        assert_eq!(history[2].event, Some(v2::TicketEvent::Close));
        let raw = tickets.named().history("t-0").unwrap();
        assert_eq!(raw[1].to, "in_progress");
        // A retry made before the rename, sent with the new spelling, replays
        // its original outcome in the new names.
        for (id, original) in started.iter().take(50) {
            let n = &id[2..];
            let retry = tickets
                .apply(
                    id,
                    Request::to(v2::Ticket::Working).key(format!("start-{n}")),
                )
                .unwrap();
            assert!(retry.is_replay(), "{id}");
            assert_eq!(retry.version(), original.version());
            assert_eq!(retry.state(), v2::Ticket::Working);
        }
        let finish = tickets
            .apply("t-0", Request::fire(v2::TicketEvent::Close).key("finish-0"))
            .unwrap();
        assert!(finish.is_replay() && finish.event() == Some(v2::TicketEvent::Close));
        // The old spelling by name still works and means the same.
        let named = tickets.named();
        let replay = named
            .apply("t-1", NamedRequest::to("in_progress").key("start-1"))
            .unwrap();
        assert!(replay.replay && replay.state == "working");
        // New requests write the new names.
        let closed = tickets.fire("t-7", v2::TicketEvent::Close).unwrap();
        assert_eq!(closed.from(), Some(v2::Ticket::Working));
        // The migration runs in the background; finish it and look.
        while named.migrate_step().unwrap() > 0 {}
        assert_eq!(named.pending_migration().unwrap(), 0);
        assert_eq!(
            named.migrate_step().unwrap(),
            0,
            "running it again changes nothing"
        );
        drop((tickets, named, engine));
        if let Some(dir) = db.dir() {
            let names = raw_index_names(&dir);
            assert!(!names.contains_key("in_progress"), "{names:?}");
            assert_eq!(names["working"], 1098);
        }
    });
}

fn every_handle_uses_the_one_live_definition(db: &TestDb) {
    let engine = open_db(db);
    let v1 = MachineDef::new("door", "closed")
        .state("closed")
        .state("open")
        .terminal_state("removed")
        .transition("closed", "open", "open")
        .transition("open", "close", "closed")
        .transition("closed", "remove", "removed");
    let old_handle = engine.register(v1.clone()).unwrap();
    old_handle.create("front").unwrap();
    // v2 adds a state "locked" and stops "remove" from closed (only from locked).
    let v2 = MachineDef::new("door", "closed")
        .state("closed")
        .state("open")
        .state("locked")
        .terminal_state("removed")
        .transition("closed", "open", "open")
        .transition("open", "close", "closed")
        .transition("closed", "lock", "locked")
        .transition("locked", "remove", "removed");
    let new_handle = engine.register(v2.clone()).unwrap();
    assert_eq!(
        old_handle.definition(),
        v2,
        "the old handle sees the new definition"
    );
    assert_eq!(old_handle.definition_version(), 2);
    // The old handle cannot use the transition the new definition dropped.
    assert!(matches!(
        old_handle.apply("front", NamedRequest::fire("remove")),
        Err(Error::InvalidTransition { .. })
    ));
    assert!(
        old_handle
            .apply("front", NamedRequest::fire("lock"))
            .unwrap()
            .applied
    );
    assert_eq!(new_handle.get("front").unwrap().unwrap().state, "locked");
    // A typed handle of the older shape is refused when it would remove a
    // name in use, and changes nothing.
    let shrunk = MachineDef::new("door", "closed")
        .state("closed")
        .terminal_state("removed")
        .transition("closed", "remove", "removed");
    match engine.register(shrunk) {
        Err(Error::DefinitionMismatch { missing, .. }) => {
            let names: Vec<(NameKind, String)> =
                missing.into_iter().map(|m| (m.kind, m.name)).collect();
            assert!(names.contains(&(NameKind::State, "locked".to_owned())));
            assert!(names.contains(&(NameKind::Event, "lock".to_owned())));
        }
        other => panic!("expected DefinitionMismatch, got {other:?}"),
    }
    assert_eq!(new_handle.definition(), v2);
    let log = engine.definition_log("door").unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].version, 1);
    assert!(
        log[1].changes.iter().any(|c| c == "added state locked"),
        "{:?}",
        log[1].changes
    );
    assert!(log[1].at.is_some());
}

fn a_merge_reads_two_old_states_as_one(db: &TestDb) {
    let engine = open_db(db);
    let v1 = MachineDef::new("job", "queued")
        .state("queued")
        .state("waiting")
        .terminal_state("done")
        .transition("queued", "wait", "waiting")
        .transition("queued", "run", "done")
        .transition("waiting", "run", "done");
    let jobs = engine.register(v1).unwrap();
    for n in 0..6 {
        jobs.create(&format!("j-{n}")).unwrap();
    }
    for n in 0..3 {
        jobs.apply(&format!("j-{n}"), NamedRequest::fire("wait"))
            .unwrap();
    }
    let v2 = MachineDef::new("job", "pending")
        .state("pending")
        .alias("pending", "queued")
        .alias("pending", "waiting")
        .terminal_state("done")
        .transition("pending", "run", "done")
        .event_alias("run", "wait");
    let jobs = engine.register(v2).unwrap();
    assert_eq!(
        jobs.count_by_state().unwrap(),
        [("pending".to_owned(), 6), ("done".to_owned(), 0)]
    );
    assert!(
        jobs.apply("j-0", NamedRequest::fire("run"))
            .unwrap()
            .applied
    );
    assert_eq!(jobs.get("j-4").unwrap().unwrap().state, "pending");
    while jobs.migrate_step().unwrap() > 0 {}
    assert_eq!(jobs.in_state("pending", None, 10).unwrap().len(), 5);
}

// ---------------------------------------------------------------------------
// kill -9 in the middle of a migration
// ---------------------------------------------------------------------------

const CHILD_ENV: &str = "IDEMFLOW_EVOLUTION_CHILD_DB";

/// The child: migrates the renamed states until it is killed.
#[test]
fn migration_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let engine = open(Path::new(&dir));
    let tickets = engine.machine::<v2::Ticket>().unwrap();
    println!("READY");
    let named = tickets.named();
    loop {
        if named.migrate_step().unwrap() == 0 {
            println!("DONE");
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}

#[test]
fn a_migration_killed_in_the_middle_finishes_after_reopen() {
    watchdog(
        "kill -9 during a migration",
        Duration::from_secs(300),
        || {
            let dir = tempfile::tempdir().unwrap();
            const ENTITIES: usize = 6000;
            {
                let engine = open(dir.path());
                let tickets = engine.machine::<v1::Ticket>().unwrap();
                for n in 0..ENTITIES {
                    let id = format!("t-{n}");
                    tickets.create(&id).unwrap();
                    tickets.transition(&id, v1::Ticket::InProgress).unwrap();
                }
                engine.flush().unwrap();
            }
            for round in 0..3 {
                let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "migration_child",
                        "--nocapture",
                        "--test-threads",
                        "1",
                    ])
                    .env(CHILD_ENV, dir.path())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let stdout = child.stdout.take().unwrap();
                let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
                let ready = lines.find(|line| line.as_deref().is_ok_and(|l| l.contains("READY")));
                assert!(ready.is_some(), "the child did not start");
                std::thread::sleep(Duration::from_millis(30 + 40 * round));
                child.kill().unwrap();
                let _ = child.wait();
            }
            let names = raw_index_names(dir.path());
            eprintln!("after the kills: {names:?}");
            let engine = open(dir.path());
            let tickets = engine.machine::<v2::Ticket>().unwrap();
            let named = tickets.named();
            assert_eq!(
                tickets.count_by_state().unwrap(),
                [
                    (v2::Ticket::Open, 0),
                    (v2::Ticket::Working, ENTITIES as u64),
                    (v2::Ticket::Closed, 0)
                ]
            );
            while named.migrate_step().unwrap() > 0 {}
            for n in (0..ENTITIES).step_by(97) {
                let ticket = tickets.get(&format!("t-{n}")).unwrap().unwrap();
                assert_eq!((ticket.state, ticket.version), (v2::Ticket::Working, 2));
                assert_eq!(tickets.history(&format!("t-{n}")).unwrap().len(), 2);
            }
            drop((tickets, named, engine));
            let names = raw_index_names(dir.path());
            assert_eq!(names.get("working"), Some(&ENTITIES), "{names:?}");
            assert_eq!(names.len(), 1, "{names:?}");
        },
    );
}

// ---------------------------------------------------------------------------
// Two engines on one database (PostgreSQL)
// ---------------------------------------------------------------------------

/// `queued --run--> done`; v2 sends `run` to a new state `running` first.
fn jobs_v1() -> MachineDef {
    MachineDef::new("job", "queued")
        .state("queued")
        .terminal_state("done")
        .transition("queued", "run", "done")
}

fn jobs_v2() -> MachineDef {
    MachineDef::new("job", "queued")
        .state("queued")
        .state("running")
        .terminal_state("done")
        .transition("queued", "run", "running")
        .transition("running", "finish", "done")
}

/// Engine B stores a new definition while engine A, which still holds the
/// old one live, commits: A's next commit is decided under the new version
/// (SPEC section 6: a commit decided under an older version is decided
/// again), and A's handle then reads the new definition.
fn a_definition_stored_by_another_engine_is_adopted_before_the_next_commit(db: &TestDb) {
    let a = open_db(db);
    let b = open_db(db);
    let on_a = a.register(jobs_v1()).unwrap();
    let on_b = b.register(jobs_v1()).unwrap();
    assert_eq!(
        (on_a.definition_version(), on_b.definition_version()),
        (1, 1)
    );
    for n in 0..4 {
        on_a.create(&format!("j-{n}")).unwrap();
    }
    assert_eq!(
        on_a.apply("j-0", NamedRequest::fire("run")).unwrap().state,
        "done"
    );

    let on_b = b.register(jobs_v2()).unwrap();
    assert_eq!(on_b.definition_version(), 2);
    // A was not told; its caller-side check still uses v1, its commit must not.
    assert_eq!(on_a.definition_version(), 1);
    let outcome = on_a
        .apply("j-1", NamedRequest::fire("run").key("run-j-1"))
        .unwrap();
    assert!(outcome.applied);
    assert_eq!(outcome.state, "running", "decided under v2");
    assert_eq!(on_a.definition_version(), 2, "A adopted the stored version");
    assert_eq!(on_a.definition(), jobs_v2());
    assert_eq!(on_a.history("j-1").unwrap()[1].to, "running");
    // The new event works on A now, and B sees A's commits.
    assert!(
        on_a.apply("j-1", NamedRequest::fire("finish"))
            .unwrap()
            .applied
    );
    assert_eq!(on_b.get("j-1").unwrap().unwrap().state, "done");
    // A replay of A's keyed request answers as first decided.
    let replay = on_b
        .apply("j-1", NamedRequest::fire("run").key("run-j-1"))
        .unwrap();
    assert!(replay.replay && replay.state == "running");
    // A re-registering v1 is a new version (v3) that drops `running` and
    // `finish`, which stored data uses: refused.
    assert!(matches!(
        a.register(jobs_v1()),
        Err(Error::DefinitionMismatch { .. })
    ));
    assert_eq!(on_b.definition_version(), 2);
}

/// Engine A commits from four threads while engine B stores v2 once, midway:
/// every commit succeeds, and none made after B's install returned went by
/// the old rule (straight to `done`).
fn installs_and_commits_of_two_engines_interleave_safely(db: &TestDb) {
    let a = open_db(db);
    let b = open_db(db);
    let on_a = a.register(jobs_v1()).unwrap();
    b.register(jobs_v1()).unwrap();
    for n in 0..400 {
        on_a.create(&format!("j-{n}")).unwrap();
    }
    let installed = std::sync::atomic::AtomicBool::new(false);
    let late = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (on_a, installed, late) = (&on_a, &installed, &late);
            scope.spawn(move || {
                for n in (t..400).step_by(4) {
                    let id = format!("j-{n}");
                    let after = installed.load(std::sync::atomic::Ordering::SeqCst);
                    let outcome = on_a.apply(&id, NamedRequest::fire("run")).unwrap();
                    assert!(outcome.applied, "{id}");
                    if after {
                        late.lock().unwrap().push((id, outcome.state));
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(50));
        b.register(jobs_v2()).unwrap();
        installed.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    for (id, state) in late.into_inner().unwrap() {
        assert_eq!(
            state, "running",
            "{id} was decided under v1 after v2 was stored"
        );
    }
    assert_eq!(on_a.definition_version(), 2);
    let counts = on_a.count_by_state().unwrap();
    let total: u64 = counts.iter().map(|(_, count)| count).sum();
    assert_eq!(total, 400, "{counts:?}");
}

#[test]
fn a_definition_stored_by_another_engine_is_adopted_on_postgres() {
    common::backend::run_on(
        Backend::Postgres,
        "a_definition_stored_by_another_engine_is_adopted",
        a_definition_stored_by_another_engine_is_adopted_before_the_next_commit,
    );
}

#[test]
fn installs_and_commits_of_two_engines_interleave_safely_on_postgres() {
    common::backend::run_on(
        Backend::Postgres,
        "installs_and_commits_of_two_engines_interleave",
        installs_and_commits_of_two_engines_interleave_safely,
    );
}

backend_tests! {
    a_rename_by_alias_migrates_records_and_keeps_replays,
    every_handle_uses_the_one_live_definition,
    a_merge_reads_two_old_states_as_one,
}

// ---------------------------------------------------------------------------
// The property test
// ---------------------------------------------------------------------------

/// A definition the test evolves: a spine `s0 -> ... -> end` that always
/// stays, plus side states added and removed, and renames.
#[derive(Clone, Debug)]
struct Shape {
    /// Spine states: (current name, aliases).
    spine: Vec<(String, Vec<String>)>,
    /// Side states: (name, from spine index, aliases).
    sides: Vec<(String, usize, Vec<String>)>,
    /// Event aliases: (old, current).
    event_aliases: Vec<(String, String)>,
    next_name: usize,
}

impl Shape {
    fn new() -> Self {
        Shape {
            spine: (0..3).map(|n| (format!("s{n}"), Vec::new())).collect(),
            sides: Vec::new(),
            event_aliases: Vec::new(),
            next_name: 0,
        }
    }

    fn def(&self) -> MachineDef {
        let mut def = MachineDef::new("evolving", self.spine[0].0.clone());
        for (name, _) in &self.spine {
            def = def.state(name.clone());
        }
        for (name, _, _) in &self.sides {
            def = def.state(name.clone());
        }
        def = def.terminal_state("end");
        for window in self.spine.windows(2) {
            def = def.transition(window[0].0.clone(), "next", window[1].0.clone());
        }
        let last = &self.spine[self.spine.len() - 1].0;
        def = def.transition(last.clone(), "finish", "end");
        for (name, from, _) in &self.sides {
            def = def
                .transition(
                    self.spine[*from].0.clone(),
                    format!("to_{name}"),
                    name.clone(),
                )
                .transition(name.clone(), "back", self.spine[*from].0.clone());
        }
        for (name, aliases) in &self.spine {
            for alias in aliases {
                def = def.alias(name.clone(), alias.clone());
            }
        }
        for (name, _, aliases) in &self.sides {
            for alias in aliases {
                def = def.alias(name.clone(), alias.clone());
            }
        }
        for (old, current) in &self.event_aliases {
            if def.has_event(current) {
                def = def.event_alias(current.clone(), old.clone());
            }
        }
        def
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next_name += 1;
        format!("{prefix}{}", self.next_name)
    }
}

#[derive(Clone, Debug)]
enum Step {
    Create(usize),
    /// Fire an event (by index into the current events) on an entity, maybe keyed.
    Fire(usize, usize, Option<usize>),
    /// Move an entity to a state (by index into the current states), maybe keyed.
    To(usize, usize, Option<usize>),
    /// Replay a keyed request made earlier (by index).
    Retry(usize),
    AddSide(usize),
    RenameSpine(usize),
    RenameSide(usize),
    RemoveSide(usize),
    Reopen,
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3usize).prop_map(Step::Create),
        8 => (0..3usize, 0..8usize, prop::option::of(0..6usize))
            .prop_map(|(e, ev, k)| Step::Fire(e, ev, k)),
        6 => (0..3usize, 0..8usize, prop::option::of(0..6usize))
            .prop_map(|(e, st, k)| Step::To(e, st, k)),
        3 => (0..20usize).prop_map(Step::Retry),
        2 => (0..3usize).prop_map(Step::AddSide),
        2 => (0..3usize).prop_map(Step::RenameSpine),
        2 => (0..3usize).prop_map(Step::RenameSide),
        2 => (0..3usize).prop_map(Step::RemoveSide),
        1 => Just(Step::Reopen),
    ]
}

struct World {
    db: TestDb,
    engine: Option<Engine>,
    machine: Option<NamedMachine>,
    shape: Shape,
    /// Keyed requests made: (id, request, key, original outcome).
    keyed: Vec<(String, NamedRequest, OutcomeRecord)>,
    next_key: usize,
}

impl World {
    fn machine(&self) -> &NamedMachine {
        self.machine.as_ref().unwrap()
    }

    fn reopen(&mut self) {
        self.machine = None;
        self.engine = None;
        let engine = open_db(&self.db);
        self.machine = Some(engine.register(self.shape.def()).unwrap());
        self.engine = Some(engine);
    }

    /// Tries a new shape: the engine must accept it exactly when no stored
    /// data uses a name it drops.
    fn evolve(&mut self, shape: Shape, may_be_refused: bool) {
        let engine = self.engine.as_ref().unwrap();
        match engine.register(shape.def()) {
            Ok(machine) => {
                self.machine = Some(machine);
                self.shape = shape;
            }
            Err(Error::DefinitionMismatch { missing, .. }) => {
                assert!(may_be_refused, "a rename was refused: {missing:?}");
                assert!(!missing.is_empty());
                // Refused: the current definition is untouched.
                assert_eq!(self.machine().definition(), self.shape.def());
            }
            Err(other) => panic!("unexpected error installing a definition: {other}"),
        }
    }

    fn check(&self) {
        let machine = self.machine();
        // Counts are not snapshots: let the background migration finish
        // before comparing counts with members.
        while machine.migrate_step().unwrap() > 0 {}
        let def = machine.definition();
        let ids = |state: &str| machine.in_state(state, None, usize::MAX).unwrap();
        let mut indexed = BTreeSet::new();
        let counts = machine.count_by_state().unwrap();
        for (state, count) in &counts {
            let members = ids(state);
            assert_eq!(members.len() as u64, *count, "count of {state}");
            for id in members {
                assert!(indexed.insert(id), "indexed twice");
            }
        }
        for id in &indexed {
            let record = machine.get(id).unwrap().unwrap();
            // Every stored state reads as a current state (no Corrupt).
            assert!(
                def.has_state(&record.state),
                "{} reads as {}",
                id,
                record.state
            );
            let history = machine.history(id).unwrap();
            assert_eq!(
                record.version,
                history.len() as u64,
                "{id}: version == history length"
            );
            for entry in &history {
                assert!(
                    def.resolve_state(&entry.to).is_some(),
                    "history names {}",
                    entry.to
                );
                if let Some(event) = &entry.event {
                    assert!(
                        def.resolve_event(event).is_some(),
                        "history names event {event}"
                    );
                }
            }
        }
        for (id, request, original) in &self.keyed {
            let replay = machine.apply(id, request.clone()).unwrap();
            assert!(replay.replay, "{id}: a keyed retry replays");
            assert_eq!(replay.version, original.version);
            assert_eq!(replay.applied, original.applied);
            assert_eq!(
                Some(replay.state.as_str()),
                def.resolve_state(&original.state),
                "the original outcome, in the current names"
            );
        }
    }

    fn run(&mut self, step: &Step) {
        let events: Vec<String> = self
            .machine()
            .definition()
            .events()
            .into_iter()
            .map(str::to_owned)
            .collect();
        match step {
            Step::Create(n) => {
                self.machine().create(&format!("e-{n}")).unwrap();
            }
            Step::Fire(n, event, key) => {
                let event = &events[event % events.len()];
                let mut request = NamedRequest::fire(event.clone());
                if key.is_some() {
                    self.next_key += 1;
                    request = request.key(format!("k-{}", self.next_key));
                }
                let id = format!("e-{n}");
                match self.machine().apply(&id, request.clone()) {
                    Ok(outcome) => {
                        if key.is_some() {
                            self.keyed.push((id, request, outcome));
                        }
                    }
                    Err(Error::NotFound { .. } | Error::InvalidTransition { .. }) => {}
                    Err(other) => panic!("unexpected error: {other}"),
                }
            }
            Step::To(n, state, key) => {
                let states: Vec<String> = self
                    .machine()
                    .definition()
                    .states
                    .iter()
                    .map(|s| s.name.clone())
                    .collect();
                let mut request = NamedRequest::to(states[state % states.len()].clone());
                if key.is_some() {
                    self.next_key += 1;
                    request = request.key(format!("k-{}", self.next_key));
                }
                let id = format!("e-{n}");
                match self.machine().apply(&id, request.clone()) {
                    Ok(outcome) => {
                        if key.is_some() {
                            self.keyed.push((id, request, outcome));
                        }
                    }
                    Err(Error::NotFound { .. } | Error::InvalidTransition { .. }) => {}
                    Err(other) => panic!("unexpected error: {other}"),
                }
            }
            Step::Retry(index) => {
                if let Some((id, request, original)) = self.keyed.get(*index).cloned() {
                    let replay = self.machine().apply(&id, request).unwrap();
                    assert!(replay.replay && replay.version == original.version);
                }
            }
            Step::AddSide(from) => {
                let mut shape = self.shape.clone();
                let name = shape.fresh("side");
                let from = from % shape.spine.len();
                shape.sides.push((name, from, Vec::new()));
                self.evolve(shape, false);
            }
            Step::RenameSpine(index) => {
                let mut shape = self.shape.clone();
                let index = index % shape.spine.len();
                let new = shape.fresh("spine");
                let (old, aliases) = &mut shape.spine[index];
                aliases.push(std::mem::replace(old, new));
                self.evolve(shape, false);
            }
            Step::RenameSide(index) => {
                let mut shape = self.shape.clone();
                if shape.sides.is_empty() {
                    return;
                }
                let index = index % shape.sides.len();
                let new = shape.fresh("side");
                let old_event = format!("to_{}", shape.sides[index].0);
                let new_event = format!("to_{new}");
                let (old, _, aliases) = &mut shape.sides[index];
                aliases.push(std::mem::replace(old, new));
                // Former names of the event now read as the new one too.
                for (_, current) in &mut shape.event_aliases {
                    if *current == old_event {
                        current.clone_from(&new_event);
                    }
                }
                shape.event_aliases.push((old_event, new_event));
                self.evolve(shape, false);
            }
            Step::RemoveSide(index) => {
                let mut shape = self.shape.clone();
                if shape.sides.is_empty() {
                    return;
                }
                let index = index % shape.sides.len();
                let (name, _, _) = shape.sides.remove(index);
                let event = format!("to_{name}");
                shape.event_aliases.retain(|(_, current)| *current != event);
                self.evolve(shape, true);
            }
            Step::Reopen => self.reopen(),
        }
    }
}

fn run_steps(backend: Backend, steps: &[Step]) {
    let Some(db) = TestDb::new(backend, "random_definition_changes") else {
        return;
    };
    let mut world = World {
        db,
        engine: None,
        machine: None,
        shape: Shape::new(),
        keyed: Vec::new(),
        next_key: 0,
    };
    world.reopen();
    for step in steps {
        world.run(step);
        world.check();
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_definition_changes_never_break_reads_or_replays(
        steps in prop::collection::vec(step_strategy(), 1..40)
    ) {
        run_steps(Backend::Sled, &steps);
    }
}

proptest! {
    // Fewer cases on PostgreSQL: each one is a schema of its own.
    #![proptest_config(ProptestConfig {
        cases: common::backend::postgres_cases(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_definition_changes_never_break_reads_or_replays_on_postgres(
        steps in prop::collection::vec(step_strategy(), 1..40)
    ) {
        run_steps(Backend::Postgres, &steps);
    }
}

/// The states and events a typed machine's definition names (a sanity check
/// that the typed v2 declares what the tests above rely on).
#[test]
fn the_typed_rename_declares_its_aliases() {
    let def = v2::Ticket::definition();
    assert_eq!(def.resolve_state("in_progress"), Some("working"));
    assert_eq!(def.resolve_event("finish"), Some("close"));
    assert_eq!(
        v2::Ticket::from_name("in_progress"),
        Some(v2::Ticket::Working)
    );
}
