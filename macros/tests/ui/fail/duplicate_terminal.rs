use idemflow::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Draft)]
enum Order {
    #[on(submit = Submitted)]
    Draft,
    #[terminal]
    #[terminal]
    Submitted,
}

fn main() {}
