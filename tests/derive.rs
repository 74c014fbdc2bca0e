//! `#[derive(StateMachine)]`: the generated API on real machines, and the
//! compile-time checks (trybuild snapshots in `tests/ui`).

use idemflow::{MachineDef, MachineEvent, StateMachine, Transition};

/// An order, as in `docs/machines.md`.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "order", initial = Draft, events = OrderEvent)]
pub enum OrderState {
    /// Created, not yet submitted.
    #[on(submit = Submitted, cancel = Cancelled)]
    Draft,
    /// Waiting for payment.
    #[on(pay = Paid, cancel = Cancelled)]
    Submitted,
    /// Paid;
    /// to be shipped.
    #[on(ship = Shipped, refund = Refunded)]
    Paid,
    #[terminal]
    Shipped,
    #[terminal]
    Cancelled,
    #[terminal]
    Refunded,
}

/// A machine relying on every default, with multi-word names and a cycle.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = WaitingForReview)]
pub(crate) enum PullRequest {
    #[on(request_changes = ChangesRequested, approve = Approved)]
    #[on(close = Closed)]
    WaitingForReview,
    #[on(push_fix = WaitingForReview, close = Closed)]
    ChangesRequested,
    #[on(merge = Merged, close = Closed)]
    Approved,
    /// Merged into the main branch.
    #[terminal]
    Merged,
    #[terminal]
    Closed,
}

/// Every `(state, event)` pair of a machine.
fn pairs<M: StateMachine>() -> impl Iterator<Item = (M, M::Event)> {
    M::states()
        .iter()
        .flat_map(|&state| M::Event::all().iter().map(move |&event| (state, event)))
}

fn check_round_trips<M: StateMachine>() {
    for &state in M::states() {
        assert_eq!(M::from_name(state.name()), Some(state), "{state:?}");
    }
    for &event in M::Event::all() {
        assert_eq!(M::Event::from_name(event.name()), Some(event), "{event:?}");
    }
    assert_eq!(M::from_name("no_such_state"), None);
    assert_eq!(M::Event::from_name("no_such_event"), None);
    assert_eq!(M::from_name(""), None);
}

fn check_next_matches_transitions<M: StateMachine>() {
    for (state, event) in pairs::<M>() {
        let declared = M::transitions()
            .iter()
            .find(|t| t.from == state && t.event == event)
            .map(|t| t.to);
        assert_eq!(state.next(event), declared, "{state:?} --{event:?}-->");
    }
    for t in M::transitions() {
        assert_eq!(t.from.next(t.event), Some(t.to));
    }
}

#[test]
fn names_round_trip() {
    check_round_trips::<OrderState>();
    check_round_trips::<PullRequest>();
    assert_eq!(OrderState::Draft.name(), "draft");
    assert_eq!(OrderEvent::Submit.name(), "submit");
    assert_eq!(PullRequest::WaitingForReview.name(), "waiting_for_review");
    assert_eq!(PullRequest::ChangesRequested.name(), "changes_requested");
    assert_eq!(PullRequestEvent::RequestChanges.name(), "request_changes");
    assert_eq!(PullRequestEvent::PushFix.name(), "push_fix");
    // Names are snake_case only: the Rust spelling is not a name.
    assert_eq!(OrderState::from_name("Draft"), None);
    assert_eq!(OrderEvent::from_name("Submit"), None);
}

#[test]
fn next_matches_transitions() {
    check_next_matches_transitions::<OrderState>();
    check_next_matches_transitions::<PullRequest>();
    assert_eq!(
        PullRequest::ChangesRequested.next(PullRequestEvent::PushFix),
        Some(PullRequest::WaitingForReview)
    );
    assert_eq!(PullRequest::Merged.next(PullRequestEvent::Close), None);
}

#[test]
fn states_and_transitions_in_declaration_order() {
    use OrderEvent as E;
    use OrderState as S;
    assert_eq!(
        S::states(),
        [
            S::Draft,
            S::Submitted,
            S::Paid,
            S::Shipped,
            S::Cancelled,
            S::Refunded
        ]
    );
    let t = |from, event, to| Transition::<S> { from, event, to };
    assert_eq!(
        S::transitions(),
        [
            t(S::Draft, E::Submit, S::Submitted),
            t(S::Draft, E::Cancel, S::Cancelled),
            t(S::Submitted, E::Pay, S::Paid),
            t(S::Submitted, E::Cancel, S::Cancelled),
            t(S::Paid, E::Ship, S::Shipped),
            t(S::Paid, E::Refund, S::Refunded),
        ]
    );
    // `&'static` slices: the same memory on every call.
    assert!(std::ptr::eq(S::states(), S::states()));
    assert!(std::ptr::eq(S::transitions(), S::transitions()));
}

#[test]
fn event_variants_in_order_of_first_appearance() {
    assert_eq!(
        OrderEvent::all(),
        [
            OrderEvent::Submit,
            OrderEvent::Cancel,
            OrderEvent::Pay,
            OrderEvent::Ship,
            OrderEvent::Refund
        ]
    );
    assert_eq!(
        PullRequestEvent::all(),
        [
            PullRequestEvent::RequestChanges,
            PullRequestEvent::Approve,
            PullRequestEvent::Close,
            PullRequestEvent::PushFix,
            PullRequestEvent::Merge
        ]
    );
    let names: Vec<&str> = OrderEvent::all().iter().map(|e| e.name()).collect();
    assert_eq!(names, OrderState::definition().events());
}

#[test]
fn terminal_states() {
    let terminal: Vec<OrderState> = OrderState::states()
        .iter()
        .copied()
        .filter(|state| state.is_terminal())
        .collect();
    assert_eq!(
        terminal,
        [
            OrderState::Shipped,
            OrderState::Cancelled,
            OrderState::Refunded
        ]
    );
    for &state in OrderState::states() {
        let leaves = OrderState::transitions().iter().any(|t| t.from == state);
        assert_eq!(state.is_terminal(), !leaves, "{state:?}");
    }
}

#[test]
fn machine_names() {
    assert_eq!(OrderState::machine_name(), "order");
    assert_eq!(PullRequest::machine_name(), "pull_request");
    assert_eq!(OrderState::initial(), OrderState::Draft);
    assert_eq!(PullRequest::initial(), PullRequest::WaitingForReview);
}

#[test]
fn definition_validates_and_matches() {
    let expected = MachineDef::new("order", "draft")
        .state("draft")
        .describe("Created, not yet submitted.")
        .state("submitted")
        .describe("Waiting for payment.")
        .state("paid")
        .describe("Paid;\nto be shipped.")
        .terminal_state("shipped")
        .terminal_state("cancelled")
        .terminal_state("refunded")
        .transition("draft", "submit", "submitted")
        .transition("draft", "cancel", "cancelled")
        .transition("submitted", "pay", "paid")
        .transition("submitted", "cancel", "cancelled")
        .transition("paid", "ship", "shipped")
        .transition("paid", "refund", "refunded");
    let def = OrderState::definition();
    def.validate().unwrap();
    assert_eq!(def, expected);

    let def = PullRequest::definition();
    def.validate().unwrap();
    assert_eq!(def.name, "pull_request");
    assert_eq!(def.initial, "waiting_for_review");
    assert_eq!(
        def.find_state("merged").unwrap().description.as_deref(),
        Some("Merged into the main branch.")
    );
    assert_eq!(def.find_state("closed").unwrap().description, None);
    assert_eq!(def.terminal_states(), ["merged", "closed"]);
}

#[test]
fn descriptions() {
    assert_eq!(
        OrderState::Draft.description(),
        Some("Created, not yet submitted.")
    );
    assert_eq!(
        OrderState::Paid.description(),
        Some("Paid;\nto be shipped.")
    );
    assert_eq!(OrderState::Shipped.description(), None);
}

/// The compile-time checks, one file per rule, and machines that must
/// compile and run. Refresh the snapshots with `TRYBUILD=overwrite`.
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
