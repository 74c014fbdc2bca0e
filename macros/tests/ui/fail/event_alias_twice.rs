use idemflow::StateMachine;

// One old event name reads as one event only.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Open)]
#[event_alias(close = "finish", start = "begin")]
#[event_alias(start = "finish", close = "finish")]
enum Ticket {
    #[on(start = Working)]
    Open,
    #[on(close = Closed)]
    Working,
    #[terminal]
    Closed,
}

fn main() {}
