use idemflow::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Draft, start = Draft, events = OrderEvent, version = 2)]
enum Order {
    #[on(submit = Submitted)]
    Draft,
    #[terminal]
    Submitted,
}

fn main() {}
