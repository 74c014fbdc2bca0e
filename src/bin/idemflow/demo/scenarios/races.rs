//! Racing requests: pay against cancel, identical payments at once, and a
//! payment against the timeout the engine fires at the same moment.

use std::sync::Barrier;
use std::thread;

use idemflow::Request;

use super::client::Client;
use super::STAMPEDE_SIZE;
use crate::demo::expect::{Expect, Got};
use crate::demo::join;
use crate::demo::machine::{order_id, OrderState};

impl Client<'_> {
    /// Pay and cancel at the same moment from two threads: exactly one
    /// applies, the other is an invalid transition. Returns whether pay won.
    pub(crate) fn race(
        &mut self,
        order: u64,
        pay: Request<OrderState>,
        cancel: Request<OrderState>,
    ) -> bool {
        let id = order_id(order);
        let orders = self.orders;
        let barrier = Barrier::new(2);
        let (paid, cancelled) = thread::scope(|scope| {
            let canceller = scope.spawn(|| {
                barrier.wait();
                orders.apply(&id, cancel)
            });
            barrier.wait();
            let paid = orders.apply(&id, pay);
            (paid, join(canceller))
        });
        let pay_got = self.record(order, "pay (racing cancel)", &paid, Expect::Racing);
        let cancel_got = self.record(order, "cancel (racing pay)", &cancelled, Expect::Racing);
        let loser_refused = Got::Rejected("InvalidTransition");
        let one_winner = matches!(
            (pay_got, cancel_got),
            (Got::Applied, got) | (got, Got::Applied) if got == loser_refused
        );
        self.tally.races += 1;
        if one_winner {
            self.tally.races_with_one_winner += 1;
        }
        if pay_got == Got::Applied {
            self.tally.races_won_by_pay += 1;
        }
        pay_got == Got::Applied
    }

    /// The same keyed payment from several threads at once: exactly one
    /// applies and the others replay it. Returns whether it was paid.
    pub(crate) fn stampede(&mut self, order: u64, pay: &Request<OrderState>) -> bool {
        let id = order_id(order);
        let orders = self.orders;
        let barrier = Barrier::new(STAMPEDE_SIZE);
        let results = thread::scope(|scope| {
            let others: Vec<_> = (1..STAMPEDE_SIZE)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        orders.apply(&id, pay.clone())
                    })
                })
                .collect();
            barrier.wait();
            let mine = orders.apply(&id, pay.clone());
            std::iter::once(mine)
                .chain(others.into_iter().map(join))
                .collect::<Vec<_>>()
        });
        let gots: Vec<Got> = results
            .iter()
            .map(|result| self.record(order, "pay (identical, concurrent)", result, Expect::Racing))
            .collect();
        let applied = gots.iter().filter(|got| **got == Got::Applied).count();
        let others_fine = gots
            .iter()
            .all(|got| matches!(got, Got::Applied | Got::Replay | Got::NoOp));
        self.tally.stampedes += 1;
        if applied == 1 && others_fine {
            self.tally.stampedes_with_one_payment += 1;
        }
        applied >= 1
    }

    /// A payment sent while the engine fires the due timeouts (another
    /// thread of this process, and every other process, runs them now):
    /// either the payment applies and the timeout finds the order moved on,
    /// or the timeout cancels the order and the payment is an invalid
    /// transition. Returns whether the payment won.
    pub(crate) fn pay_at_timeout(&mut self, order: u64, pay: Request<OrderState>) -> bool {
        let result = self.orders.apply(&order_id(order), pay);
        let got = self.record(order, "pay (racing the timeout)", &result, Expect::Racing);
        self.tally.timeout_races += 1;
        match got {
            Got::Applied => self.tally.timeout_races_won_by_pay += 1,
            Got::Rejected("InvalidTransition") => self.tally.timeout_races_won_by_timeout += 1,
            _ => {}
        }
        got == Got::Applied
    }
}
