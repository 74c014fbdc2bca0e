use idemflow::StateMachine;

// An alias that is the current name of another state, or of the state itself.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Open)]
enum Ticket {
    #[on(start = Working)]
    Open,
    #[alias("in_progress", "closed")]
    #[on(close = Closed)]
    Working,
    #[alias("closed")]
    #[terminal]
    Closed,
}

fn main() {}
