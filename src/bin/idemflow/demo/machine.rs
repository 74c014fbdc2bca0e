//! The demo's order machine and what counts as a charge.

use idemflow::{Outcome, StateMachine};

/// The life of an order in a shop.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "order", initial = Draft, events = OrderEvent)]
pub enum OrderState {
    /// Being filled by the customer; not yet submitted.
    #[on(submit = Submitted, cancel = Cancelled)]
    Draft,
    /// Submitted by the customer, waiting for payment.
    #[on(pay = Paid, cancel = Cancelled)]
    Submitted,
    /// Paid: the customer's card was charged.
    #[on(ship = Shipped, refund = Refunded)]
    Paid,
    /// Handed to the carrier.
    #[terminal]
    Shipped,
    /// Cancelled before payment; nothing was charged.
    #[terminal]
    Cancelled,
    /// Paid, then refunded.
    #[terminal]
    Refunded,
}

/// Whether an outcome is an applied payment: the one side effect (a charge)
/// that must happen at most once per order.
pub(crate) fn is_charge(outcome: &Outcome<OrderState>) -> bool {
    outcome.was_applied()
        && !outcome.is_replay()
        && outcome.state() == OrderState::Paid
        && outcome.from() == Some(OrderState::Submitted)
}

/// The entity id of order number `index`.
pub(crate) fn order_id(index: u64) -> String {
    format!("order-{index:06}")
}
