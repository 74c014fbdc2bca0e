// An invalid machine still generates its event enum and a stub impl, so the
// code using it reports no follow-up errors: only the machine's own.
use idemflow::{MachineEvent, StateMachine};

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Draft)]
enum Order {
    #[on(submit = Submited)]
    Draft,
    #[terminal]
    Submitted,
}

fn main() {
    let _ = Order::Draft.next(OrderEvent::Submit);
    let _ = OrderEvent::all();
    let _ = Order::definition();
}
