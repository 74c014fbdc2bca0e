use idemflow::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Draft)]
enum Order {
    #[on(submit = Submitted)]
    Draft,
    #[on(ship = Shiped)]
    Submitted,
    #[terminal]
    Shipped,
}

fn main() {}
