//! Arbitrary damage to stored values and keys, then reads and writes
//! through the engine: `Ok`, a domain error or `Error::Corrupt`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    idemflow_fuzz::harness::stored_values(data);
});
