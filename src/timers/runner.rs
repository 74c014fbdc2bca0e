//! The background timer runner: sleeps until the next timer is due (or at
//! most a second, so a clock that jumps or a timer armed meanwhile is seen
//! soon), then fires every due timer through the engine's write path.
//!
//! It holds only a weak reference to the engine: the engine closes when its
//! last handle is dropped, and the runner stops then.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::engine::EngineInner;

/// The longest the runner sleeps without looking.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// The runner thread and the way to wake or stop it.
pub(crate) struct Runner {
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Signal {
    /// (stop, woken)
    state: Mutex<(bool, bool)>,
    wake: Condvar,
}

impl Runner {
    /// Starts the runner for the engine behind `engine`.
    pub(crate) fn start(engine: Weak<EngineInner>) -> std::io::Result<Runner> {
        let signal = Arc::new(Signal::default());
        let thread = {
            let signal = signal.clone();
            std::thread::Builder::new()
                .name("idemflow-timers".to_owned())
                .spawn(move || run(&engine, &signal))?
        };
        Ok(Runner {
            signal,
            thread: Some(thread),
        })
    }

    /// Wakes the runner (a timer was scheduled: it may be due sooner).
    pub(crate) fn wake(&self) {
        let mut state = self
            .signal
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.1 = true;
        drop(state);
        self.signal.wake.notify_one();
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.signal
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0 = true;
        self.signal.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // The engine may be dropped on the runner's own thread (it held
            // the last handle for a moment): never join oneself.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

fn run(engine: &Weak<EngineInner>, signal: &Signal) {
    loop {
        let sleep = {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            match engine.fire_due_timers() {
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "firing due timers failed"),
            }
            match engine.store.next_timer_due() {
                Ok(Some(due)) => {
                    let now = engine.clock.now_ms();
                    Duration::from_millis(due.saturating_sub(now)).min(MAX_SLEEP)
                }
                Ok(None) => MAX_SLEEP,
                Err(error) => {
                    tracing::warn!(%error, "reading the next timer failed");
                    MAX_SLEEP
                }
            }
        };
        let state = signal
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (mut state, _) = signal
            .wake
            .wait_timeout_while(state, sleep, |(stop, woken)| !*stop && !*woken)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.0 {
            return;
        }
        state.1 = false;
    }
}
