//! Graphviz DOT export of a [`MachineDef`] ([`MachineDef::to_dot`],
//! [`MachineDef::to_dot_with`] and its [`DotOptions`]: heat map, highlighted
//! path), the DOT quoting helpers, and [`render_svg`] through Graphviz.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;

use super::{timed_labels, MachineGraph};
use crate::machine::MachineDef;

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
    /// The machine as a Graphviz DOT digraph, ready for `dot -Tsvg`.
    ///
    /// Left to right; a point marks the entry with an arrow to the initial
    /// state; terminal states are double circles, the others circles; edges
    /// are labelled with their events and states carry their description as
    /// a tooltip. The transition that a state's timeout fires is dashed and
    /// labelled `event (after 30m)` (see [`format_delay`](crate::format_delay)). Every string is quoted and escaped (`"`, `\`, newlines,
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
