//! The generated event enum and its variants carry doc comments, so a crate
//! that denies `missing_docs` can derive a public machine.
#![deny(missing_docs, warnings)]

use idemflow::StateMachine;

/// A light bulb.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Off)]
pub enum Bulb {
    /// Dark.
    #[on(switch_on = On, break_it = Broken)]
    Off,
    /// Bright.
    #[on(switch_off = Off, break_it = Broken)]
    On,
    /// For good.
    #[terminal]
    Broken,
}

fn main() {
    assert_eq!(Bulb::Off.next(BulbEvent::SwitchOn), Some(Bulb::On));
    assert_eq!(Bulb::On.next(BulbEvent::BreakIt), Some(Bulb::Broken));
}
