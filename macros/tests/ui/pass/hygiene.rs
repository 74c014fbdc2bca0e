//! Generated code names everything by absolute path: it compiles in a module
//! without the prelude and with `Option`, `Some`, `None`, `Copy`, `matches`
//! and `idemflow`-like names shadowed.
#![deny(warnings)]

mod machines {
    #![no_implicit_prelude]
    #![allow(dead_code, unused_macros)]

    use ::idemflow::StateMachine;

    pub struct Option;
    pub struct Some;
    pub struct None;
    pub struct Transition;
    pub trait Copy {}
    pub mod core {}
    macro_rules! matches {
        () => {};
    }

    #[derive(
        StateMachine,
        ::core::clone::Clone,
        ::core::marker::Copy,
        ::core::fmt::Debug,
        ::core::cmp::PartialEq,
        ::core::cmp::Eq,
        ::core::hash::Hash,
    )]
    #[machine(initial = A)]
    pub enum Shadowed {
        /// The start.
        #[on(go = B, r#type = C)]
        A,
        #[on(go = C)]
        B,
        #[terminal]
        C,
    }

    /// Aliases, event aliases and timeouts name everything by absolute path too.
    #[derive(
        StateMachine,
        ::core::clone::Clone,
        ::core::marker::Copy,
        ::core::fmt::Debug,
        ::core::cmp::PartialEq,
        ::core::cmp::Eq,
        ::core::hash::Hash,
    )]
    #[machine(initial = A)]
    #[event_alias(r#type = "kind", go = "went")]
    pub enum Evolved {
        #[alias("start")]
        #[timeout(after = "5s", fire = r#type)]
        #[on(go = B, r#type = C)]
        A,
        #[on(go = C)]
        B,
        #[terminal]
        C,
    }
}

use idemflow::{MachineEvent, StateMachine};
use machines::{Evolved, EvolvedEvent, Shadowed, ShadowedEvent};

fn main() {
    assert_eq!(Shadowed::A.next(ShadowedEvent::Type), Some(Shadowed::C));
    assert_eq!(ShadowedEvent::Type.name(), "type");
    assert!(Shadowed::C.is_terminal());
    assert!(!Shadowed::A.is_terminal());
    assert_eq!(Shadowed::A.description(), Some("The start."));
    Shadowed::definition().validate().unwrap();

    assert_eq!(Evolved::from_name("start"), Some(Evolved::A));
    assert_eq!(EvolvedEvent::from_name("kind"), Some(EvolvedEvent::Type));
    assert_eq!(EvolvedEvent::from_name("went"), Some(EvolvedEvent::Go));
    assert_eq!(
        Evolved::A.timeout(),
        Some((std::time::Duration::from_secs(5), EvolvedEvent::Type))
    );
    Evolved::definition().validate().unwrap();
}
