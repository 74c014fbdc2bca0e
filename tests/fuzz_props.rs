//! Bounded runs of the fuzz harnesses (`fuzz/src/harness.rs`, shared with the
//! cargo-fuzz targets in `fuzz/`) as proptest properties, so the default
//! `cargo test` runs them too:
//!
//! - `stored_values`: stored values and keys damaged through sled, then read
//!   and written through the engine: `Ok`, a domain error or `Corrupt`, never
//!   a panic;
//! - `named_requests`: untrusted names, ids, keys, actors and payloads through
//!   the name-based API: the right error, or a success that keeps the
//!   invariants.
//!
//! `IDEMFLOW_FUZZ_CASES` raises the number of cases; `cargo +nightly fuzz run
//! <target>` in `fuzz/` runs them for real (see `docs/reliability.md`).

#[path = "../fuzz/src/harness.rs"]
mod harness;

use proptest::collection::vec;
use proptest::prelude::*;

fn cases(default: u32) -> u32 {
    std::env::var("IDEMFLOW_FUZZ_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(40),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn stored_values(data in vec(any::<u8>(), 0..200)) {
        harness::stored_values(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(200),
        max_shrink_iters: 500,
        ..ProptestConfig::default()
    })]

    #[test]
    fn named_requests(data in vec(any::<u8>(), 0..600)) {
        harness::named_requests(&data);
    }
}

/// The harness gets past input validation: over a fixed set of inputs, every
/// kind of success happens (a harness that only ever hit errors would prove
/// little).
#[test]
fn named_requests_reaches_every_kind_of_success() {
    use harness::reached::{self, APPLIED, CREATED, NO_OPS, REFUSED, REGISTERED, REPLAYED};
    let mut rng = 0x1234_5678_9abc_def0u64;
    for _ in 0..400 {
        let data: Vec<u8> = (0..300)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        harness::named_requests(&data);
    }
    for (what, counter) in [
        ("registered", &REGISTERED),
        ("created", &CREATED),
        ("applied", &APPLIED),
        ("no-ops", &NO_OPS),
        ("replayed", &REPLAYED),
        ("refused", &REFUSED),
    ] {
        assert!(reached::get(counter) > 0, "named_requests never {what}");
    }
}

/// Every stored value of the template database, flipped at every byte: the
/// damage the random runs may miss, done exhaustively for one value per tree.
#[test]
fn every_single_byte_flip_of_one_value_per_tree() {
    // tree index, mode 1 (flip), entry 0, one flip, at byte i, xor 0xff.
    for tree in 0..10u8 {
        for at in 0..48u8 {
            harness::stored_values(&[0, tree, 1, 0, 0, at, 0xff]);
        }
    }
}
