//! The scenarios an order runs, picked by a seeded generator.

mod client;
mod races;

pub(crate) use client::Client;

/// How many identical payments a stampede sends at once.
pub(crate) const STAMPEDE_SIZE: usize = 4;

/// What happens to an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scenario {
    /// submit, pay, ship.
    Ship,
    /// submit, pay, refund.
    Refund,
    /// cancel while in draft.
    CancelDraft,
    /// submit, then pay and cancel race from two threads; ship if pay won.
    PayCancelRace,
    /// submit, then the same keyed payment from several threads at once; ship.
    PayStampede,
    /// submit; pay 29 minutes later, just before the payment timeout; ship.
    PayBeforeTimeout,
    /// submit; pay when the timeout is due, while the engine fires it; ship
    /// if the payment won.
    PayRacingTimeout,
    /// submit, never pay: the timeout cancels the order.
    Abandoned,
}

impl Scenario {
    pub(crate) fn pick(rng: &mut Rng) -> Scenario {
        match rng.below(100) {
            0..=34 => Scenario::Ship,
            35..=49 => Scenario::Refund,
            50..=57 => Scenario::CancelDraft,
            58..=69 => Scenario::PayCancelRace,
            70..=81 => Scenario::PayStampede,
            82..=89 => Scenario::PayBeforeTimeout,
            90..=94 => Scenario::PayRacingTimeout,
            _ => Scenario::Abandoned,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::Ship => "submit, pay, ship",
            Scenario::Refund => "submit, pay, refund",
            Scenario::CancelDraft => "cancel in draft",
            Scenario::PayCancelRace => "pay racing cancel",
            Scenario::PayStampede => "identical payments at once",
            Scenario::PayBeforeTimeout => "pay 29 min after submit, ship",
            Scenario::PayRacingTimeout => "pay racing the 30 min timeout",
            Scenario::Abandoned => "submitted, never paid (timeout)",
        }
    }

    /// The phase in which the rest of the order runs, after its submission
    /// in [`Phase::Start`].
    pub(crate) fn phase(self) -> Phase {
        match self {
            Scenario::PayBeforeTimeout => Phase::BeforeTimeout,
            Scenario::PayRacingTimeout => Phase::AtTimeout,
            Scenario::Abandoned => Phase::AfterTimeout,
            _ => Phase::Start,
        }
    }
}

/// The demo's time line, on the engines' manual clocks. Every process runs
/// each phase over its own orders; processes wait for each other between
/// phases, so that no engine's clock is ahead of an order's scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// At the start: every order is created and most run to their end.
    Start,
    /// 29 minutes later: payments just before the timeout.
    BeforeTimeout,
    /// 31 minutes after the start: the timeouts are due and fire, racing
    /// payments.
    AtTimeout,
    /// After every process fired the due timeouts: late payments.
    AfterTimeout,
}

/// The part of an order's scenario left for a later phase.
pub(crate) struct Later {
    /// The order's number.
    pub(crate) order: u64,
    /// Its scenario.
    pub(crate) scenario: Scenario,
    /// Its generator, where the first phase left it.
    pub(crate) rng: Rng,
}

/// SplitMix64: a small, seeded, good-enough generator for scenarios.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }
}
