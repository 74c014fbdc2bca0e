//! A merge: two old states become one by listing both old names on it.
#![deny(warnings)]

use idemflow::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "job", initial = Pending)]
enum Job {
    /// Formerly two states, `waiting` and `queued`.
    #[alias("waiting", "queued")]
    #[on(run = Running)]
    Pending,
    #[alias("in_progress")]
    #[on(finish = Done)]
    Running,
    #[terminal]
    Done,
}

fn main() {
    assert_eq!(Job::from_name("waiting"), Some(Job::Pending));
    assert_eq!(Job::from_name("queued"), Some(Job::Pending));
    assert_eq!(Job::from_name("pending"), Some(Job::Pending));
    assert_eq!(Job::from_name("in_progress"), Some(Job::Running));
    assert_eq!(Job::Pending.name(), "pending");
    assert_eq!(Job::Pending.aliases(), ["waiting", "queued"]);
    for &state in Job::states() {
        assert_eq!(Job::from_name(state.name()), Some(state));
        for alias in state.aliases() {
            assert_eq!(Job::from_name(alias), Some(state));
        }
    }
    let def = Job::definition();
    def.validate().unwrap();
    assert_eq!(def.find_state("pending").unwrap().aliases, ["waiting", "queued"]);
    assert_eq!(def.resolve_state("queued"), Some("pending"));
}
