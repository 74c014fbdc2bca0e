use idemflow::StateMachine;

// A timeout fires one of its own state's events: `send` leaves `Draft`, not
// `Sent`, and `expir` is no event at all.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "invoice", initial = Draft, events = InvoiceEvent)]
enum Invoice {
    #[on(send = Sent)]
    Draft,
    #[timeout(after = "30m", fire = send)]
    #[on(pay = Paid, expire = Expired, remind = Overdue)]
    Sent,
    #[timeout(after = "1d", fire = expir)]
    #[on(expire = Expired)]
    Overdue,
    #[terminal]
    Paid,
    #[terminal]
    Expired,
}

fn main() {}
