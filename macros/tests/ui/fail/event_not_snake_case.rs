use idemflow::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Draft)]
enum Order {
    #[on(Submit = Submitted, markPaid = Paid)]
    Draft,
    #[on(ship_2 = Shipped, ship2 = Paid)]
    Submitted,
    #[on(self = Shipped)]
    Paid,
    #[terminal]
    Shipped,
}

fn main() {}
