use idemflow::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "order")]
enum Order {
    #[on(submit = Submitted)]
    Draft,
    #[terminal]
    Submitted,
}

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Ticket {
    #[on(close = Closed)]
    Open,
    #[terminal]
    Closed,
}

fn main() {}
