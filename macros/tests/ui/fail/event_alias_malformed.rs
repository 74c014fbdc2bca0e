use idemflow::StateMachine;

// Old event names are strings, snake_case and not empty; the key is an event.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Open)]
#[event_alias(close = "", start = "Begin", close = finish, start)]
#[event_alias(ticket::close = "done")]
#[event_alias()]
#[event_alias]
enum Ticket {
    #[on(start = Working)]
    Open,
    #[on(close = Closed)]
    Working,
    #[terminal]
    Closed,
}

fn main() {}
