//! `name` defaults to the enum's name in snake_case, `events` to `<Enum>Event`.
#![deny(warnings)]

use idemflow::{MachineEvent, StateMachine};

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Open)]
enum SupportTicket {
    #[on(start_work = InProgress, close = Closed)]
    Open,
    #[on(close = Closed)]
    InProgress,
    #[terminal]
    Closed,
}

fn main() {
    assert_eq!(SupportTicket::machine_name(), "support_ticket");
    assert_eq!(SupportTicket::InProgress.name(), "in_progress");
    assert_eq!(SupportTicketEvent::StartWork.name(), "start_work");
    assert_eq!(
        SupportTicketEvent::from_name("start_work"),
        Some(SupportTicketEvent::StartWork)
    );
    assert_eq!(SupportTicketEvent::from_name("StartWork"), None);
    let event: <SupportTicket as StateMachine>::Event = SupportTicketEvent::Close;
    assert_eq!(
        SupportTicket::InProgress.next(event),
        Some(SupportTicket::Closed)
    );
}
