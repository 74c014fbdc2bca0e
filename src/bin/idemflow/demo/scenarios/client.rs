//! A client thread: runs orders through their scenarios and counts what
//! the engine answered against what each scenario expects.

use std::sync::atomic::{AtomicU32, Ordering};

use idemflow::{Machine, Outcome, Request, Result as EngineResult};
use serde_json::json;

use super::{Later, Phase, Rng, Scenario};
use crate::demo::expect::{Expect, Got};
use crate::demo::machine::{is_charge, order_id, OrderEvent, OrderState};
use crate::demo::tally::{Tally, UNEXPECTED_SAMPLES};

/// One client thread: runs orders through the engine and counts what happens.
pub(crate) struct Client<'a> {
    pub(crate) orders: &'a Machine<OrderState>,
    /// Applied payments per order: the simulated card charges.
    pub(crate) charges: &'a [AtomicU32],
    pub(crate) rate: f64,
    pub(crate) seed: u64,
    pub(crate) tally: Tally,
    /// Orders whose scenario continues in a later phase.
    pub(crate) later: Vec<Later>,
}

impl Client<'_> {
    /// Counts a request's result against what the scenario expects.
    pub(crate) fn record(
        &mut self,
        order: u64,
        what: &str,
        result: &EngineResult<Outcome<OrderState>>,
        expect: Expect,
    ) -> Got {
        let got = Got::of(result);
        self.tally.sent += 1;
        match got {
            Got::Applied => self.tally.applied += 1,
            Got::NoOp => self.tally.noops += 1,
            Got::Replay => self.tally.replays += 1,
            Got::Rejected(kind) => *self.tally.rejected.entry(kind).or_default() += 1,
        }
        if let Ok(outcome) = result {
            if is_charge(outcome) {
                if let Some(charges) = usize::try_from(order)
                    .ok()
                    .and_then(|index| self.charges.get(index))
                {
                    charges.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if !got.matches(expect) {
            self.tally.unexpected += 1;
            if self.tally.unexpected_samples.len() < UNEXPECTED_SAMPLES {
                let detail = match result {
                    Err(error) => format!(": {error}"),
                    Ok(_) => String::new(),
                };
                self.tally.unexpected_samples.push(format!(
                    "{} {what}: expected {expect:?}, got {got:?}{detail}",
                    order_id(order)
                ));
            }
        }
        got
    }

    pub(crate) fn fault(&mut self, name: &'static str) {
        *self.tally.faults.entry(name).or_default() += 1;
    }

    /// Sends one request and records it.
    pub(crate) fn send(
        &mut self,
        order: u64,
        what: &str,
        request: Request<OrderState>,
        expect: Expect,
    ) -> Got {
        let result = self.orders.apply(&order_id(order), request);
        self.record(order, what, &result, expect)
    }

    /// Delivers a keyed request that should apply; like a message bus with
    /// at-least-once delivery, it sometimes delivers it twice (a replay).
    pub(crate) fn deliver(
        &mut self,
        rng: &mut Rng,
        order: u64,
        what: &str,
        request: Request<OrderState>,
    ) -> Got {
        let got = self.send(order, what, request.clone(), Expect::Applied);
        if rng.chance(self.rate) {
            self.fault("duplicate delivery (same key again)");
            self.send(
                order,
                &format!("{what} (duplicate)"),
                request,
                Expect::Replay,
            );
        }
        got
    }

    /// Runs order number `order` through its scenario, up to its
    /// submission if the rest belongs to a later phase (kept in `later`).
    pub(crate) fn run_order(&mut self, order: u64) {
        let id = order_id(order);
        let mut rng = Rng::new(self.seed ^ order.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let key = |step: &str| format!("{id}/{step}");

        let created = self.orders.create_with(
            &id,
            Some(json!({ "customer": format!("customer-{}", order % 997) })),
            Some("shop".to_owned()),
        );
        self.record(order, "create", &created, Expect::Applied);
        if rng.chance(self.rate) {
            self.fault("duplicate create");
            let again = self.orders.create(&id);
            self.record(order, "create (duplicate)", &again, Expect::NoOp);
        }

        let scenario = Scenario::pick(&mut rng);
        *self.tally.scenarios.entry(scenario.name()).or_default() += 1;
        let cancel = cancel_request(&id);
        if scenario == Scenario::CancelDraft {
            self.deliver(&mut rng, order, "cancel", cancel.clone());
            if rng.chance(self.rate) {
                self.fault("retry after a lost response");
                self.send(order, "cancel (retry)", cancel, Expect::Replay);
            }
            return;
        }

        let submit = Request::fire(OrderEvent::Submit)
            .key(key("submit"))
            .actor("customer");
        self.deliver(&mut rng, order, "submit", submit);
        if rng.chance(self.rate) {
            // A support agent acts on a page loaded before the submission.
            self.fault("stale expected version");
            let stale = Request::to(OrderState::Cancelled)
                .key(key("support-cancel"))
                .expect_version(1)
                .actor("support");
            self.send(
                order,
                "stale cancel",
                stale,
                Expect::Rejected("VersionConflict"),
            );
        }
        if rng.chance(self.rate / 2.0) {
            // A client bug: the submit's key sent again with another request.
            self.fault("key reused for another request");
            let reused = Request::fire(OrderEvent::Cancel).key(key("submit"));
            self.send(
                order,
                "cancel with the submit's key",
                reused,
                Expect::Rejected("KeyReused"),
            );
        }

        if scenario.phase() == Phase::Start {
            self.finish(order, scenario, &mut rng);
        } else {
            self.later.push(Later {
                order,
                scenario,
                rng,
            });
        }
    }

    /// Runs the rest of an order left for a later phase.
    pub(crate) fn run_later(&mut self, mut later: Later) {
        self.finish(later.order, later.scenario, &mut later.rng);
    }

    /// The rest of a submitted order's scenario: payment (or not), then
    /// shipment or refund, with faults.
    fn finish(&mut self, order: u64, scenario: Scenario, rng: &mut Rng) {
        let id = order_id(order);
        let key = |step: &str| format!("{id}/{step}");
        let pay = Request::to(OrderState::Paid)
            .key(key("pay"))
            .payload(json!({ "amount_cents": 500 + order % 20_000, "currency": "EUR" }))
            .actor("payments");
        let carrier = ["dhl", "ups", "post"][(order % 3) as usize];
        let ship = Request::fire(OrderEvent::Ship)
            .key(key("ship"))
            .payload(json!({ "carrier": carrier }))
            .actor("warehouse");
        let paid = match scenario {
            Scenario::PayCancelRace => self.race(order, pay.clone(), cancel_request(&id)),
            Scenario::PayStampede => self.stampede(order, &pay),
            Scenario::PayRacingTimeout => self.pay_at_timeout(order, pay.clone()),
            Scenario::Abandoned => {
                if rng.chance(self.rate) {
                    // The payment arrives after the timeout cancelled the order.
                    self.fault("payment after the timeout");
                    self.send(
                        order,
                        "pay after the timeout",
                        pay.clone(),
                        Expect::Rejected("InvalidTransition"),
                    );
                }
                false
            }
            Scenario::Ship
            | Scenario::Refund
            | Scenario::CancelDraft
            | Scenario::PayBeforeTimeout => {
                if scenario == Scenario::Ship && rng.chance(self.rate) {
                    // The warehouse's event overtakes the payment. The error is
                    // not stored under the key: the same request succeeds later.
                    self.fault("out-of-order event (ship before pay)");
                    self.send(
                        order,
                        "ship before pay",
                        ship.clone(),
                        Expect::Rejected("InvalidTransition"),
                    );
                }
                self.deliver(rng, order, "pay", pay.clone()) == Got::Applied
            }
        };
        if !paid {
            if rng.chance(self.rate) {
                self.fault("late event after cancel");
                let late = Request::fire(OrderEvent::Ship);
                self.send(
                    order,
                    "ship after cancel",
                    late,
                    Expect::Rejected("InvalidTransition"),
                );
            }
            return;
        }

        let (last, last_state, last_name) = if scenario == Scenario::Refund {
            let refund = Request::to(OrderState::Refunded)
                .key(key("refund"))
                .payload(json!({ "reason": "returned" }))
                .actor("support");
            (refund, OrderState::Refunded, "refund")
        } else {
            (ship, OrderState::Shipped, "ship")
        };
        self.deliver(rng, order, last_name, last);
        if rng.chance(self.rate) {
            // The payment service never saw its answer and retries after the
            // order moved on: it gets the original outcome, not a second charge.
            self.fault("retry after a lost response");
            self.send(
                order,
                "pay (retry after the order moved on)",
                pay,
                Expect::Replay,
            );
        }
        if rng.chance(self.rate) {
            self.fault("retry without a key");
            self.send(
                order,
                "unkeyed retry",
                Request::to(last_state),
                Expect::NoOp,
            );
        }
    }
}

/// The cancellation a customer sends.
fn cancel_request(id: &str) -> Request<OrderState> {
    Request::fire(OrderEvent::Cancel)
        .key(format!("{id}/cancel"))
        .actor("customer")
}
