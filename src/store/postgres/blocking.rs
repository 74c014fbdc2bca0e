//! Whether the calling thread may block on the PostgreSQL client right now.
//!
//! The blocking `postgres` client runs every call with `block_on` on a
//! tokio runtime of its own, and tokio panics ("Cannot start a runtime from
//! within a runtime") when `block_on` is called on a thread that is
//! running async code: a runtime's worker thread, or inside another
//! runtime's `block_on`. Inside `tokio::task::block_in_place`, on a
//! `spawn_blocking` thread, and on any thread outside a runtime, blocking
//! is allowed. [`check`] turns the misuse into an
//! [`Error::BlockingInAsync`] before any PostgreSQL call is made (or any
//! request is handed to the commit pipeline), so the panic never crosses
//! the public API and never reaches a batch that serves other callers.
//!
//! # Why a probe
//!
//! tokio keeps "is this thread inside a runtime?" in a private thread-local
//! (`context::runtime::EnterRuntime`); no public API reads it without
//! panicking. `Handle::try_current()` is not it: it is `Ok` inside
//! `block_in_place` and on `spawn_blocking` threads, where blocking is
//! fine. Nor are `task::try_id()` (set inside `block_in_place` too) or
//! the runtime flavor. So [`may_block`] asks tokio itself, the way the
//! client will: `block_on` of an empty future on a small current-thread
//! runtime of ours, under `catch_unwind`. It panics exactly where the
//! client's `block_on` would (the same check, `enter_runtime`, in the same
//! tokio), and costs next to nothing otherwise. `Handle::try_current()`
//! comes first as a fast path: without a runtime handle on the thread, no
//! runtime is entered (entering one sets the handle), so the probe is
//! skipped for plain threads.
//!
//! While the thread is already panicking (a drop during unwinding), a
//! probe's panic would abort the process, so no probe runs: a thread with
//! a runtime handle is then refused.
//!
//! The probe's panic goes through the panic hook, so a misuse prints
//! tokio's message on stderr once per refused call (the call still
//! returns the typed error). Built with `panic = "abort"`, a misuse aborts
//! the process, as the client's own panic would.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

use crate::error::{Error, Result};

/// The probe runtime: current-thread, no I/O or timer driver, no threads.
/// `None` if it could not be built (then nothing is refused).
fn probe() -> Option<&'static Runtime> {
    static PROBE: OnceLock<Option<Runtime>> = OnceLock::new();
    PROBE
        .get_or_init(|| Builder::new_current_thread().build().ok())
        .as_ref()
}

/// Whether this thread may block on a tokio runtime now: `false` on a
/// thread that runs async code (where the client's `block_on` panics).
pub(crate) fn may_block() -> bool {
    if tokio::runtime::Handle::try_current().is_err() {
        return true;
    }
    if std::thread::panicking() {
        // A second panic while unwinding aborts the process, even under
        // `catch_unwind`: no probe then. A thread with a runtime handle is
        // refused (safe; inexact only inside `block_in_place` or
        // `spawn_blocking` while a panic unwinds, where a drop's last sync
        // is skipped).
        return false;
    }
    match probe() {
        Some(runtime) => catch_unwind(AssertUnwindSafe(|| runtime.block_on(async {}))).is_ok(),
        None => true,
    }
}

/// `Ok` if this thread may make PostgreSQL calls now, else an
/// [`Error::BlockingInAsync`] naming `operation`.
pub(crate) fn check(operation: &str) -> Result<()> {
    if may_block() {
        Ok(())
    } else {
        Err(Error::BlockingInAsync {
            operation: operation.to_owned(),
        })
    }
}

/// Drops `value` (connections: dropping one closes it, which blocks on the
/// client's runtime) here if this thread has no tokio runtime handle, else
/// on a new thread of its own, so an engine dropped in async code (the
/// last clone of an async handle, say) never panics. A thread with a
/// handle may be allowed to block (inside `block_in_place`), but telling
/// that takes the probe, whose panic prints a message: closing on another
/// thread is right either way. If no thread can be started, `value` is
/// leaked (its sockets close when the process ends) rather than panic.
pub(crate) fn drop_off_runtime<T: Send + 'static>(value: T) {
    if tokio::runtime::Handle::try_current().is_err() {
        drop(value);
        return;
    }
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(value)));
    let theirs = slot.clone();
    let spawned = std::thread::Builder::new()
        .name("idemflow-pg-close".to_owned())
        .spawn(move || drop(take(&theirs)));
    if spawned.is_err() {
        std::mem::forget(take(&slot));
    }
}

/// Takes the value out of `slot`, poisoned or not.
fn take<T>(slot: &std::sync::Mutex<Option<T>>) -> Option<T> {
    slot.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_thread_may_block() {
        assert!(may_block());
        assert!(check("reading").is_ok());
    }

    #[test]
    fn async_code_may_not_block() {
        let runtime = Builder::new_current_thread().build().expect("a runtime");
        let refused = runtime.block_on(async { check("reading an entity") });
        match refused {
            Err(Error::BlockingInAsync { operation }) => assert_eq!(operation, "reading an entity"),
            other => panic!("expected BlockingInAsync, got {other:?}"),
        }
        // A handle entered without running async code is no obstacle.
        let _entered = runtime.enter();
        assert!(may_block());
    }

    #[test]
    fn block_in_place_and_spawn_blocking_may_block() {
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("a runtime");
        let (on_worker, in_place, on_pool) = runtime.block_on(async {
            let task =
                tokio::spawn(async { (may_block(), tokio::task::block_in_place(may_block)) });
            let (on_worker, in_place) = task.await.expect("the task");
            let on_pool = tokio::task::spawn_blocking(may_block)
                .await
                .expect("the blocking task");
            (on_worker, in_place, on_pool)
        });
        assert!(!on_worker && in_place && on_pool);
    }

    #[test]
    fn a_dropped_value_is_dropped_on_and_off_a_runtime() {
        let (sender, dropped) = std::sync::mpsc::channel::<()>();
        drop_off_runtime(sender.clone());
        let runtime = Builder::new_current_thread().build().expect("a runtime");
        runtime.block_on(async move { drop_off_runtime(sender) });
        // Every sender is gone once both drops ran.
        assert!(dropped.recv().is_err());
    }

    #[test]
    #[ignore = "prints the probe's cost; run by hand"]
    fn probe_cost() {
        fn time(what: &str) {
            const CALLS: u32 = 1_000_000;
            let started = std::time::Instant::now();
            let mut allowed = 0u32;
            for _ in 0..CALLS {
                allowed += u32::from(std::hint::black_box(may_block()));
            }
            let nanos = started.elapsed().as_nanos() / u128::from(CALLS);
            println!("{what}: {nanos} ns per call ({allowed} allowed)");
        }
        time("plain thread");
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            tokio::spawn(async {
                tokio::task::block_in_place(|| time("block_in_place"));
            })
            .await
            .expect("the task");
            tokio::task::spawn_blocking(|| time("spawn_blocking"))
                .await
                .expect("the blocking task");
        });
    }
}
