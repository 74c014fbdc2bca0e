use idemflow::StateMachine;

// Stored names are snake_case and never empty; so are old names.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Open)]
enum Ticket {
    #[alias("")]
    #[on(start = Working)]
    Open,
    #[alias("InProgress", "on hold", "in_progress_")]
    #[on(close = Closed)]
    Working,
    #[terminal]
    Closed,
}

fn main() {}
