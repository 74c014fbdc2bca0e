use idemflow::StateMachine;

// #[timeout] takes `after` and `fire`; #[alias] takes only old names.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "invoice", initial = Draft, events = InvoiceEvent)]
enum Invoice {
    #[alias(name = "new", "drafted")]
    #[on(send = Sent)]
    Draft,
    #[timeout(after = "30m", fire = expire, repeat = true)]
    #[on(pay = Paid, expire = Expired, remind = Overdue)]
    Sent,
    #[timeout(afer = "30m", fire = expire)]
    #[on(pay = Paid, expire = Expired)]
    Overdue,
    #[terminal]
    Paid,
    #[terminal]
    Expired,
}

fn main() {}
