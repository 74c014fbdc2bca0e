use idemflow::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Draft)]
enum Order {
    #[on(submit = Submitted, cancel = Cancelled)]
    #[on(cancel = Submitted)]
    Draft,
    #[on(cancel = Cancelled)]
    Submitted,
    #[terminal]
    Cancelled,
}

fn main() {}
