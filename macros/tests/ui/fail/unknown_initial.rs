use idemflow::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Draf)]
enum Order {
    #[on(submit = Submitted)]
    Draft,
    #[terminal]
    Submitted,
}

fn main() {}
