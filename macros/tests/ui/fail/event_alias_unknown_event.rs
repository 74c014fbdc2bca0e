use idemflow::StateMachine;

// The event an old name reads as must be declared in an #[on(..)].
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Open)]
#[event_alias(clos = "finish", reopen = "restart")]
enum Ticket {
    #[on(start = Working)]
    Open,
    #[on(close = Closed)]
    Working,
    #[terminal]
    Closed,
}

fn main() {}
