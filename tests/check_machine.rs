//! `idemflow::testing::check_machine` (feature `testing`, enabled for this
//! crate's tests) on the machines of the test suite: the engine agrees with
//! the reference model on each. That the checker fails on an engine that
//! breaks the spec is shown by the unit tests of `src/testing/check.rs`
//! (doubles that apply a replay again, ignore expected versions, forget keys).

mod common;

use idemflow::testing::{check_machine, check_machine_with, CheckConfig};

use common::{OrderState, Ticket};

/// A machine with one event declared from two states to one target, and a
/// declared timeout (timers never fire in the check: its clock stands still).
#[derive(idemflow::StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "invoice", initial = Draft, events = InvoiceEvent)]
enum Invoice {
    #[on(send = Sent, void = Void)]
    Draft,
    #[timeout(after = "30m", fire = expire)]
    #[on(pay = Paid, expire = Expired, void = Void)]
    Sent,
    #[terminal]
    Paid,
    #[terminal]
    Expired,
    #[terminal]
    Void,
}

#[test]
fn order_machine_matches_the_model() {
    check_machine::<OrderState>();
}

#[test]
fn ticket_machine_matches_the_model() {
    check_machine::<Ticket>();
}

#[test]
fn machine_with_a_timeout_matches_the_model() {
    check_machine_with::<Invoice>(CheckConfig::default().cases(16).steps(25));
}
