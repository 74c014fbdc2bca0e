use idemflow::StateMachine;

// An old event name cannot be the name of a current event.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Open)]
#[event_alias(close = "start", close = "close")]
enum Ticket {
    #[on(start = Working)]
    Open,
    #[on(close = Closed)]
    Working,
    #[terminal]
    Closed,
}

fn main() {}
