//! `#[event_alias(event = "old", ..)]` on the enum: stored old event names
//! read as the current event; repeatable, several pairs per attribute.
#![deny(warnings)]

use idemflow::{EventAliasDef, MachineEvent, StateMachine};

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "ticket", initial = Open, events = TicketEvent)]
#[event_alias(close = "finish")]
#[event_alias(close = "done", start = "begin", r#type = "kind")]
pub enum Ticket {
    #[on(start = Working, r#type = Typed)]
    Open,
    #[on(close = Closed)]
    Working,
    #[on(close = Closed)]
    Typed,
    #[terminal]
    Closed,
}

fn main() {
    assert_eq!(TicketEvent::from_name("finish"), Some(TicketEvent::Close));
    assert_eq!(TicketEvent::from_name("done"), Some(TicketEvent::Close));
    assert_eq!(TicketEvent::from_name("close"), Some(TicketEvent::Close));
    assert_eq!(TicketEvent::from_name("begin"), Some(TicketEvent::Start));
    assert_eq!(TicketEvent::from_name("kind"), Some(TicketEvent::Type));
    assert_eq!(TicketEvent::from_name("Finish"), None);
    assert_eq!(TicketEvent::Close.name(), "close");
    assert_eq!(TicketEvent::Close.aliases(), ["finish", "done"]);
    assert_eq!(TicketEvent::Start.aliases(), ["begin"]);
    assert_eq!(TicketEvent::Type.aliases(), ["kind"]);

    let def = Ticket::definition();
    def.validate().unwrap();
    // Grouped by event, in the order of `TicketEvent::all()`.
    let alias = |alias: &str, event: &str| EventAliasDef {
        alias: alias.to_owned(),
        event: event.to_owned(),
    };
    assert_eq!(
        def.event_aliases,
        [
            alias("begin", "start"),
            alias("kind", "type"),
            alias("finish", "close"),
            alias("done", "close"),
        ]
    );
    assert_eq!(def.resolve_event("finish"), Some("close"));
    // State names are untouched.
    assert_eq!(Ticket::from_name("finish"), None);
}
