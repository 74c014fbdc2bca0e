//! The payment timeout's invariant: no paid order was ever cancelled by a
//! timeout, every abandoned order was, and no timer is left pending.

use idemflow::{Engine, HistoryEntry, TIMER_ACTOR};

use crate::demo::machine::OrderState;
use crate::demo::scenarios::Scenario;
use crate::demo::summary::Check;
use crate::demo::tally::Tally;
use crate::render::group;
use crate::CliResult;

/// What the orders' histories say about the timeout, gathered order by order.
#[derive(Debug, Default)]
pub(crate) struct TimeoutWalk {
    /// Orders with an entry to `Cancelled` by the timer actor.
    pub(crate) cancelled_by_timeout: u64,
    /// Orders with such an entry after an entry to `Paid` (must be none).
    paid_then_cancelled: Vec<String>,
    /// Orders with more than one entry by the timer actor (must be none).
    fired_twice: Vec<String>,
}

impl TimeoutWalk {
    /// Reads one order's history.
    pub(crate) fn visit(&mut self, id: &str, history: &[HistoryEntry<OrderState>]) {
        let by_timer =
            |entry: &HistoryEntry<OrderState>| entry.actor.as_deref() == Some(TIMER_ACTOR);
        let mut paid = false;
        let mut cancelled = false;
        for entry in history {
            if entry.to == OrderState::Paid {
                paid = true;
            }
            if by_timer(entry) && entry.to == OrderState::Cancelled {
                if paid {
                    self.paid_then_cancelled.push(id.to_owned());
                }
                cancelled = true;
            }
        }
        self.cancelled_by_timeout += u64::from(cancelled);
        if history.iter().filter(|entry| by_timer(entry)).count() > 1 {
            self.fired_twice.push(id.to_owned());
        }
    }

    /// The check: nothing paid was cancelled by the timeout, the timeouts
    /// cancelled exactly the abandoned orders and the payments that lost
    /// their race, each once, and no order timer is left pending.
    pub(crate) fn check(&self, engine: &Engine, tally: &Tally) -> CliResult<Check> {
        let pending = engine.timers("order", 1)?.len();
        let abandoned = tally
            .scenarios
            .get(Scenario::Abandoned.name())
            .copied()
            .unwrap_or(0);
        let expected = abandoned + tally.timeout_races_won_by_timeout;
        let races_settled = tally.timeout_races_won_by_pay + tally.timeout_races_won_by_timeout
            == tally.timeout_races;
        let pass = self.paid_then_cancelled.is_empty()
            && self.fired_twice.is_empty()
            && self.cancelled_by_timeout == expected
            && races_settled
            && pending == 0;
        let detail = if pass {
            format!(
                "{} orders cancelled by the timeout = {} abandoned + {} payments that lost the race; payment won {} of {} races; no timer left",
                group(self.cancelled_by_timeout),
                group(abandoned),
                group(tally.timeout_races_won_by_timeout),
                group(tally.timeout_races_won_by_pay),
                group(tally.timeout_races),
            )
        } else {
            format!(
                "{} paid then cancelled by the timeout, {} cancelled twice, {} cancelled by the timeout (expected {expected}), {} of {} races settled, {pending} timers pending; first: {}",
                self.paid_then_cancelled.len(),
                self.fired_twice.len(),
                self.cancelled_by_timeout,
                tally.timeout_races_won_by_pay + tally.timeout_races_won_by_timeout,
                tally.timeout_races,
                self.paid_then_cancelled
                    .first()
                    .or(self.fired_twice.first())
                    .cloned()
                    .unwrap_or_default()
            )
        };
        Ok(Check::new(
            "no paid order was ever cancelled by a timeout",
            pass,
            detail,
        ))
    }
}
