//! The event enum has the state enum's visibility: `pub(crate)` here, so it
//! is usable outside the module that declares the machine.
#![deny(warnings)]

mod machines {
    use idemflow::StateMachine;

    #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[machine(initial = Closed)]
    pub(crate) enum Door {
        #[on(open = Open)]
        Closed,
        #[on(close = Closed)]
        Open,
    }
}

use idemflow::{MachineEvent, StateMachine};
use machines::{Door, DoorEvent};

fn main() {
    assert_eq!(Door::Closed.next(DoorEvent::Open), Some(Door::Open));
    assert_eq!(Door::Open.next(DoorEvent::Close), Some(Door::Closed));
    assert_eq!(Door::Open.next(DoorEvent::Open), None);
    assert_eq!(DoorEvent::all(), [DoorEvent::Open, DoorEvent::Close]);
    assert!(!Door::Open.is_terminal());
    Door::definition().validate().unwrap();
}
