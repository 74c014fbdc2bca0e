use idemflow::StateMachine;

// A state has at most one timeout.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "invoice", initial = Draft, events = InvoiceEvent)]
enum Invoice {
    #[on(send = Sent)]
    Draft,
    #[timeout(after = "30m", fire = expire)]
    #[on(pay = Paid, expire = Expired, remind = Reminded)]
    #[timeout(after = "10m", fire = remind)]
    Sent,
    #[on(pay = Paid, expire = Expired)]
    Reminded,
    #[terminal]
    Paid,
    #[terminal]
    Expired,
}

fn main() {}
