//! A one-state machine whose initial state is terminal: no events at all.
#![deny(warnings)]

use idemflow::{MachineEvent, StateMachine};

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Done)]
enum Marker {
    #[terminal]
    Done,
}

fn main() {
    assert_eq!(Marker::machine_name(), "marker");
    assert_eq!(Marker::initial(), Marker::Done);
    assert_eq!(Marker::states(), [Marker::Done]);
    assert!(Marker::transitions().is_empty());
    assert!(Marker::Done.is_terminal());
    assert!(MarkerEvent::all().is_empty());
    assert_eq!(MarkerEvent::from_name("done"), None);
    assert_eq!(Marker::from_name("done"), Some(Marker::Done));
    let def = Marker::definition();
    def.validate().unwrap();
    assert_eq!(def.initial, "done");
    assert!(def.transitions.is_empty());
}
