use idemflow::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Draft)]
enum Order<const VERSION: u8> {
    #[on(submit = Submitted)]
    Draft,
    #[terminal]
    Submitted,
}

fn main() {}
