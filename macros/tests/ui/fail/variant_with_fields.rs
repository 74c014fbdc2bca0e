use idemflow::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Draft)]
enum Order {
    #[on(pay = Paid)]
    Draft,
    #[on(ship = Shipped)]
    Paid(u64),
    #[terminal]
    Shipped { carrier: u32 },
}

fn main() {}
