use idemflow::StateMachine;

// #[alias] and #[timeout] go on variants; #[event_alias] goes on the enum.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "invoice", initial = Draft, events = InvoiceEvent)]
#[alias("old")]
#[timeout(after = "30m", fire = expire)]
enum Invoice {
    #[on(send = Sent)]
    Draft,
    #[event_alias(pay = "settle")]
    #[on(pay = Paid, expire = Expired)]
    Sent,
    #[terminal]
    Paid,
    #[terminal]
    Expired,
}

fn main() {}
