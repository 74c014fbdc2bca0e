use idemflow::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Draft)]
enum Order {
    #[on(edit = Draft, submit = Submitted)]
    Draft,
    #[terminal]
    Submitted,
}

fn main() {}
