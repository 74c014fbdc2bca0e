//! The scenarios an order runs, picked by a seeded generator.

mod client;

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
}

impl Scenario {
    pub(crate) fn pick(rng: &mut Rng) -> Scenario {
        match rng.below(100) {
            0..=44 => Scenario::Ship,
            45..=59 => Scenario::Refund,
            60..=69 => Scenario::CancelDraft,
            70..=84 => Scenario::PayCancelRace,
            _ => Scenario::PayStampede,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::Ship => "submit, pay, ship",
            Scenario::Refund => "submit, pay, refund",
            Scenario::CancelDraft => "cancel in draft",
            Scenario::PayCancelRace => "pay racing cancel",
            Scenario::PayStampede => "identical payments at once",
        }
    }
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
