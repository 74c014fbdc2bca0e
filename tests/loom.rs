//! Model checking of the commit pipeline's hand-off and durable mark with
//! loom: every interleaving of a few threads (bounded), not just the ones a
//! stress test happens to hit. The very same source files as the library's
//! (`src/write/handoff.rs`, `src/write/durable.rs`) are compiled here against
//! loom's primitives through a `sync` module of this crate.

#![allow(dead_code)]

mod sync {
    pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
    pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
    pub(crate) use loom::thread::yield_now;
}

#[path = "../src/write/handoff.rs"]
mod handoff;

#[path = "../src/write/durable.rs"]
mod durable;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use durable::DurabilityTracker;
use handoff::{Abandoned, Batch, Handoff};

/// A `lead` callback that answers each job with ten times its value and
/// checks that no two batches ever run at once.
fn answering<'a>(
    running: &'a AtomicBool,
    batches: &'a AtomicUsize,
) -> impl FnMut(Batch<u32, u32>) -> Box<dyn FnOnce()> + 'a {
    move |batch| {
        assert!(
            !running.swap(true, Ordering::SeqCst),
            "two batches ran at once"
        );
        batches.fetch_add(1, Ordering::SeqCst);
        // Half the answers now, half after the leadership is passed on (as
        // the writer answers after a pipelined sync).
        let mut later = Vec::new();
        for (job, ticket) in batch {
            if job % 2 == 0 {
                ticket.answer(job * 10);
            } else {
                later.push((job, ticket));
            }
        }
        running.store(false, Ordering::SeqCst);
        Box::new(move || {
            for (job, ticket) in later {
                ticket.answer(job * 10);
            }
        })
    }
}

fn bounded() -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder
}

#[test]
fn concurrent_callers_each_get_their_own_answer_one_batch_at_a_time() {
    bounded().check(|| {
        let handoff = Arc::new(Handoff::<u32, u32>::new(8));
        let running = Arc::new(AtomicBool::new(false));
        let batches = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (1..=2)
            .map(|job| {
                let (handoff, running, batches) =
                    (handoff.clone(), running.clone(), batches.clone());
                thread::spawn(move || handoff.submit(job, &mut answering(&running, &batches)))
            })
            .collect();
        let mine = handoff.submit(3, &mut answering(&running, &batches));
        assert_eq!(mine, Ok(30));
        for (n, caller) in callers.into_iter().enumerate() {
            assert_eq!(caller.join().unwrap(), Ok((n as u32 + 1) * 10));
        }
        let batches = batches.load(Ordering::SeqCst);
        assert!((1..=3).contains(&batches), "{batches} batches");
    });
}

#[test]
fn leadership_passes_on_until_every_job_is_answered() {
    // Batches of one: every job needs a turn of its own, so leadership must
    // pass from caller to caller.
    bounded().check(|| {
        let handoff = Arc::new(Handoff::<u32, u32>::new(1));
        let running = Arc::new(AtomicBool::new(false));
        let batches = Arc::new(AtomicUsize::new(0));
        let caller = {
            let (handoff, running, batches) = (handoff.clone(), running.clone(), batches.clone());
            thread::spawn(move || handoff.submit(1, &mut answering(&running, &batches)))
        };
        assert_eq!(
            handoff.submit(2, &mut answering(&running, &batches)),
            Ok(20)
        );
        assert_eq!(caller.join().unwrap(), Ok(10));
        assert_eq!(batches.load(Ordering::SeqCst), 2);
    });
}

#[test]
fn several_jobs_of_one_caller_and_a_concurrent_caller_are_all_answered() {
    // Batches of one: the caller of three jobs must keep receiving the
    // leadership for each of its jobs in turn, with another caller between.
    bounded().check(|| {
        let handoff = Arc::new(Handoff::<u32, u32>::new(1));
        let running = Arc::new(AtomicBool::new(false));
        let batches = Arc::new(AtomicUsize::new(0));
        let other = {
            let (handoff, running, batches) = (handoff.clone(), running.clone(), batches.clone());
            thread::spawn(move || handoff.submit(9, &mut answering(&running, &batches)))
        };
        let mine = handoff.submit_all(vec![1, 2, 3], &mut answering(&running, &batches));
        assert_eq!(mine, vec![Ok(10), Ok(20), Ok(30)]);
        assert_eq!(other.join().unwrap(), Ok(90));
        assert_eq!(batches.load(Ordering::SeqCst), 4);
    });
}

#[test]
fn a_batch_that_drops_its_tickets_answers_abandoned_and_passes_leadership() {
    bounded().check(|| {
        let handoff = Arc::new(Handoff::<u32, u32>::new(8));
        // Job 1's batch "panics": its tickets are dropped unanswered.
        let caller = {
            let handoff = handoff.clone();
            thread::spawn(move || {
                handoff.submit(1, &mut |batch: Batch<u32, u32>| {
                    for (job, ticket) in batch {
                        if job != 1 {
                            ticket.answer(job * 10);
                        }
                    }
                    || {}
                })
            })
        };
        let mine = handoff.submit(2, &mut |batch: Batch<u32, u32>| {
            for (job, ticket) in batch {
                if job != 1 {
                    ticket.answer(job * 10);
                }
            }
            || {}
        });
        assert_eq!(mine, Ok(20));
        assert_eq!(caller.join().unwrap(), Err(Abandoned));
        // Nobody still leads: a later job is served.
        let later = handoff.submit(3, &mut |batch: Batch<u32, u32>| {
            for (job, ticket) in batch {
                ticket.answer(job * 10);
            }
            || {}
        });
        assert_eq!(later, Ok(30));
    });
}

#[test]
fn closing_answers_every_waiting_caller() {
    bounded().check(|| {
        let handoff = Arc::new(Handoff::<u32, u32>::new(8));
        let caller = {
            let handoff = handoff.clone();
            thread::spawn(move || {
                handoff.submit(1, &mut |batch: Batch<u32, u32>| {
                    for (job, ticket) in batch {
                        ticket.answer(job * 10);
                    }
                    || {}
                })
            })
        };
        handoff.close();
        // Answered if it got in before the close, abandoned otherwise; it
        // never hangs (loom reports a deadlock if it could).
        let result = caller.join().unwrap();
        assert!(result == Ok(10) || result == Err(Abandoned), "{result:?}");
        assert_eq!(
            handoff.submit(2, &mut |_: Batch<u32, u32>| || {}),
            Err(Abandoned)
        );
    });
}

#[test]
fn a_reader_never_sees_an_unsynced_commit_as_durable() {
    loom::model(|| {
        let tracker = Arc::new(DurabilityTracker::default());
        let visible = Arc::new(AtomicBool::new(false));
        let synced = Arc::new(AtomicBool::new(false));
        let writer = {
            let (tracker, visible, synced) = (tracker.clone(), visible.clone(), synced.clone());
            thread::spawn(move || {
                tracker.begin_commit();
                visible.store(true, Ordering::SeqCst); // the commit's writes
                let covered = tracker.covered_by_sync_now();
                synced.store(true, Ordering::SeqCst); // the sync
                tracker.synced(covered);
            })
        };
        // A reader: reads, then takes its ticket.
        if visible.load(Ordering::SeqCst) {
            let ticket = tracker.read_ticket();
            if tracker.is_durable(ticket) {
                assert!(
                    synced.load(Ordering::SeqCst),
                    "a change the reader saw was reported durable before its sync"
                );
            }
        } else {
            // Nothing seen: an idle ticket needs no wait.
            let _ = tracker.read_ticket();
        }
        writer.join().unwrap();
        assert!(tracker.is_durable(tracker.read_ticket()));
    });
}
