//! Untrusted names, ids, keys, actors and payloads through the name-based
//! API: the right error or a success that keeps the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    idemflow_fuzz::harness::named_requests(data);
});
