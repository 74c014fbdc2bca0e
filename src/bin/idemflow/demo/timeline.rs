//! One process's run of the demo's time line: the phases of [`Phase`] over
//! its orders, on client threads, with its manual clock moved between them
//! and the due timeouts fired by `run_due_timers`.
//!
//! With `--processes`, every process runs this on its share of the orders
//! and waits for the others between phases (the `between` callback), so
//! that no process fires a timeout while another still has a payment to
//! make before it. Every process fires due timers: they may fire one timer
//! at once, which is safe (a second firing is a replay or finds the order
//! moved on), and the demo checks it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::Duration;

use idemflow::testing::ManualClock;
use idemflow::{Engine, Machine};
use indicatif::ProgressBar;

use super::join;
use super::machine::{OrderState, PAYMENT_TIMEOUT};
use super::scenarios::{Client, Later, Phase};
use super::tally::Tally;
use crate::cli::DemoArgs;
use crate::CliResult;

/// How long before the timeout the late payments come.
const JUST_BEFORE: Duration = Duration::from_secs(60);

/// One process's part of the demo.
pub(crate) struct Process<'a> {
    /// The process's engine (its clock is `clock`).
    pub(crate) engine: &'a Engine,
    /// Its order machine.
    pub(crate) orders: &'a Machine<OrderState>,
    /// The engine's clock, moved by the demo.
    pub(crate) clock: &'a ManualClock,
    /// Applied payments per order: the simulated card charges.
    pub(crate) charges: &'a [AtomicU32],
    /// The demo's arguments.
    pub(crate) args: &'a DemoArgs,
    /// Its orders: `first`, `first + step`, ... below `--orders`.
    pub(crate) first: u64,
    /// See `first`.
    pub(crate) step: u64,
    /// Counts orders through their first phase.
    pub(crate) progress: &'a ProgressBar,
}

impl Process<'_> {
    /// Runs every phase; `between` is called after each phase but the last,
    /// before the clock moves on. Returns the counters of all its threads.
    pub(crate) fn drive(&self, between: &mut dyn FnMut(Phase) -> CliResult) -> CliResult<Tally> {
        let mut clients: Vec<Client<'_>> = (0..self.args.threads)
            .map(|_| Client {
                orders: self.orders,
                charges: self.charges,
                rate: self.args.duplicate_rate,
                seed: self.args.seed,
                tally: Tally::default(),
                later: Vec::new(),
            })
            .collect();
        self.start(&mut clients);
        let mut later: Vec<Later> = clients
            .iter_mut()
            .flat_map(|client| std::mem::take(&mut client.later))
            .collect();
        let mut take = |phase: Phase| -> Vec<Later> {
            let (now, rest) = std::mem::take(&mut later)
                .into_iter()
                .partition(|item| item.scenario.phase() == phase);
            later = rest;
            now
        };
        let mut fired = 0u64;
        between(Phase::Start)?;

        // A minute before the timeouts: none is due yet, the late payments apply.
        self.clock
            .advance(PAYMENT_TIMEOUT.saturating_sub(JUST_BEFORE));
        fired += self.fire_due()?;
        self.finish(&mut clients, take(Phase::BeforeTimeout), None)?;
        between(Phase::BeforeTimeout)?;

        // A minute after: every timeout is due; payments race the firing.
        self.clock.advance(JUST_BEFORE.saturating_mul(2));
        fired += self.finish(&mut clients, take(Phase::AtTimeout), Some(self.engine))?;
        between(Phase::AtTimeout)?;

        // Every process fired what was due: late payments find orders cancelled.
        fired += self.fire_due()?;
        self.finish(&mut clients, take(Phase::AfterTimeout), None)?;

        let mut tally = Tally::default();
        for client in clients {
            tally.merge(client.tally);
        }
        tally.timer_firings = fired;
        Ok(tally)
    }

    /// Fires the timers due now; returns how many were processed.
    fn fire_due(&self) -> CliResult<u64> {
        Ok(self.engine.run_due_timers()? as u64)
    }

    /// The first phase: every order of this process, on all client threads.
    fn start(&self, clients: &mut [Client<'_>]) {
        let count = self.args.orders;
        let next = AtomicU64::new(0);
        thread::scope(|scope| {
            let threads: Vec<_> = clients
                .iter_mut()
                .map(|client| {
                    let next = &next;
                    scope.spawn(move || loop {
                        let order = self.first + self.step * next.fetch_add(1, Ordering::Relaxed);
                        if order >= count {
                            break;
                        }
                        client.run_order(order);
                        self.progress.inc(1);
                    })
                })
                .collect();
            threads.into_iter().for_each(join);
        });
    }

    /// A later phase: the rest of these orders on all client threads; with
    /// `timers`, one more thread fires the due timers at the same moment.
    /// Returns how many timers it processed.
    fn finish(
        &self,
        clients: &mut [Client<'_>],
        items: Vec<Later>,
        timers: Option<&Engine>,
    ) -> CliResult<u64> {
        let queue = Mutex::new(items.into_iter());
        let parties = clients.len() + usize::from(timers.is_some());
        let start = Barrier::new(parties);
        thread::scope(|scope| {
            let runner = timers.map(|engine| {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    engine.run_due_timers()
                })
            });
            let threads: Vec<_> = clients
                .iter_mut()
                .map(|client| {
                    let (queue, start) = (&queue, &start);
                    scope.spawn(move || {
                        start.wait();
                        loop {
                            let next = queue.lock().ok().and_then(|mut items| items.next());
                            let Some(item) = next else { break };
                            client.run_later(item);
                        }
                    })
                })
                .collect();
            threads.into_iter().for_each(join);
            match runner {
                Some(runner) => Ok(join(runner)? as u64),
                None => Ok(0),
            }
        })
    }
}
