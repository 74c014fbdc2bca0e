// Every problem of a machine is reported in one compilation.
use idemflow::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Draft, colour = "blue")]
enum Order {
    #[on(submit = Submitted, submit = Paid, edit = Draft)]
    Draft,
    #[on(pay = Paid)]
    Submitted,
    Paid,
    #[terminal]
    #[on(reopen = Draft)]
    Shipped,
    #[terminal]
    #[terminal]
    Cancelled,
}

fn main() {
    // The event enum is still generated: no "cannot find type" error here.
    let _ = OrderEvent::Submit;
}
