//! Mermaid export of a [`MachineDef`] ([`MachineDef::to_mermaid`]): state
//! ids Mermaid accepts, and text escaped into Mermaid entity codes.

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;

use petgraph::visit::EdgeRef;

use super::{timed_labels, MachineGraph};
use crate::machine::MachineDef;

impl MachineDef {
    /// The machine as a Mermaid state diagram (`stateDiagram-v2`, left to right).
    ///
    /// Each state is declared once, in declaration order, as
    /// `state "<name>" as <id>` followed by one `<id> : <line>` per line of
    /// its description (Mermaid then draws the name as the title and the
    /// description below it); `[*] --> <initial>` marks the entry, each
    /// transition is `<from> --> <to> : <event>` (`<event> (after 30m)` for
    /// the transition a state's timeout fires: Mermaid state diagrams have no
    /// dashed transitions) and each terminal state gets
    /// `<terminal> --> [*]`. The id is the state's name when Mermaid can take
    /// it as is (ASCII letters, digits and `_`, not a keyword), otherwise
    /// `s<index>`. Characters that Mermaid would misread in text (`:`, `;`,
    /// `#`, `"`, `<`, `>`, brackets, braces, `%`, `&`, `` ` ``, `\`, …) are
    /// written as Mermaid entity codes (`#58;`), which render as the
    /// character itself. Byte-identical for the same definition; transitions
    /// whose ends are not declared states are left out.
    ///
    /// ```
    /// use idemflow::MachineDef;
    ///
    /// let def = MachineDef::new("door", "closed")
    ///     .state("closed")
    ///     .describe("Shut; not locked")
    ///     .terminal_state("removed")
    ///     .transition("closed", "remove", "removed");
    ///
    /// assert_eq!(
    ///     def.to_mermaid(),
    ///     "stateDiagram-v2
    ///     direction LR
    ///     state \"closed\" as closed
    ///     closed : Shut#59; not locked
    ///     state \"removed\" as removed
    ///     [*] --> closed
    ///     closed --> removed : remove
    ///     removed --> [*]
    /// "
    /// );
    /// ```
    pub fn to_mermaid(&self) -> String {
        let view = MachineGraph::new(self);
        let ids = mermaid_ids(self);
        let timed = timed_labels(self);

        let mut out = String::from("stateDiagram-v2\n    direction LR\n");
        for node in view.graph.node_indices() {
            let index = view.graph[node];
            let state = &self.states[index];
            let id = &ids[index];
            let _ = writeln!(out, "    state \"{}\" as {}", mermaid_text(&state.name), id);
            if let Some(description) = &state.description {
                for line in description.lines() {
                    let line = mermaid_text(line.trim());
                    if !line.is_empty() {
                        let _ = writeln!(out, "    {id} : {line}");
                    }
                }
            }
        }
        if let Some(start) = view.node(self, &self.initial) {
            let _ = writeln!(out, "    [*] --> {}", ids[view.graph[start]]);
        }
        for edge in view.graph.edge_references() {
            let transition = &self.transitions[*edge.weight()];
            let from = &ids[view.graph[edge.source()]];
            let to = &ids[view.graph[edge.target()]];
            let event = match timed.get(edge.weight()) {
                Some(label) => mermaid_text(label.trim()),
                None => mermaid_text(transition.event.trim()),
            };
            if event.is_empty() {
                let _ = writeln!(out, "    {from} --> {to}");
            } else {
                let _ = writeln!(out, "    {from} --> {to} : {event}");
            }
        }
        for node in view.graph.node_indices() {
            let index = view.graph[node];
            if self.states[index].terminal {
                let _ = writeln!(out, "    {} --> [*]", ids[index]);
            }
        }
        out
    }
}

/// Words that Mermaid's state-diagram lexer reads as keywords at the start
/// of a statement (compared case-insensitively), and the ids it gives its
/// own nodes (`root`, and `root_start` / `root_end` for `[*]`).
const MERMAID_RESERVED: &[&str] = &[
    "state",
    "note",
    "class",
    "classdef",
    "style",
    "scale",
    "click",
    "href",
    "default",
    "acctitle",
    "accdescr",
    "statediagram",
    "hide",
    "end",
    "as",
    "root",
    "root_start",
    "root_end",
];

/// Whether Mermaid takes `name` as a state id unchanged.
fn mermaid_safe_id(name: &str) -> bool {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let lower = name.to_ascii_lowercase();
    // Older Mermaid versions name the `[*]` nodes start1, end2, ...
    let numbered_marker = ["start", "end"].iter().any(|prefix| {
        lower
            .strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
    });
    starts_well
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !MERMAID_RESERVED.contains(&lower.as_str())
        && !lower.contains("direction")
        && !numbered_marker
}

/// The Mermaid id of each state (by index): its name when safe, otherwise
/// `s<index>` (with `_` appended until it differs from every other id).
fn mermaid_ids(def: &MachineDef) -> Vec<String> {
    let mut used: BTreeSet<String> = def
        .states
        .iter()
        .filter(|s| mermaid_safe_id(&s.name))
        .map(|s| s.name.clone())
        .collect();
    def.states
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if mermaid_safe_id(&s.name) {
                return s.name.clone();
            }
            let mut id = format!("s{i}");
            while used.contains(&id) {
                id.push('_');
            }
            used.insert(id.clone());
            id
        })
        .collect()
}

/// Text that Mermaid shows as written: letters, digits, spaces and harmless
/// punctuation stay; every other character becomes an entity code `#<n>;`
/// (which Mermaid renders as the character); line breaks and tabs become
/// spaces. The word "direction" gets its last letter encoded, because
/// Mermaid reads any line containing `direction LR` (etc.) as a directive.
fn mermaid_text(text: &str) -> String {
    const DIRECTION: &str = "direction";
    let mut out = String::with_capacity(text.len());
    // The last characters seen, lowercased, to spot "direction".
    let mut recent: VecDeque<char> = VecDeque::with_capacity(DIRECTION.len() + 1);
    for c in text.chars() {
        recent.push_back(c.to_ascii_lowercase());
        if recent.len() > DIRECTION.len() {
            recent.pop_front();
        }
        let ends_direction = recent.iter().copied().eq(DIRECTION.chars());
        match c {
            _ if ends_direction => {
                let _ = write!(out, "#{};", u32::from(c));
            }
            c if c.is_alphanumeric() => out.push(c),
            ' ' | '_' | ',' | '.' | '\'' | '(' | ')' | '!' | '?' | '/' | '*' | '+' | '=' | '@'
            | '$' | '^' | '~' | '|' | '-' => out.push(c),
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => {
                let _ = write!(out, "#{};", u32::from(c));
            }
        }
    }
    out
}
