use idemflow::StateMachine;

// No transition leaves a terminal state, so it has nothing to fire.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "invoice", initial = Draft, events = InvoiceEvent)]
enum Invoice {
    #[on(send = Sent)]
    Draft,
    #[on(pay = Paid, expire = Expired)]
    Sent,
    #[terminal]
    Paid,
    #[timeout(after = "30d", fire = expire)]
    #[terminal]
    Expired,
}

fn main() {}
