use idemflow::StateMachine;

// One old name cannot read as two states; a merge lists both old names on one state.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Open)]
enum Ticket {
    #[alias("waiting")]
    #[on(start = Working)]
    Open,
    #[alias("in_progress")]
    #[on(close = Closed)]
    Working,
    #[alias("waiting")]
    #[terminal]
    Closed,
}

fn main() {}
