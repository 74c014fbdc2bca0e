//! The petgraph view of a [`MachineDef`]: reachability, paths, DOT and Mermaid.
//!
//! Every export walks the petgraph view built from the definition, in
//! declaration order (states by their index in [`MachineDef::states`],
//! transitions by their index in [`MachineDef::transitions`]), so the same
//! definition always gives byte-identical text. See `docs/graphs.md`.
//!
//! This module holds the graph view and the analyses on it (reachability,
//! shortest paths, legal targets); `dot` draws it for Graphviz (and renders
//! SVG), `mermaid` draws it for Mermaid.

mod dot;
mod mermaid;

pub use dot::{render_svg, DotOptions};

use std::collections::{BTreeMap, BTreeSet, VecDeque};

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
    /// The view of `def`.
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
}
