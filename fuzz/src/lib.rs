//! Fuzz harnesses for idemflow; the targets in `fuzz_targets/` call them.

pub mod harness;
