//! The demo's order machine and what counts as a charge.

use std::time::Duration;

use idemflow::{Outcome, StateMachine};

/// How long a submitted order waits for its payment: the `Submitted`
/// state's declared timeout (keep the two equal).
pub(crate) const PAYMENT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The life of an order in a shop.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "order", initial = Draft, events = OrderEvent)]
pub enum OrderState {
    /// Being filled by the customer; not yet submitted.
    #[on(submit = Submitted, cancel = Cancelled)]
    Draft,
    /// Submitted by the customer, waiting for payment; cancelled if unpaid
    /// after 30 minutes.
    #[timeout(after = "30m", fire = cancel)]
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
