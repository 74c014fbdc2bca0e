//! A machine without terminal states where every (state, event) pair is a
//! transition: `next` has no `_ => None` arm, so no unreachable pattern.
#![deny(warnings)]

use idemflow::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Off)]
enum Switch {
    #[on(toggle = On)]
    Off,
    #[on(toggle = Off)]
    On,
}

fn main() {
    assert_eq!(Switch::Off.next(SwitchEvent::Toggle), Some(Switch::On));
    assert_eq!(Switch::On.next(SwitchEvent::Toggle), Some(Switch::Off));
    assert!(!Switch::On.is_terminal());
    Switch::definition().validate().unwrap();
}
