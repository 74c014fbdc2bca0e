//! `#[timeout(after = "..", fire = event)]`: the documented invoice, and
//! every unit.
#![deny(warnings)]

use std::time::Duration;

use idemflow::{StateMachine, TimeoutDef};

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "invoice", initial = Draft, events = InvoiceEvent)]
pub enum Invoice {
    #[on(send = Sent)]
    Draft,
    #[timeout(after = "30m", fire = expire)] // units: ms, s, m, h, d
    #[on(pay = Paid, expire = Expired)]
    Sent,
    #[terminal] Paid,
    #[terminal] Expired,
}

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = A)]
enum Units {
    #[timeout(after = "1500ms", fire = next)]
    #[on(next = B)]
    A,
    #[on(next = C, back = A)]
    #[timeout(after = "90s", fire = back)]
    B,
    #[timeout(fire = next, after = "2h")]
    #[on(next = D)]
    C,
    #[timeout(after = "7d", fire = next)]
    #[on(next = E)]
    D,
    #[terminal]
    E,
}

fn main() {
    assert_eq!(
        Invoice::Sent.timeout(),
        Some((Duration::from_secs(30 * 60), InvoiceEvent::Expire))
    );
    assert_eq!(Invoice::Draft.timeout(), None);
    assert_eq!(Invoice::Paid.timeout(), None);
    let def = Invoice::definition();
    def.validate().unwrap();
    assert_eq!(
        def.timeout_of("sent"),
        Some(&TimeoutDef { after_ms: 1_800_000, event: "expire".to_owned() })
    );
    assert_eq!(def.timeout_of("draft"), None);
    // The timed transition is still an ordinary one.
    assert_eq!(Invoice::Sent.next(InvoiceEvent::Expire), Some(Invoice::Expired));

    assert_eq!(Units::A.timeout(), Some((Duration::from_millis(1500), UnitsEvent::Next)));
    assert_eq!(Units::B.timeout(), Some((Duration::from_secs(90), UnitsEvent::Back)));
    assert_eq!(Units::C.timeout(), Some((Duration::from_secs(2 * 3600), UnitsEvent::Next)));
    assert_eq!(Units::D.timeout(), Some((Duration::from_secs(7 * 86_400), UnitsEvent::Next)));
    assert_eq!(Units::E.timeout(), None);
    let def = Units::definition();
    def.validate().unwrap();
    let after: Vec<Option<u64>> = def
        .states
        .iter()
        .map(|s| s.timeout.as_ref().map(|t| t.after_ms))
        .collect();
    assert_eq!(
        after,
        [Some(1_500), Some(90_000), Some(7_200_000), Some(604_800_000), None]
    );
}
