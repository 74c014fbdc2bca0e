//! Property tests of `MachineDef`: `validate` agrees with an independent
//! reference checker on random (mostly invalid) definitions, aliases and
//! timeouts included; valid-by-construction machines export every state and
//! edge exactly once (timed edges dashed), have a replayable shortest path to
//! every state, resolve every alias, and round-trip through JSON.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use idemflow::{EventAliasDef, MachineDef, StateDef, TimeoutDef, TransitionDef};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

/// State names for random definitions: few, so that collisions (duplicates,
/// self-loops, unknown ends) are frequent.
const STATE_POOL: &[&str] = &["idle", "run", "done", "fail", "x", ""];
/// Event names for random definitions.
const EVENT_POOL: &[&str] = &["go", "stop", "e", ""];
/// Old names for random aliases: current state and event names among them.
const ALIAS_POOL: &[&str] = &["idle", "old", "older", "go", ""];
/// Delays for random timeouts, zero included.
const DELAY_POOL: &[u64] = &[0, 1, 1_500, 90_000, 1_800_000, 86_400_000];

/// State names for valid machines, with characters that DOT and Mermaid
/// must escape and names Mermaid cannot take as ids.
const NAME_POOL: &[&str] = &[
    "draft",
    "paid",
    "in_progress",
    "a b",
    "q\"uote",
    "back\\slash",
    "new\nline",
    "x:y;z",
    "state",
    "__start",
    "s1",
    "end1",
    "été",
];
/// Event names for valid machines (more than any state's out-degree).
const EVENTS: &[&str] = &[
    "submit", "pay", "ship", "cancel", "retry", "refund", "close", "open", "reset", "archive",
    "resume", "pause", "fail", "approve", "reject",
];

// ---------------------------------------------------------------------------
// The reference checker: SPEC section 1 and the doc of `MachineDef::validate`,
// written out plainly and without petgraph.
// ---------------------------------------------------------------------------

fn reference_is_valid(def: &MachineDef) -> bool {
    if def.name.is_empty() || def.states.is_empty() {
        return false;
    }
    let names: Vec<&str> = def.states.iter().map(|s| s.name.as_str()).collect();
    if names.iter().any(|n| n.is_empty()) {
        return false;
    }
    for (i, a) in names.iter().enumerate() {
        if names[i + 1..].contains(a) {
            return false; // declared twice
        }
    }
    if !names.contains(&def.initial.as_str()) {
        return false;
    }
    for (i, t) in def.transitions.iter().enumerate() {
        if t.event.is_empty()
            || !names.contains(&t.from.as_str())
            || !names.contains(&t.to.as_str())
            || t.from == t.to
        {
            return false;
        }
        if def.transitions[..i]
            .iter()
            .any(|u| u.from == t.from && u.event == t.event)
        {
            return false; // not deterministic
        }
    }
    // Reachability by a plain worklist.
    let mut seen = vec![def.initial.as_str()];
    let mut work = vec![def.initial.as_str()];
    while let Some(state) = work.pop() {
        for t in &def.transitions {
            if t.from == state && !seen.contains(&t.to.as_str()) {
                seen.push(t.to.as_str());
                work.push(t.to.as_str());
            }
        }
    }
    if names.iter().any(|n| !seen.contains(n)) {
        return false;
    }
    if !def.states.iter().all(|s| {
        let outgoing = def.transitions.iter().any(|t| t.from == s.name);
        outgoing != s.terminal
    }) {
        return false;
    }
    reference_aliases_are_valid(def) && reference_timeouts_are_valid(def)
}

/// State aliases: non-empty, not a current state's name, each old name once
/// over the whole machine. Event aliases: non-empty, not a current event,
/// each old name once, reading as an event some transition fires.
fn reference_aliases_are_valid(def: &MachineDef) -> bool {
    let states: Vec<&str> = def.states.iter().map(|s| s.name.as_str()).collect();
    let old_states: Vec<&str> = def
        .states
        .iter()
        .flat_map(|s| s.aliases.iter().map(String::as_str))
        .collect();
    for (i, alias) in old_states.iter().enumerate() {
        if alias.is_empty() || states.contains(alias) || old_states[i + 1..].contains(alias) {
            return false;
        }
    }
    let events: Vec<&str> = def.transitions.iter().map(|t| t.event.as_str()).collect();
    for (i, alias) in def.event_aliases.iter().enumerate() {
        if alias.alias.is_empty()
            || events.contains(&alias.alias.as_str())
            || !events.contains(&alias.event.as_str())
            || def.event_aliases[i + 1..]
                .iter()
                .any(|later| later.alias == alias.alias)
        {
            return false;
        }
    }
    true
}

/// Timeouts: on non-terminal states, positive, firing an event that a
/// transition from the same state fires.
fn reference_timeouts_are_valid(def: &MachineDef) -> bool {
    def.states.iter().all(|s| match &s.timeout {
        None => true,
        Some(timeout) => {
            !s.terminal
                && timeout.after_ms > 0
                && def
                    .transitions
                    .iter()
                    .any(|t| t.from == s.name && t.event == timeout.event)
        }
    })
}

/// `#[timeout(after = ..)]` units: the largest one that divides exactly.
fn reference_delay(ms: u64) -> String {
    for (size, unit) in [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ] {
        if ms > 0 && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// The label of a transition in the exports: `event (after 30m)` when the
/// timeout of its source state fires it, else the event.
fn reference_label(def: &MachineDef, t: &TransitionDef) -> (String, bool) {
    let timeout = def
        .states
        .iter()
        .find(|s| s.name == t.from)
        .and_then(|s| s.timeout.as_ref());
    match timeout {
        Some(timeout) if timeout.event == t.event => (
            format!("{} (after {})", t.event, reference_delay(timeout.after_ms)),
            true,
        ),
        _ => (t.event.clone(), false),
    }
}

/// Shortest distance (in transitions) from the initial state to each state.
fn reference_distances(def: &MachineDef) -> BTreeMap<&str, usize> {
    let mut distance = BTreeMap::from([(def.initial.as_str(), 0)]);
    let mut queue = VecDeque::from([def.initial.as_str()]);
    while let Some(state) = queue.pop_front() {
        let d = distance[state];
        for t in def.transitions.iter().filter(|t| t.from == state) {
            distance.entry(t.to.as_str()).or_insert_with(|| {
                queue.push_back(t.to.as_str());
                d + 1
            });
        }
    }
    distance
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

/// Any definition over small name pools: mostly invalid, sometimes valid.
fn arbitrary_def() -> impl Strategy<Value = MachineDef> {
    let state = (
        select(STATE_POOL),
        any::<bool>(),
        proptest::option::of("[a-z \"\\\\]{0,6}"),
        proptest::collection::vec(select(ALIAS_POOL), 0..3),
        proptest::option::weighted(0.3, (select(DELAY_POOL), select(EVENT_POOL))),
    )
        .prop_map(|(name, terminal, description, aliases, timeout)| StateDef {
            name: name.to_owned(),
            description,
            terminal,
            aliases: aliases.into_iter().map(str::to_owned).collect(),
            timeout: timeout.map(|(after_ms, event)| TimeoutDef {
                after_ms,
                event: event.to_owned(),
            }),
        });
    let event_alias =
        (select(ALIAS_POOL), select(EVENT_POOL)).prop_map(|(alias, event)| EventAliasDef {
            alias: alias.to_owned(),
            event: event.to_owned(),
        });
    let transition = (select(STATE_POOL), select(EVENT_POOL), select(STATE_POOL)).prop_map(
        |(from, event, to)| TransitionDef {
            from: from.to_owned(),
            event: event.to_owned(),
            to: to.to_owned(),
        },
    );
    (
        select(&["m", "order", ""][..]),
        select(STATE_POOL),
        proptest::collection::vec(state, 0..6),
        proptest::collection::vec(transition, 0..9),
        proptest::collection::vec(event_alias, 0..3),
    )
        .prop_map(
            |(name, initial, states, transitions, event_aliases)| MachineDef {
                name: name.to_owned(),
                initial: initial.to_owned(),
                states,
                transitions,
                event_aliases,
            },
        )
}

/// A valid machine by construction: a random tree from the initial state
/// (so everything is reachable), leaves terminal or sent elsewhere, extra
/// edges between distinct states, one event name per edge of each state;
/// then states and transitions shuffled.
fn valid_def() -> impl Strategy<Value = MachineDef> {
    (1..=7usize)
        .prop_flat_map(|n| {
            (
                subsequence(NAME_POOL, n).prop_shuffle(),
                proptest::collection::vec(any::<prop::sample::Index>(), n), // tree parents
                proptest::collection::vec(any::<bool>(), n),                // leaf terminal?
                proptest::collection::vec(any::<prop::sample::Index>(), n), // leaf exits
                proptest::collection::vec(
                    (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
                    0..8,
                ), // extra edges
                any::<prop::sample::Index>(),                               // event name offset
                proptest::collection::vec(proptest::option::of("[A-Za-z ;:#\"]{1,12}"), n),
                // Per state: how many old names, and maybe a timeout (delay, event pick).
                proptest::collection::vec(
                    (
                        0..=2usize,
                        proptest::option::of((
                            select(&DELAY_POOL[1..]),
                            any::<prop::sample::Index>(),
                        )),
                    ),
                    n,
                ),
                proptest::collection::vec(any::<bool>(), EVENTS.len()), // event aliased?
            )
        })
        .prop_flat_map(
            |(
                names,
                parents,
                terminal,
                exits,
                extras,
                offset,
                descriptions,
                evolution,
                event_aliased,
            )| {
                let n = names.len();
                let mut edges: Vec<(usize, usize)> =
                    (1..n).map(|i| (parents[i].index(i), i)).collect();
                let has_children: BTreeSet<usize> = edges.iter().map(|&(p, _)| p).collect();
                let mut is_terminal = vec![false; n];
                for i in 0..n {
                    if has_children.contains(&i) {
                        continue;
                    }
                    if terminal[i] || n == 1 {
                        is_terminal[i] = true;
                    } else {
                        // A non-terminal leaf leaves to another state.
                        let j = exits[i].index(n - 1);
                        edges.push((i, if j >= i { j + 1 } else { j }));
                    }
                }
                for (a, b) in extras {
                    let (from, to) = (a.index(n), b.index(n));
                    if from != to && !is_terminal[from] {
                        edges.push((from, to));
                    }
                }
                let mut per_state = vec![0usize; n];
                let offset = offset.index(EVENTS.len());
                let transitions: Vec<TransitionDef> = edges
                    .into_iter()
                    .filter_map(|(from, to)| {
                        let k = per_state[from];
                        per_state[from] += 1;
                        (k < EVENTS.len()).then(|| TransitionDef {
                            from: names[from].to_owned(),
                            event: EVENTS[(offset + k) % EVENTS.len()].to_owned(),
                            to: names[to].to_owned(),
                        })
                    })
                    .collect();
                let states: Vec<StateDef> = names
                    .iter()
                    .zip(&is_terminal)
                    .zip(descriptions)
                    .zip(evolution)
                    .enumerate()
                    .map(
                        |(i, (((name, &terminal), description), (aliases, timeout)))| {
                            // Old names no state has: `old_<i>_<k>` (two on one state: a merge).
                            let aliases = (0..aliases).map(|k| format!("old_{i}_{k}")).collect();
                            // A timeout fires one of the state's own events.
                            let own: Vec<&TransitionDef> =
                                transitions.iter().filter(|t| t.from == *name).collect();
                            let timeout =
                                timeout.filter(|_| !own.is_empty()).map(|(after_ms, pick)| {
                                    TimeoutDef {
                                        after_ms,
                                        event: own[pick.index(own.len())].event.clone(),
                                    }
                                });
                            StateDef {
                                name: (*name).to_owned(),
                                description,
                                terminal,
                                aliases,
                                timeout,
                            }
                        },
                    )
                    .collect();
                let mut event_aliases = Vec::new();
                for (event, aliased) in EVENTS.iter().zip(event_aliased) {
                    if aliased && transitions.iter().any(|t| t.event == *event) {
                        event_aliases.push(EventAliasDef {
                            alias: format!("{event}_v1"),
                            event: (*event).to_owned(),
                        });
                    }
                }
                let initial = names[0].to_owned();
                (
                    Just(states).prop_shuffle(),
                    Just(transitions).prop_shuffle(),
                )
                    .prop_map(move |(states, transitions)| MachineDef {
                        name: "generated".to_owned(),
                        initial: initial.clone(),
                        states,
                        transitions,
                        event_aliases: event_aliases.clone(),
                    })
            },
        )
}

/// One small change to a definition, which may or may not break it.
#[derive(Clone, Debug)]
enum Mutation {
    /// Adds `from --event--> to` (names by index into the states, or unknown).
    AddTransition(prop::sample::Index, &'static str, prop::sample::Index),
    RemoveTransition(prop::sample::Index),
    FlipTerminal(prop::sample::Index),
    /// The initial state becomes another state (or an unknown one).
    MoveInitial(prop::sample::Index),
    DuplicateState(prop::sample::Index),
    RemoveState(prop::sample::Index),
    /// A transition's target becomes its source.
    SelfLoop(prop::sample::Index),
    EmptyEventName(prop::sample::Index),
    /// Gives a state an old name (maybe a current name, maybe empty).
    AddAlias(prop::sample::Index, &'static str),
    /// Copies an alias of one state to another (maybe the same) state.
    CopyAlias(prop::sample::Index, prop::sample::Index),
    /// Adds `old name -> event` (either may be current, unknown or empty).
    AddEventAlias(&'static str, &'static str),
    /// Sets a state's timeout (the event may be foreign, the delay zero).
    SetTimeout(prop::sample::Index, &'static str, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        (index(), select(&["submit", "pay", "zzz"][..]), index())
            .prop_map(|(a, e, b)| Mutation::AddTransition(a, e, b)),
        index().prop_map(Mutation::RemoveTransition),
        index().prop_map(Mutation::FlipTerminal),
        index().prop_map(Mutation::MoveInitial),
        index().prop_map(Mutation::DuplicateState),
        index().prop_map(Mutation::RemoveState),
        index().prop_map(Mutation::SelfLoop),
        index().prop_map(Mutation::EmptyEventName),
        (
            index(),
            select(&["old_x", "draft", "paid", "submit", ""][..])
        )
            .prop_map(|(i, alias)| Mutation::AddAlias(i, alias)),
        (index(), index()).prop_map(|(a, b)| Mutation::CopyAlias(a, b)),
        (
            select(&["submit", "pay", "zzz", ""][..]),
            select(&["old_x", "submit", "finish", ""][..])
        )
            .prop_map(|(event, alias)| Mutation::AddEventAlias(event, alias)),
        (
            index(),
            select(&["submit", "pay", "zzz"][..]),
            select(&[0, 60_000][..])
        )
            .prop_map(|(i, event, ms)| Mutation::SetTimeout(i, event, ms)),
    ]
}

/// A valid machine with one to three mutations: near the boundary between
/// valid and invalid, where a checker is most likely to be wrong.
fn mutated_def() -> impl Strategy<Value = MachineDef> {
    (valid_def(), proptest::collection::vec(mutation(), 1..=3)).prop_map(|(mut def, mutations)| {
        // One extra name that is not a state, for unknown ends.
        let name_at = |def: &MachineDef, i: &prop::sample::Index| -> String {
            let k = i.index(def.states.len() + 1);
            def.states
                .get(k)
                .map_or_else(|| "unknown".to_owned(), |s| s.name.clone())
        };
        for m in mutations {
            match m {
                Mutation::AddTransition(a, event, b) => {
                    let (from, to) = (name_at(&def, &a), name_at(&def, &b));
                    def.transitions.push(TransitionDef {
                        from,
                        event: event.to_owned(),
                        to,
                    });
                }
                Mutation::RemoveTransition(i) if !def.transitions.is_empty() => {
                    def.transitions.remove(i.index(def.transitions.len()));
                }
                Mutation::FlipTerminal(i) if !def.states.is_empty() => {
                    let k = i.index(def.states.len());
                    def.states[k].terminal = !def.states[k].terminal;
                }
                Mutation::MoveInitial(i) => def.initial = name_at(&def, &i),
                Mutation::DuplicateState(i) if !def.states.is_empty() => {
                    let copy = def.states[i.index(def.states.len())].clone();
                    def.states.push(copy);
                }
                Mutation::RemoveState(i) if !def.states.is_empty() => {
                    def.states.remove(i.index(def.states.len()));
                }
                Mutation::SelfLoop(i) if !def.transitions.is_empty() => {
                    let k = i.index(def.transitions.len());
                    def.transitions[k].to = def.transitions[k].from.clone();
                }
                Mutation::EmptyEventName(i) if !def.transitions.is_empty() => {
                    let k = i.index(def.transitions.len());
                    def.transitions[k].event.clear();
                }
                Mutation::AddAlias(i, alias) if !def.states.is_empty() => {
                    let k = i.index(def.states.len());
                    def.states[k].aliases.push(alias.to_owned());
                }
                Mutation::CopyAlias(a, b) if !def.states.is_empty() => {
                    let all: Vec<String> =
                        def.states.iter().flat_map(|s| s.aliases.clone()).collect();
                    if !all.is_empty() {
                        let k = b.index(def.states.len());
                        def.states[k].aliases.push(all[a.index(all.len())].clone());
                    }
                }
                Mutation::AddEventAlias(event, alias) => def.event_aliases.push(EventAliasDef {
                    alias: alias.to_owned(),
                    event: event.to_owned(),
                }),
                Mutation::SetTimeout(i, event, after_ms) if !def.states.is_empty() => {
                    let k = i.index(def.states.len());
                    def.states[k].timeout = Some(TimeoutDef {
                        after_ms,
                        event: event.to_owned(),
                    });
                }
                _ => {}
            }
        }
        def
    })
}

/// Random, valid and nearly valid definitions.
fn any_def() -> impl Strategy<Value = MachineDef> {
    prop_oneof![arbitrary_def(), valid_def(), mutated_def()]
}

// ---------------------------------------------------------------------------
// Helpers to read the exports
// ---------------------------------------------------------------------------

/// DOT quoting as documented: `"` and `\` escaped, newlines as `\n`, `&` as `&amp;`.
fn dot_quoted(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .replace('&', "&amp;");
    format!("\"{escaped}\"")
}

/// The text with every Mermaid entity code `#<digits>;` removed.
fn strip_entities(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('#') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && after[digits..].starts_with(';') {
            rest = &after[digits + 1..];
        } else {
            out.push('#');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn count_lines(text: &str, pred: impl Fn(&str) -> bool) -> usize {
    text.lines().filter(|line| pred(line)).count()
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// `validate` accepts exactly the definitions the reference accepts, and
    /// `problems` is empty exactly then; JSON round-trips anything.
    #[test]
    fn validate_agrees_with_the_reference(def in any_def()) {
        let expected = reference_is_valid(&def);
        prop_assert_eq!(def.validate().is_ok(), expected, "problems: {:?}", def.problems());
        prop_assert_eq!(def.problems().is_empty(), expected);
        let json = serde_json::to_string(&def).unwrap();
        prop_assert_eq!(serde_json::from_str::<MachineDef>(&json).unwrap(), def);
    }

    /// Exporting or querying never panics, valid or not.
    #[test]
    fn exports_never_panic(def in any_def(), path in proptest::collection::vec(select(STATE_POOL), 0..5)) {
        let _ = def.to_dot();
        let _ = def.to_mermaid();
        let options = idemflow::DotOptions {
            counts: Some(path.iter().map(|s| (s.to_string(), 1)).collect()),
            highlight_path: path.iter().map(|s| s.to_string()).collect(),
        };
        let _ = def.to_dot_with(&options);
        for state in STATE_POOL {
            let _ = def.shortest_path(state);
            let _ = def.legal_targets(state);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_machines_are_valid(def in valid_def()) {
        prop_assert!(def.validate().is_ok(), "problems: {:?}", def.problems());
        prop_assert!(reference_is_valid(&def));
    }

    /// Every state and every edge appears exactly once in DOT.
    #[test]
    fn dot_has_every_state_and_edge_once(def in valid_def()) {
        let dot = def.to_dot();
        prop_assert!(dot.starts_with("digraph \"generated\" {\n"), "{}", dot);
        prop_assert!(dot.ends_with("}\n"), "{}", dot);
        for state in &def.states {
            let prefix = format!("    {} [", dot_quoted(&state.name));
            prop_assert_eq!(count_lines(&dot, |l| l.starts_with(&prefix)), 1, "{}", prefix);
            let shape = if state.terminal { "doublecircle" } else { "circle" };
            let shaped = format!("{prefix}shape={shape}");
            prop_assert!(dot.contains(&shaped), "{}", shaped);
        }
        for t in &def.transitions {
            let (label, timed) = reference_label(&def, t);
            let line = format!(
                "    {} -> {} [label={}{}];",
                dot_quoted(&t.from),
                dot_quoted(&t.to),
                dot_quoted(&label),
                if timed { ", style=dashed" } else { "" }
            );
            prop_assert_eq!(count_lines(&dot, |l| l == line), 1, "{}", line);
        }
        let timeouts = def.states.iter().filter(|s| s.timeout.is_some()).count();
        prop_assert_eq!(count_lines(&dot, |l| l.contains("style=dashed")), timeouts);
        // Nodes: the states and the entry marker; edges: the transitions and the entry arrow.
        prop_assert_eq!(count_lines(&dot, |l| l.ends_with("];") && !l.contains(" -> ")), def.states.len() + 3);
        prop_assert_eq!(count_lines(&dot, |l| l.contains(" -> ")), def.transitions.len() + 1);
        prop_assert_eq!(count_lines(&dot, |l| l.contains("[shape=point")), 1);
        prop_assert_eq!(dot.clone(), def.clone().to_dot());
    }

    /// Every state and every edge appears exactly once in Mermaid, with
    /// distinct ids, the name itself as id when it is plain.
    #[test]
    fn mermaid_has_every_state_and_edge_once(def in valid_def()) {
        let mermaid = def.to_mermaid();
        let mut lines = mermaid.lines();
        prop_assert_eq!(lines.next(), Some("stateDiagram-v2"));
        prop_assert_eq!(lines.next(), Some("    direction LR"));
        // Declarations come in declaration order: the i-th is states[i].
        let ids: Vec<String> = mermaid
            .lines()
            .filter_map(|l| l.strip_prefix("    state \""))
            .map(|rest| rest.rsplit_once("\" as ").unwrap().1.to_owned())
            .collect();
        prop_assert_eq!(ids.len(), def.states.len());
        prop_assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "ids {:?}", ids);
        let id_of: BTreeMap<&str, &str> = def
            .states
            .iter()
            .zip(&ids)
            .map(|(s, id)| (s.name.as_str(), id.as_str()))
            .collect();
        for (state, id) in def.states.iter().zip(&ids) {
            prop_assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{}", id);
            if ["draft", "paid", "in_progress", "s1", "__start"].contains(&state.name.as_str()) {
                prop_assert_eq!(id, &state.name);
                let declaration = format!("    state \"{}\" as {}", state.name, id);
                prop_assert_eq!(count_lines(&mermaid, |l| l == declaration), 1);
            }
            let end = format!("    {id} --> [*]");
            prop_assert_eq!(count_lines(&mermaid, |l| l == end), usize::from(state.terminal));
        }
        for t in &def.transitions {
            let (label, _) = reference_label(&def, t);
            let line = format!("    {} --> {} : {}", id_of[t.from.as_str()], id_of[t.to.as_str()], label);
            prop_assert_eq!(count_lines(&mermaid, |l| l == line), 1, "{}", line);
        }
        let start = format!("    [*] --> {}", id_of[def.initial.as_str()]);
        prop_assert_eq!(count_lines(&mermaid, |l| l == start), 1);
        prop_assert_eq!(count_lines(&mermaid, |l| l.contains(" --> ")), def.transitions.len() + 1 + def.terminal_states().len());
        // Nothing that Mermaid would misread is left in text (entity codes aside).
        for line in mermaid.lines().skip(2) {
            let text = match line.strip_prefix("    state \"") {
                Some(rest) => rest.rsplit_once("\" as ").unwrap().0,
                None => line.split_once(" : ").map_or("", |(_, text)| text),
            };
            let plain = strip_entities(text);
            prop_assert!(!plain.contains([':', ';', '"', '#', '\\']), "{}", line);
        }
    }

    /// There is a shortest path to every state; it replays with `target` and
    /// is as short as the reference BFS says.
    #[test]
    fn shortest_paths_replay(def in valid_def()) {
        let distances = reference_distances(&def);
        for state in &def.states {
            let path = def.shortest_path(&state.name);
            prop_assert!(path.is_some(), "no path to {:?}", state.name);
            let path = path.unwrap();
            prop_assert_eq!(path.len(), distances[state.name.as_str()]);
            let mut current = def.initial.as_str();
            for t in &path {
                prop_assert_eq!(t.from.as_str(), current);
                prop_assert_eq!(def.target(current, &t.event), Some(t.to.as_str()));
                current = t.to.as_str();
            }
            prop_assert_eq!(current, state.name.as_str());
        }
        prop_assert_eq!(def.reachable_states().len(), def.states.len());
    }

    /// `legal_targets` lists the distinct targets, in declaration order.
    #[test]
    fn legal_targets_match_transitions(def in valid_def()) {
        for state in &def.states {
            let mut expected: Vec<&str> = Vec::new();
            for t in def.transitions.iter().filter(|t| t.from == state.name) {
                if !expected.contains(&t.to.as_str()) {
                    expected.push(t.to.as_str());
                }
            }
            prop_assert_eq!(def.legal_targets(&state.name), expected);
            prop_assert_eq!(def.legal_targets(&state.name).is_empty(), state.terminal);
        }
    }

    /// Every current name and every alias resolves to the current name, and
    /// every timeout is found by `timeout_of`.
    #[test]
    fn aliases_and_timeouts_resolve(def in valid_def()) {
        for state in &def.states {
            prop_assert_eq!(def.resolve_state(&state.name), Some(state.name.as_str()));
            for alias in &state.aliases {
                prop_assert_eq!(def.resolve_state(alias), Some(state.name.as_str()));
            }
            prop_assert_eq!(def.timeout_of(&state.name), state.timeout.as_ref());
        }
        for event in def.events() {
            prop_assert_eq!(def.resolve_event(event), Some(event));
        }
        for alias in &def.event_aliases {
            prop_assert_eq!(def.resolve_event(&alias.alias), Some(alias.event.as_str()));
        }
        prop_assert_eq!(def.resolve_state("no_such_state"), None);
        prop_assert_eq!(def.resolve_event("no_such_event"), None);
    }

    /// JSON round-trip is the identity, and so is the DOT of the copy.
    #[test]
    fn json_round_trip(def in valid_def()) {
        let json = serde_json::to_string(&def).unwrap();
        let back: MachineDef = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &def);
        prop_assert_eq!(back.to_dot(), def.to_dot());
        prop_assert_eq!(back.to_mermaid(), def.to_mermaid());
    }
}
