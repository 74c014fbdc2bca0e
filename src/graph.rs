//! The petgraph view of a [`MachineDef`]: reachability, paths, DOT and Mermaid.

use std::collections::BTreeSet;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::Bfs;

use crate::machine::MachineDef;

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
}
