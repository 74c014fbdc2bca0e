//! Several `#[on(..)]` attributes on one variant are merged, in order.
#![deny(warnings)]

use idemflow::{MachineEvent, StateMachine, Transition};

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Pending)]
#[machine(name = "job")]
enum Job {
    #[on(start = Running)]
    #[on(cancel = Cancelled)]
    Pending,
    #[on(finish = Done)]
    #[on(fail = Failed, cancel = Cancelled)]
    Running,
    #[on(retry = Pending)]
    Failed,
    #[terminal]
    Done,
    #[terminal]
    Cancelled,
}

fn main() {
    assert_eq!(Job::machine_name(), "job");
    assert_eq!(
        JobEvent::all(),
        [
            JobEvent::Start,
            JobEvent::Cancel,
            JobEvent::Finish,
            JobEvent::Fail,
            JobEvent::Retry,
        ]
    );
    let t = |from, event, to| Transition::<Job> { from, event, to };
    assert_eq!(
        Job::transitions(),
        [
            t(Job::Pending, JobEvent::Start, Job::Running),
            t(Job::Pending, JobEvent::Cancel, Job::Cancelled),
            t(Job::Running, JobEvent::Finish, Job::Done),
            t(Job::Running, JobEvent::Fail, Job::Failed),
            t(Job::Running, JobEvent::Cancel, Job::Cancelled),
            t(Job::Failed, JobEvent::Retry, Job::Pending),
        ]
    );
    assert_eq!(Job::Failed.next(JobEvent::Retry), Some(Job::Pending));
    assert_eq!(Job::Pending.next(JobEvent::Cancel), Some(Job::Cancelled));
    Job::definition().validate().unwrap();
}
