//! `#[alias(..)]`: stored old names read as the current state; `name()`
//! stays the current name. Repeatable, or a list in one attribute.
#![deny(warnings)]

use idemflow::{MachineDef, StateMachine};

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "ticket", initial = Open, events = TicketEvent)]
pub enum Ticket {
    #[on(start = Working)]
    Open,
    #[alias("in_progress")] // stored name(s) read as this state
    #[alias("doing", "started")]
    #[on(close = Closed)]
    Working,
    #[terminal]
    Closed,
}

fn main() {
    assert_eq!(Ticket::from_name("in_progress"), Some(Ticket::Working));
    assert_eq!(Ticket::from_name("doing"), Some(Ticket::Working));
    assert_eq!(Ticket::from_name("started"), Some(Ticket::Working));
    assert_eq!(Ticket::from_name("working"), Some(Ticket::Working));
    assert_eq!(Ticket::from_name("open"), Some(Ticket::Open));
    assert_eq!(Ticket::from_name("Working"), None);
    assert_eq!(Ticket::Working.name(), "working");
    assert_eq!(Ticket::Working.aliases(), ["in_progress", "doing", "started"]);
    assert!(Ticket::Open.aliases().is_empty());
    assert!(Ticket::Closed.aliases().is_empty());
    assert_eq!(Ticket::Working.next(TicketEvent::Close), Some(Ticket::Closed));

    let def = Ticket::definition();
    def.validate().unwrap();
    assert_eq!(
        def,
        MachineDef::new("ticket", "open")
            .state("open")
            .state("working")
            .alias("working", "in_progress")
            .alias("working", "doing")
            .alias("working", "started")
            .terminal_state("closed")
            .transition("open", "start", "working")
            .transition("working", "close", "closed")
    );
    assert_eq!(def.resolve_state("in_progress"), Some("working"));
}
