//! Unit tests of the definition side of aliases and timeouts: JSON
//! compatibility with definitions stored before they existed, the builder,
//! the lookups, every validation problem, the trait defaults and
//! [`format_delay`].

use std::time::Duration;

use super::{
    format_delay, EventAliasDef, MachineDef, MachineEvent, StateDef, StateMachine, TimeoutDef,
    Transition,
};

/// The invoice machine of the docs, built at run time.
fn invoice() -> MachineDef {
    MachineDef::new("invoice", "draft")
        .state("draft")
        .state("sent")
        .terminal_state("paid")
        .terminal_state("expired")
        .transition("draft", "send", "sent")
        .transition("sent", "pay", "paid")
        .transition("sent", "expire", "expired")
        .timeout("sent", Duration::from_secs(30 * 60), "expire")
        .alias("sent", "issued")
        .alias("expired", "lapsed")
        .alias("expired", "void")
        .event_alias("pay", "settle")
}

#[test]
fn a_definition_stored_before_aliases_and_timeouts_still_decodes() {
    // Exactly what `serde_json::to_string` wrote for a definition before
    // aliases, event aliases and timeouts existed.
    let old = r#"{"name":"door","initial":"closed","states":[{"name":"closed","description":"Shut","terminal":false},{"name":"open","terminal":false},{"name":"removed","terminal":true}],"transitions":[{"from":"closed","event":"open","to":"open"},{"from":"open","event":"close","to":"closed"},{"from":"closed","event":"remove","to":"removed"}]}"#;
    let def: MachineDef = serde_json::from_str(old).unwrap();
    let expected = MachineDef::new("door", "closed")
        .state("closed")
        .describe("Shut")
        .state("open")
        .terminal_state("removed")
        .transition("closed", "open", "open")
        .transition("open", "close", "closed")
        .transition("closed", "remove", "removed");
    assert_eq!(def, expected);
    assert!(def.event_aliases.is_empty());
    assert!(def
        .states
        .iter()
        .all(|s| s.aliases.is_empty() && s.timeout.is_none()));
    def.validate().unwrap();
    // And a definition without them encodes exactly as before.
    assert_eq!(serde_json::to_string(&def).unwrap(), old);
}

#[test]
fn new_fields_encode_under_their_names() {
    let json = serde_json::to_value(invoice()).unwrap();
    assert_eq!(
        json["states"][1],
        serde_json::json!({
            "name": "sent",
            "terminal": false,
            "aliases": ["issued"],
            "timeout": {"after_ms": 1_800_000, "event": "expire"},
        })
    );
    assert_eq!(
        json["states"][3]["aliases"],
        serde_json::json!(["lapsed", "void"])
    );
    assert!(json["states"][0].get("aliases").is_none());
    assert!(json["states"][0].get("timeout").is_none());
    assert_eq!(
        json["event_aliases"],
        serde_json::json!([{"alias": "settle", "event": "pay"}])
    );
    let back: MachineDef = serde_json::from_value(json).unwrap();
    assert_eq!(back, invoice());
}

#[test]
fn builder_puts_aliases_and_timeouts_on_the_named_state() {
    let def = invoice();
    def.validate().unwrap();
    assert_eq!(def.find_state("sent").unwrap().aliases, ["issued"]);
    assert_eq!(
        def.find_state("expired").unwrap().aliases,
        ["lapsed", "void"]
    );
    assert_eq!(
        def.timeout_of("sent"),
        Some(&TimeoutDef {
            after_ms: 1_800_000,
            event: "expire".to_owned()
        })
    );
    assert_eq!(
        def.timeout_of("sent").unwrap().after(),
        Duration::from_secs(1800)
    );
    assert_eq!(def.timeout_of("draft"), None);
    assert_eq!(def.timeout_of("nowhere"), None);
    assert_eq!(
        def.event_aliases,
        [EventAliasDef {
            alias: "settle".to_owned(),
            event: "pay".to_owned()
        }]
    );
    // A second timeout replaces the first.
    let def = def.timeout("sent", Duration::from_millis(1500), "pay");
    assert_eq!(def.timeout_of("sent").unwrap().after_ms, 1500);
    assert_eq!(def.timeout_of("sent").unwrap().event, "pay");
}

#[test]
fn builder_ignores_unknown_states_and_keeps_whole_milliseconds() {
    let def = invoice()
        .alias("nowhere", "gone")
        .timeout("nowhere", Duration::from_secs(1), "pay");
    assert_eq!(def, invoice());
    let def = invoice().timeout("sent", Duration::from_micros(2_999), "expire");
    assert_eq!(def.timeout_of("sent").unwrap().after_ms, 2);
    let def = invoice().timeout("sent", Duration::MAX, "expire");
    assert_eq!(def.timeout_of("sent").unwrap().after_ms, u64::MAX);
}

#[test]
fn resolve_current_and_old_names() {
    let def = invoice();
    assert_eq!(def.resolve_state("sent"), Some("sent"));
    assert_eq!(def.resolve_state("issued"), Some("sent"));
    assert_eq!(def.resolve_state("lapsed"), Some("expired"));
    assert_eq!(def.resolve_state("void"), Some("expired"));
    assert_eq!(def.resolve_state("settle"), None);
    assert_eq!(def.resolve_state(""), None);
    assert_eq!(def.resolve_event("pay"), Some("pay"));
    assert_eq!(def.resolve_event("settle"), Some("pay"));
    assert_eq!(def.resolve_event("issued"), None);
    assert_eq!(def.resolve_event(""), None);
    // An alias of an event that no transition fires resolves to nothing.
    let def = def.event_alias("refund", "give_back");
    assert_eq!(def.resolve_event("give_back"), None);
}

/// The problems of a definition that only differs from a valid one by
/// `change`: exactly the expected ones.
fn problems_after(change: impl FnOnce(MachineDef) -> MachineDef) -> Vec<String> {
    change(invoice()).problems()
}

#[test]
fn every_alias_problem_is_listed() {
    assert_eq!(
        problems_after(|d| d.alias("sent", "")),
        [r#"state "sent" has an empty alias"#]
    );
    assert_eq!(
        problems_after(|d| d.alias("sent", "sent")),
        [r#"alias "sent" of state "sent" is its own name"#]
    );
    assert_eq!(
        problems_after(|d| d.alias("sent", "paid")),
        [
            r#"alias "paid" of state "sent" is the name of a current state; a stored "paid" reads as that state"#
        ]
    );
    assert_eq!(
        problems_after(|d| d.alias("sent", "issued")),
        [r#"alias "issued" is given twice on state "sent""#]
    );
    assert_eq!(
        problems_after(|d| d.alias("draft", "void")),
        [
            r#"alias "void" is given on states "draft" and "expired"; an old name reads as one state only (to merge old states, list their names on one state)"#
        ]
    );
    assert_eq!(
        problems_after(|d| d.event_alias("pay", "")),
        [r#"event "pay" has an empty alias"#]
    );
    assert_eq!(
        problems_after(|d| d.event_alias("pay", "send")),
        [r#"event alias "send" (of "pay") is the name of a current event"#]
    );
    assert_eq!(
        problems_after(|d| d.event_alias("expire", "settle")),
        [
            r#"old event name "settle" is aliased twice (to "pay" and to "expire"); an old name reads as one event only"#
        ]
    );
    assert_eq!(
        problems_after(|d| d.event_alias("refund", "give_back")),
        [r#"event alias "give_back" reads as "refund", but no transition fires "refund""#]
    );
}

#[test]
fn every_timeout_problem_is_listed() {
    assert_eq!(
        problems_after(|d| d.timeout("sent", Duration::ZERO, "expire")),
        [r#"the timeout of state "sent" is zero; it must be at least 1 ms"#]
    );
    assert_eq!(
        problems_after(|d| d.timeout("sent", Duration::from_micros(999), "expire")),
        [r#"the timeout of state "sent" is zero; it must be at least 1 ms"#]
    );
    // `send` is an event of the machine, but not of `sent`.
    assert_eq!(
        problems_after(|d| d.timeout("sent", Duration::from_secs(1), "send")),
        [r#"the timeout of state "sent" fires "send", but no transition from "sent" fires it"#]
    );
    assert_eq!(
        problems_after(|d| d.timeout("paid", Duration::from_secs(1), "pay")),
        [r#"terminal state "paid" has a timeout, but no transition leaves a terminal state"#]
    );
    // Problems of aliases and timeouts come after the others, all listed.
    let problems = problems_after(|d| {
        d.timeout("draft", Duration::ZERO, "nothing")
            .alias("draft", "")
            .transition("sent", "pay", "expired")
    });
    assert_eq!(
        problems,
        [
            r#"event "pay" from state "sent" is declared twice (to "paid" and to "expired"); each event may have only one target per state"#,
            r#"state "draft" has an empty alias"#,
            r#"the timeout of state "draft" is zero; it must be at least 1 ms"#,
            r#"the timeout of state "draft" fires "nothing", but no transition from "draft" fires it"#,
        ]
    );
    let error = invoice()
        .timeout("paid", Duration::from_secs(1), "pay")
        .validate()
        .unwrap_err();
    assert!(matches!(
        error,
        crate::Error::InvalidDefinition { ref problems, .. } if problems.len() == 1
    ));
}

#[test]
fn run_time_names_need_not_be_snake_case() {
    let def = MachineDef::new("m", "a b")
        .state("a b")
        .terminal_state("C")
        .alias("a b", "Old Name")
        .transition("a b", "Go Now", "C")
        .event_alias("Go Now", "went-before");
    def.validate().unwrap();
    assert_eq!(def.resolve_state("Old Name"), Some("a b"));
    assert_eq!(def.resolve_event("went-before"), Some("Go Now"));
}

#[test]
fn delays_use_the_largest_exact_unit() {
    assert_eq!(format_delay(1_800_000), "30m");
    assert_eq!(format_delay(90_000), "90s");
    assert_eq!(format_delay(1_500), "1500ms");
    assert_eq!(format_delay(1), "1ms");
    assert_eq!(format_delay(1_000), "1s");
    assert_eq!(format_delay(60_000), "1m");
    assert_eq!(format_delay(3_600_000), "1h");
    assert_eq!(format_delay(5_400_000), "90m");
    assert_eq!(format_delay(86_400_000), "1d");
    assert_eq!(format_delay(90_000_000), "25h");
    assert_eq!(format_delay(0), "0ms");
    assert_eq!(format_delay(u64::MAX), "18446744073709551615ms");
}

/// A hand-written machine that knows nothing of aliases and timeouts: the
/// trait's defaults keep it compiling and its definition plain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Lamp {
    Off,
    On,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Switch {
    Toggle,
}

impl MachineEvent for Switch {
    fn name(self) -> &'static str {
        "toggle"
    }
    fn from_name(name: &str) -> Option<Self> {
        (name == "toggle").then_some(Switch::Toggle)
    }
    fn all() -> &'static [Self] {
        &[Switch::Toggle]
    }
}

impl StateMachine for Lamp {
    type Event = Switch;
    fn machine_name() -> &'static str {
        "lamp"
    }
    fn initial() -> Self {
        Lamp::Off
    }
    fn states() -> &'static [Self] {
        &[Lamp::Off, Lamp::On]
    }
    fn name(self) -> &'static str {
        match self {
            Lamp::Off => "off",
            Lamp::On => "on",
        }
    }
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "off" => Some(Lamp::Off),
            "on" => Some(Lamp::On),
            _ => None,
        }
    }
    fn description(self) -> Option<&'static str> {
        None
    }
    fn is_terminal(self) -> bool {
        false
    }
    fn next(self, _event: Switch) -> Option<Self> {
        Some(match self {
            Lamp::Off => Lamp::On,
            Lamp::On => Lamp::Off,
        })
    }
    fn transitions() -> &'static [Transition<Self>] {
        &[
            Transition {
                from: Lamp::Off,
                event: Switch::Toggle,
                to: Lamp::On,
            },
            Transition {
                from: Lamp::On,
                event: Switch::Toggle,
                to: Lamp::Off,
            },
        ]
    }
}

#[test]
fn hand_written_impls_get_the_defaults() {
    assert!(Lamp::Off.aliases().is_empty());
    assert_eq!(Lamp::On.timeout(), None);
    assert!(Switch::Toggle.aliases().is_empty());
    let def = Lamp::definition();
    def.validate().unwrap();
    assert_eq!(
        def,
        MachineDef::new("lamp", "off")
            .state("off")
            .state("on")
            .transition("off", "toggle", "on")
            .transition("on", "toggle", "off")
    );
    let plain = StateDef {
        name: "off".to_owned(),
        description: None,
        terminal: false,
        aliases: Vec::new(),
        timeout: None,
    };
    assert_eq!(def.states[0], plain);
}
