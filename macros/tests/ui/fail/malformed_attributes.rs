use idemflow::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(events = "OrderEvent", initial = Draft, initial = Submitted, name = "")]
enum Order {
    #[on(submit = Submitted)]
    #[on()]
    Draft,
    #[on(pay)]
    Submitted,
    #[on(ship = "Shipped", pack = Packed)]
    Paid,
    #[on(order::ship = Shipped)]
    Packed,
    #[terminal]
    Shipped,
}

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine]
enum Ticket {
    #[on]
    Open,
}

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Off, events = Switch)]
enum Switch {
    #[on(toggle = On)]
    Off,
    #[on(toggle = Off)]
    On,
}

fn main() {}
