//! The petgraph view of a [`MachineDef`]: reachability, paths, DOT and Mermaid.
//!
//! Every export walks the petgraph view built from the definition, in
//! declaration order (states by their index in [`MachineDef::states`],
//! transitions by their index in [`MachineDef::transitions`]), so the same
//! definition always gives byte-identical text. See `docs/graphs.md`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};
use petgraph::visit::{Bfs, EdgeRef};
use petgraph::Direction;

use crate::machine::{format_delay, MachineDef, TransitionDef};

/// A machine as a petgraph graph: one node per declared state (weight: the
/// state's index in [`MachineDef::states`]), one edge per transition whose
/// both ends are declared (weight: the transition's index in
/// [`MachineDef::transitions`]).
pub(crate) struct MachineGraph {
    pub(crate) graph: DiGraph<usize, usize>,
    pub(crate) nodes: Vec<NodeIndex>,
}

impl MachineGraph {
    pub(crate) fn new(def: &MachineDef) -> Self {
        let mut graph = DiGraph::with_capacity(def.states.len(), def.transitions.len());
        let nodes: Vec<NodeIndex> = (0..def.states.len()).map(|i| graph.add_node(i)).collect();
        let index_of = |name: &str| def.states.iter().position(|s| s.name == name);
        for (i, t) in def.transitions.iter().enumerate() {
            if let (Some(from), Some(to)) = (index_of(&t.from), index_of(&t.to)) {
                graph.add_edge(nodes[from], nodes[to], i);
            }
        }
        MachineGraph { graph, nodes }
    }

    /// The node of the first state of that name.
    fn node(&self, def: &MachineDef, name: &str) -> Option<NodeIndex> {
        def.states
            .iter()
            .position(|s| s.name == name)
            .map(|i| self.nodes[i])
    }

    /// The edges leaving `node`, in declaration order of their transitions
    /// (petgraph itself lists them newest first).
    fn outgoing(&self, node: NodeIndex) -> Vec<EdgeIndex> {
        let mut edges: Vec<EdgeIndex> = self
            .graph
            .edges_directed(node, Direction::Outgoing)
            .map(|edge| edge.id())
            .collect();
        edges.sort_by_key(|&edge| self.graph[edge]);
        edges
    }
}

/// The transitions that a timeout fires, by index in
/// [`MachineDef::transitions`], with the label to draw: `event (after 30m)`.
/// A timed state's transition is the first one from it on the timeout's
/// event (the one [`MachineDef::target`] finds).
fn timed_labels(def: &MachineDef) -> BTreeMap<usize, String> {
    let mut labels = BTreeMap::new();
    for state in &def.states {
        let Some(timeout) = &state.timeout else {
            continue;
        };
        let fired = def
            .transitions
            .iter()
            .position(|t| t.from == state.name && t.event == timeout.event);
        if let Some(index) = fired {
            let delay = format_delay(timeout.after_ms);
            let label = if timeout.event.is_empty() {
                format!("(after {delay})")
            } else {
                format!("{} (after {delay})", timeout.event)
            };
            labels.insert(index, label);
        }
    }
    labels
}

/// Options of [`MachineDef::to_dot_with`]: a heat map of entity counts and
/// the path of one entity. The default (no counts, empty path) draws the
/// plain machine, exactly as [`MachineDef::to_dot`].
///
/// ```
/// use std::collections::BTreeMap;
/// use idemflow::{DotOptions, MachineDef};
///
/// let def = MachineDef::new("door", "closed")
///     .state("closed")
///     .state("open")
///     .terminal_state("removed")
///     .transition("closed", "open", "open")
///     .transition("open", "close", "closed")
///     .transition("closed", "remove", "removed");
///
/// // How many entities are in each state: labels "closed\n3" and a fill by share.
/// let counts = BTreeMap::from([("closed".to_owned(), 3), ("open".to_owned(), 1)]);
/// let heat = def.to_dot_with(&DotOptions { counts: Some(counts), ..DotOptions::default() });
/// assert!(heat.contains(r#"label="closed\n3""#));
///
/// // One entity's history, oldest first: its edges in bold, its current state filled.
/// let path = vec!["closed".to_owned(), "open".to_owned()];
/// let trail = def.to_dot_with(&DotOptions { highlight_path: path, ..DotOptions::default() });
/// assert!(trail.contains(r##""closed" -> "open" [label="open", color="#1f6feb""##));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DotOptions {
    /// Entities per state name. When set, every state is labelled
    /// `"<name>\n<count>"` (a missing state counts 0) and filled with a shade
    /// from pale to dark red by its share of the total over the declared
    /// states (a heat map). Names that are not declared states are ignored.
    pub counts: Option<BTreeMap<String, u64>>,
    /// The states an entity went through, oldest first (its history). Every
    /// declared transition between two consecutive states is drawn bold and
    /// coloured (every event, should several lead from one to the other), as
    /// is the entry arrow when the path starts at the initial state; the
    /// states passed through get a coloured outline and the last one (the
    /// current state) is filled. A name that is not a declared state and a
    /// pair that no transition joins draw nothing (no step is drawn across an
    /// unknown state), so a history recorded under an older definition still
    /// draws what it can.
    pub highlight_path: Vec<String>,
}

/// The colour of a highlighted path.
const HIGHLIGHT: &str = "#1f6feb";
/// The font of nodes and edges.
const FONT: &str = "Helvetica,Arial,sans-serif";
/// The heat map's scale, from a share of 0 to a share of 1 (ColorBrewer OrRd).
const HEAT: [(u8, u8, u8); 9] = [
    (0xff, 0xf7, 0xec),
    (0xfe, 0xe8, 0xc8),
    (0xfd, 0xd4, 0x9e),
    (0xfd, 0xbb, 0x84),
    (0xfc, 0x8d, 0x59),
    (0xef, 0x65, 0x48),
    (0xd7, 0x30, 0x1f),
    (0xb3, 0x00, 0x00),
    (0x7f, 0x00, 0x00),
];

impl MachineDef {
    /// The names of the states reachable from the initial state (the initial
    /// state included), or none when the initial state is not declared.
    pub fn reachable_states(&self) -> BTreeSet<&str> {
        let mut reachable = BTreeSet::new();
        let Some(start) = self.states.iter().position(|s| s.name == self.initial) else {
            return reachable;
        };
        let view = MachineGraph::new(self);
        let mut bfs = Bfs::new(&view.graph, view.nodes[start]);
        while let Some(node) = bfs.next(&view.graph) {
            reachable.insert(self.states[view.graph[node]].name.as_str());
        }
        reachable
    }

    /// A shortest sequence of transitions that leads from the initial state to
    /// `to`: `Some(vec![])` for the initial state itself, `None` when `to` is
    /// not a declared state or cannot be reached (or the initial state is not
    /// declared). Among paths of the same length, the one whose transitions
    /// come first in declaration order wins, so the answer is stable.
    ///
    /// ```
    /// use idemflow::MachineDef;
    ///
    /// let def = MachineDef::new("door", "closed")
    ///     .state("closed")
    ///     .state("open")
    ///     .terminal_state("removed")
    ///     .transition("closed", "open", "open")
    ///     .transition("open", "close", "closed")
    ///     .transition("closed", "remove", "removed");
    ///
    /// let path = def.shortest_path("removed").unwrap();
    /// let events: Vec<&str> = path.iter().map(|t| t.event.as_str()).collect();
    /// assert_eq!(events, ["remove"]);
    /// assert_eq!(def.shortest_path("closed"), Some(vec![]));
    /// assert_eq!(def.shortest_path("nowhere"), None);
    /// ```
    pub fn shortest_path(&self, to: &str) -> Option<Vec<TransitionDef>> {
        let view = MachineGraph::new(self);
        let start = view.node(self, &self.initial)?;
        let goal = view.node(self, to)?;
        // Breadth-first over the petgraph view, remembering the edge that
        // first reached each node.
        let mut reached_by: Vec<Option<Option<EdgeIndex>>> = vec![None; view.graph.node_count()];
        reached_by[start.index()] = Some(None);
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            if node == goal {
                break;
            }
            for edge in view.outgoing(node) {
                let (_, next) = view.graph.edge_endpoints(edge)?;
                if reached_by[next.index()].is_none() {
                    reached_by[next.index()] = Some(Some(edge));
                    queue.push_back(next);
                }
            }
        }
        let mut path = Vec::new();
        let mut node = goal;
        loop {
            match reached_by[node.index()]? {
                None => break,
                Some(edge) => {
                    path.push(self.transitions[view.graph[edge]].clone());
                    node = view.graph.edge_endpoints(edge)?.0;
                }
            }
        }
        path.reverse();
        Some(path)
    }

    /// The distinct states that a declared transition leads to from `from`,
    /// in declaration order (empty for an unknown or terminal state).
    /// Transitions to undeclared states are not counted.
    ///
    /// ```
    /// use idemflow::MachineDef;
    ///
    /// let def = MachineDef::new("door", "closed")
    ///     .state("closed")
    ///     .state("open")
    ///     .terminal_state("removed")
    ///     .transition("closed", "open", "open")
    ///     .transition("closed", "push", "open")
    ///     .transition("open", "close", "closed")
    ///     .transition("closed", "remove", "removed");
    ///
    /// assert_eq!(def.legal_targets("closed"), ["open", "removed"]);
    /// assert!(def.legal_targets("removed").is_empty());
    /// ```
    pub fn legal_targets(&self, from: &str) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.transitions
            .iter()
            .filter(|t| t.from == from && self.has_state(&t.to))
            .map(|t| t.to.as_str())
            .filter(|to| seen.insert(*to))
            .collect()
    }

    /// The machine as a Graphviz DOT digraph, ready for `dot -Tsvg`.
    ///
    /// Left to right; a point marks the entry with an arrow to the initial
    /// state; terminal states are double circles, the others circles; edges
    /// are labelled with their events and states carry their description as
    /// a tooltip. The transition that a state's timeout fires is dashed and
    /// labelled `event (after 30m)` (see [`format_delay`]). Every string is quoted and escaped (`"`, `\`, newlines,
    /// `&`), and the text follows declaration order, so it is byte-identical
    /// for the same definition. Transitions whose ends are not declared
    /// states are left out. Same as `to_dot_with(&DotOptions::default())`.
    ///
    /// ```
    /// use idemflow::MachineDef;
    ///
    /// let def = MachineDef::new("door", "closed")
    ///     .state("closed")
    ///     .describe("Shut, not locked")
    ///     .terminal_state("removed")
    ///     .transition("closed", "remove", "removed");
    ///
    /// assert_eq!(
    ///     def.to_dot(),
    ///     r#"digraph "door" {
    ///     rankdir=LR;
    ///     node [fontname="Helvetica,Arial,sans-serif"];
    ///     edge [fontname="Helvetica,Arial,sans-serif"];
    ///     "__start" [shape=point, width=0.2];
    ///     "closed" [shape=circle, tooltip="Shut, not locked"];
    ///     "removed" [shape=doublecircle];
    ///     "__start" -> "closed";
    ///     "closed" -> "removed" [label="remove"];
    /// }
    /// "#
    /// );
    /// ```
    pub fn to_dot(&self) -> String {
        self.to_dot_with(&DotOptions::default())
    }

    /// The machine as a Graphviz DOT digraph, as [`to_dot`](Self::to_dot),
    /// with a heat map of entity counts and/or one entity's path drawn in;
    /// see [`DotOptions`].
    pub fn to_dot_with(&self, options: &DotOptions) -> String {
        let view = MachineGraph::new(self);
        let timed = timed_labels(self);

        // The entry marker's id must not be a state's.
        let mut start_id = String::from("__start");
        while self.has_state(&start_id) {
            start_id.push('_');
        }

        // Heat map: each declared state's count and its share of the total.
        let count_of = |name: &str| -> u64 {
            options
                .counts
                .as_ref()
                .and_then(|counts| counts.get(name).copied())
                .unwrap_or(0)
        };
        let mut counted = BTreeSet::new();
        let total: u64 = self
            .states
            .iter()
            .filter(|s| counted.insert(s.name.as_str()))
            .map(|s| count_of(&s.name))
            .fold(0, u64::saturating_add);

        // Highlighted path: the visited nodes, the steps and the current node.
        let path_nodes: Vec<Option<NodeIndex>> = options
            .highlight_path
            .iter()
            .map(|name| view.node(self, name))
            .collect();
        let visited: BTreeSet<NodeIndex> = path_nodes.iter().flatten().copied().collect();
        let steps: BTreeSet<(NodeIndex, NodeIndex)> = path_nodes
            .windows(2)
            .filter_map(|pair| Some((pair[0]?, pair[1]?)))
            .collect();
        let current = path_nodes.last().copied().flatten();
        let start_node = view.node(self, &self.initial);
        let start_highlighted =
            start_node.is_some() && path_nodes.first().copied().flatten() == start_node;

        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", dot_quote(&self.name));
        out.push_str("    rankdir=LR;\n");
        let _ = writeln!(out, "    node [fontname={}];", dot_quote(FONT));
        let _ = writeln!(out, "    edge [fontname={}];", dot_quote(FONT));
        if start_node.is_some() {
            let _ = writeln!(
                out,
                "    {} [shape=point, width=0.2];",
                dot_quote(&start_id)
            );
        }

        for node in view.graph.node_indices() {
            let state = &self.states[view.graph[node]];
            let mut attrs: Vec<(&str, String)> = Vec::new();
            let shape = if state.terminal {
                "doublecircle"
            } else {
                "circle"
            };
            attrs.push(("shape", shape.to_owned()));
            let mut fill = None;
            if options.counts.is_some() {
                let count = count_of(&state.name);
                attrs.push((
                    "label",
                    format!("\"{}\\n{}\"", dot_escape(&state.name), count),
                ));
                // Shares are computed in f64: deterministic for the same input.
                let share = if total == 0 {
                    0.0
                } else {
                    count as f64 / total as f64
                };
                fill = Some((heat_colour(share), share > 0.5));
            }
            if current == Some(node) {
                fill = Some((HIGHLIGHT.to_owned(), true));
            }
            if let Some((colour, dark)) = fill {
                attrs.push(("style", "filled".to_owned()));
                attrs.push(("fillcolor", dot_quote(&colour)));
                if dark {
                    attrs.push(("fontcolor", "white".to_owned()));
                }
            }
            if visited.contains(&node) {
                attrs.push(("color", dot_quote(HIGHLIGHT)));
                attrs.push(("penwidth", "2".to_owned()));
            }
            if let Some(description) = &state.description {
                attrs.push(("tooltip", dot_quote(description)));
            }
            let _ = writeln!(
                out,
                "    {} [{}];",
                dot_quote(&state.name),
                dot_attrs(&attrs)
            );
        }

        if let Some(start) = start_node {
            let target = dot_quote(&self.states[view.graph[start]].name);
            if start_highlighted {
                let _ = writeln!(
                    out,
                    "    {} -> {} [color={}, penwidth=2.5];",
                    dot_quote(&start_id),
                    target,
                    dot_quote(HIGHLIGHT)
                );
            } else {
                let _ = writeln!(out, "    {} -> {};", dot_quote(&start_id), target);
            }
        }
        for edge in view.graph.edge_references() {
            let transition = &self.transitions[*edge.weight()];
            let mut attrs = match timed.get(edge.weight()) {
                Some(label) => vec![("label", dot_quote(label)), ("style", "dashed".to_owned())],
                None => vec![("label", dot_quote(&transition.event))],
            };
            if steps.contains(&(edge.source(), edge.target())) {
                attrs.push(("color", dot_quote(HIGHLIGHT)));
                attrs.push(("fontcolor", dot_quote(HIGHLIGHT)));
                attrs.push(("penwidth", "2.5".to_owned()));
            }
            let _ = writeln!(
                out,
                "    {} -> {} [{}];",
                dot_quote(&self.states[view.graph[edge.source()]].name),
                dot_quote(&self.states[view.graph[edge.target()]].name),
                dot_attrs(&attrs)
            );
        }
        out.push_str("}\n");
        out
    }

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

/// A DOT double-quoted string: `"` and `\` escaped; line breaks become `\n`
/// (Graphviz's centred line break); `&` becomes `&amp;` so that Graphviz does
/// not read the text as an HTML entity; other control characters, which
/// Graphviz cannot take, become U+FFFD.
fn dot_quote(text: &str) -> String {
    format!("\"{}\"", dot_escape(text))
}

/// The inside of [`dot_quote`].
fn dot_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '&' => out.push_str("&amp;"),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\\n");
            }
            '\n' => out.push_str("\\n"),
            '\t' => out.push(' '),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// `key=value, key=value`.
fn dot_attrs(attrs: &[(&str, String)]) -> String {
    attrs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The heat map's colour for a share in `0.0..=1.0`, as `#rrggbb`.
fn heat_colour(share: f64) -> String {
    let position = share.clamp(0.0, 1.0) * (HEAT.len() - 1) as f64;
    let low = (position.floor() as usize).min(HEAT.len() - 2);
    let fraction = position - low as f64;
    let (a, b) = (HEAT[low], HEAT[low + 1]);
    let mix =
        |x: u8, y: u8| (f64::from(x) + (f64::from(y) - f64::from(x)) * fraction).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
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

/// Renders DOT text (from [`MachineDef::to_dot`]) to SVG with Graphviz's
/// `dot -Tsvg`, which must be on `PATH`.
///
/// Errors: [`std::io::ErrorKind::NotFound`] when Graphviz is not installed
/// (`apt-get install graphviz`, `brew install graphviz`); another I/O error
/// with `dot`'s own message when it fails.
pub fn render_svg(dot: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Feed stdin from a thread so that a large output cannot deadlock the pipe.
    let writer = child.stdin.take().map(|mut stdin| {
        let input = dot.as_bytes().to_vec();
        std::thread::spawn(move || stdin.write_all(&input))
    });
    let output = child.wait_with_output()?;
    let written = writer.map(|writer| {
        writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("writing to Graphviz `dot` panicked")))
    });
    if !output.status.success() {
        return Err(std::io::Error::other(format!(
            "Graphviz `dot` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    written.transpose()?;
    Ok(output.stdout)
}
