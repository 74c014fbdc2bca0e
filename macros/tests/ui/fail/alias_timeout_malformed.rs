use idemflow::StateMachine;

// Malformed #[alias] and #[timeout] attributes, each pointing at the token.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "invoice", initial = Draft, events = InvoiceEvent)]
enum Invoice {
    #[alias(drafted)]
    #[alias()]
    #[alias]
    #[alias(42)]
    #[on(send = Sent)]
    Draft,
    #[timeout(after = "30m")]
    #[on(pay = Paid, expire = Expired, remind = Overdue)]
    Sent,
    #[timeout(fire = expire)]
    #[on(pay = Paid, expire = Expired, dispute = Disputed)]
    Overdue,
    #[timeout(after = "1h", after = "2h", fire = "expire", fire = expire)]
    #[on(pay = Paid, expire = Expired, hold = Held)]
    Disputed,
    #[timeout]
    #[on(pay = Paid)]
    Held,
    #[terminal]
    Paid,
    #[terminal]
    Expired,
}

fn main() {}
