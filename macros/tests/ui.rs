//! The derive's compile-time checks, one file per rule, and machines that
//! must compile and run (trybuild snapshots in `tests/ui`). Refresh the
//! snapshots with `TRYBUILD=overwrite cargo test -p idemflow-macros --test ui`.
//!
//! These live in the macro's own crate so that trybuild's scratch project
//! depends on idemflow alone, without its optional features: trybuild builds
//! its project with every dev-dependency of the crate that runs it and with
//! that crate's features on, which from idemflow's own tests meant compiling
//! the HTTP example's and the benchmarks' dependencies and the PostgreSQL
//! client a second time (minutes on 2 cores).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
