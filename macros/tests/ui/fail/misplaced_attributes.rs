use idemflow::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Draft)]
#[terminal]
#[on(submit = Submitted)]
enum Order {
    #[on(submit = Submitted)]
    Draft,
    #[machine(name = "order")]
    #[terminal(yes)]
    Submitted,
}

fn main() {}
