use idemflow::StateMachine;

// The same old name twice on one state, in one list or across two attributes.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Open)]
enum Ticket {
    #[on(start = Working)]
    Open,
    #[alias("in_progress", "in_progress")]
    #[alias("started", "in_progress")]
    #[on(close = Closed)]
    Working,
    #[terminal]
    Closed,
}

fn main() {}
