//! `#[derive(StateMachine)]`: the generated API on real machines (aliases,
//! event aliases and timeouts included). The compile-time checks (trybuild
//! snapshots) live in `macros/tests/ui.rs`.

use std::time::Duration;

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

/// A machine that was renamed and merged: `in_progress` became `working`,
/// `waiting` and `queued` were merged into `open`, the event `finish` became
/// `close`; `working` times out.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "ticket", initial = Open, events = TicketEvent)]
#[event_alias(close = "finish")]
#[event_alias(start = "begin", close = "done")]
pub enum Ticket {
    /// Waiting for someone to pick it up.
    #[alias("waiting", "queued")]
    #[on(start = Working, close = Closed)]
    Open,
    #[alias("in_progress")]
    #[timeout(after = "3d", fire = stall)]
    #[on(close = Closed, stall = Stalled)]
    Working,
    #[on(start = Working)]
    #[timeout(after = "90s", fire = start)]
    Stalled,
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
        for alias in state.aliases() {
            assert_eq!(M::from_name(alias), Some(state), "{alias}");
            assert_ne!(state.name(), *alias);
        }
    }
    for &event in M::Event::all() {
        assert_eq!(M::Event::from_name(event.name()), Some(event), "{event:?}");
        for alias in event.aliases() {
            assert_eq!(M::Event::from_name(alias), Some(event), "{alias}");
            assert_ne!(event.name(), *alias);
        }
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
    check_round_trips::<Ticket>();
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
    check_next_matches_transitions::<Ticket>();
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

#[test]
fn state_aliases_read_as_the_current_state() {
    assert_eq!(Ticket::from_name("in_progress"), Some(Ticket::Working));
    assert_eq!(Ticket::from_name("waiting"), Some(Ticket::Open));
    assert_eq!(Ticket::from_name("queued"), Some(Ticket::Open));
    assert_eq!(Ticket::from_name("open"), Some(Ticket::Open));
    // `name` is always the current name.
    assert_eq!(Ticket::Working.name(), "working");
    assert_eq!(Ticket::Open.name(), "open");
    assert_eq!(Ticket::Open.aliases(), ["waiting", "queued"]);
    assert_eq!(Ticket::Working.aliases(), ["in_progress"]);
    assert!(Ticket::Stalled.aliases().is_empty());
    assert!(Ticket::Closed.aliases().is_empty());
    // Old event names are not state names, and machines without aliases have none.
    assert_eq!(Ticket::from_name("finish"), None);
    assert!(OrderState::states().iter().all(|s| s.aliases().is_empty()));
}

#[test]
fn event_aliases_read_as_the_current_event() {
    assert_eq!(TicketEvent::from_name("finish"), Some(TicketEvent::Close));
    assert_eq!(TicketEvent::from_name("done"), Some(TicketEvent::Close));
    assert_eq!(TicketEvent::from_name("begin"), Some(TicketEvent::Start));
    assert_eq!(TicketEvent::from_name("in_progress"), None);
    assert_eq!(TicketEvent::Close.name(), "close");
    assert_eq!(TicketEvent::Close.aliases(), ["finish", "done"]);
    assert_eq!(TicketEvent::Start.aliases(), ["begin"]);
    assert!(TicketEvent::Stall.aliases().is_empty());
    assert!(OrderEvent::all().iter().all(|e| e.aliases().is_empty()));
}

#[test]
fn timeouts_are_declared() {
    assert_eq!(
        Ticket::Working.timeout(),
        Some((Duration::from_secs(3 * 86_400), TicketEvent::Stall))
    );
    assert_eq!(
        Ticket::Stalled.timeout(),
        Some((Duration::from_secs(90), TicketEvent::Start))
    );
    assert_eq!(Ticket::Open.timeout(), None);
    assert_eq!(Ticket::Closed.timeout(), None);
    // The event a timeout fires is one its state declares.
    for &state in Ticket::states() {
        if let Some((_, event)) = state.timeout() {
            assert!(state.next(event).is_some(), "{state:?}");
        }
    }
    assert!(OrderState::states().iter().all(|s| s.timeout().is_none()));
}

#[test]
fn definition_includes_aliases_and_timeouts() {
    let expected = MachineDef::new("ticket", "open")
        .state("open")
        .describe("Waiting for someone to pick it up.")
        .state("working")
        .state("stalled")
        .terminal_state("closed")
        .alias("open", "waiting")
        .alias("open", "queued")
        .alias("working", "in_progress")
        .timeout("working", Duration::from_secs(3 * 86_400), "stall")
        .timeout("stalled", Duration::from_secs(90), "start")
        .transition("open", "start", "working")
        .transition("open", "close", "closed")
        .transition("working", "close", "closed")
        .transition("working", "stall", "stalled")
        .transition("stalled", "start", "working")
        // Grouped by event, in the order of `TicketEvent::all()`.
        .event_alias("start", "begin")
        .event_alias("close", "finish")
        .event_alias("close", "done");
    let def = Ticket::definition();
    def.validate().unwrap();
    assert_eq!(def, expected);
    assert_eq!(def.resolve_state("queued"), Some("open"));
    assert_eq!(def.resolve_event("finish"), Some("close"));
    assert_eq!(def.timeout_of("working").unwrap().after_ms, 259_200_000);
    // Without aliases and timeouts the JSON is as before: no new keys.
    let json = serde_json::to_string(&OrderState::definition()).unwrap();
    assert!(
        !json.contains("aliases") && !json.contains("timeout"),
        "{json}"
    );
}
