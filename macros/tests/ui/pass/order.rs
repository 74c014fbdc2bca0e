//! The order machine of the documentation, exactly as written there.
#![deny(warnings)]

use idemflow::{MachineEvent, StateMachine};

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "order", initial = Draft, events = OrderEvent)]
pub enum OrderState {
    /// Created, not yet submitted.
    #[on(submit = Submitted, cancel = Cancelled)]
    Draft,
    #[on(pay = Paid, cancel = Cancelled)]
    Submitted,
    #[on(ship = Shipped, refund = Refunded)]
    Paid,
    #[terminal]
    Shipped,
    #[terminal]
    Cancelled,
    #[terminal]
    Refunded,
}

fn main() {
    assert_eq!(OrderState::machine_name(), "order");
    assert_eq!(OrderState::initial(), OrderState::Draft);
    assert_eq!(OrderState::states().len(), 6);
    assert_eq!(OrderState::transitions().len(), 6);
    assert_eq!(
        OrderState::Draft.next(OrderEvent::Submit),
        Some(OrderState::Submitted)
    );
    assert_eq!(
        OrderState::Submitted.next(OrderEvent::Cancel),
        Some(OrderState::Cancelled)
    );
    assert_eq!(OrderState::Draft.next(OrderEvent::Pay), None);
    assert_eq!(OrderState::Shipped.next(OrderEvent::Cancel), None);
    assert_eq!(
        OrderEvent::all(),
        [
            OrderEvent::Submit,
            OrderEvent::Cancel,
            OrderEvent::Pay,
            OrderEvent::Ship,
            OrderEvent::Refund,
        ]
    );
    assert_eq!(
        OrderState::Draft.description(),
        Some("Created, not yet submitted.")
    );
    assert_eq!(OrderState::Paid.description(), None);
    assert!(OrderState::Refunded.is_terminal());
    assert!(!OrderState::Paid.is_terminal());
    OrderState::definition().validate().unwrap();
}
