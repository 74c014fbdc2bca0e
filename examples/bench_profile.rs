//! A small driver for profiling the applied-transition path under callgrind
//! (docs/BENCHMARKS.md, "Profile"). Not part of `cargo test` (only built).
//!
//! ```text
//! cargo build --release --example bench_profile
//! valgrind --tool=callgrind --toggle-collect='bench_profile::measured*' \
//!     --callgrind-out-file=target/callgrind.engine target/release/examples/bench_profile
//! callgrind_annotate --inclusive=yes target/callgrind.engine | head -60
//! ```
//!
//! Environment: `IDEMFLOW_PROFILE` = `engine` (default), `engine_unbatched`,
//! `raw` (the raw-sled baseline of the criterion benches: the same reads and
//! writes without the engine), or one of two layout experiments on raw sled:
//! `raw_one_tree` (the same keys and values in ONE tree, each concern under a
//! one-byte prefix) and `raw_outbox_ref` (the outbox event's value left empty,
//! as if the event referred to its history entry instead of copying it);
//! `IDEMFLOW_PROFILE_OPS` = measured transitions (default 20000).
//!
//! `IDEMFLOW_PROFILE=compare` (not for callgrind) alternates blocks of
//! `IDEMFLOW_PROFILE_OPS` / 20 transitions (default 1000) on the raw-sled
//! baseline, the engine and the engine without batching, 20 rounds, and
//! prints min and median time per transition of each: a wall-clock ratio that
//! a noisy machine skews less than benchmarks run one after the other.
//!
//! `IDEMFLOW_PROFILE=immediate_threads` (with `IDEMFLOW_PROFILE_THREADS`,
//! default 8) runs the transitions under `Immediate` on that many threads
//! (disjoint entities) instead, to count flushes with strace:
//!
//! ```text
//! IDEMFLOW_PROFILE=immediate_threads IDEMFLOW_PROFILE_OPS=4000 \
//!     strace -f -c -e trace=fdatasync,fsync target/release/examples/bench_profile
//! ``` `Buffered`, one thread, 1000 entities, a
//! fresh key and the bench payload per transition, as `transition/*` in
//! `benches/engine.rs`.

#[path = "../benches/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Instant;

use idemflow::{Durability, Machine};
use serde_json::Value;

use common::{
    advance, create_all, fresh_key, history_key, id, now_ms, open_engine, outbox_key, payload,
    state_key, Cursor, Job, RawSled, Templates, MACHINE, STATES,
};

const ENTITIES: usize = 1000;

fn main() {
    let what = std::env::var("IDEMFLOW_PROFILE").unwrap_or_else(|_| "engine".to_owned());
    let ops: usize = std::env::var("IDEMFLOW_PROFILE_OPS")
        .ok()
        .map(|n| n.parse().expect("IDEMFLOW_PROFILE_OPS"))
        .unwrap_or(20_000);
    let ids: Vec<String> = (0..ENTITIES).map(id).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let started;
    match what.as_str() {
        "engine" | "engine_unbatched" => {
            let batching = what == "engine";
            let (_engine, jobs) = open_engine(dir.path(), Durability::Buffered, batching);
            create_all(&jobs, 0..ENTITIES);
            let payload = payload();
            run_engine(&jobs, &ids, ENTITIES, &payload); // warm-up, not collected
            started = Instant::now();
            measured_engine(&jobs, &ids, ops, &payload);
        }
        "raw" | "raw_outbox_ref" => {
            let mut templates = Templates::capture();
            if what == "raw_outbox_ref" {
                templates.outbox_value = Vec::new();
            }
            let raw = RawSled::open(&dir.path().join("raw"), templates);
            for id in &ids {
                raw.create(id);
            }
            let mut cursors = vec![Cursor::default(); ENTITIES];
            run_raw(&raw, &ids, &mut cursors, ENTITIES);
            started = Instant::now();
            measured_raw(&raw, &ids, &mut cursors, ops);
        }
        "raw_one_tree" => {
            let one = OneTree::open(&dir.path().join("one"), Templates::capture());
            for id in &ids {
                one.create(id);
            }
            let mut cursors = vec![Cursor::default(); ENTITIES];
            run_one_tree(&one, &ids, &mut cursors, ENTITIES);
            started = Instant::now();
            measured_one_tree(&one, &ids, &mut cursors, ops);
        }
        "immediate_threads" | "immediate_threads_unbatched" => {
            let batching = what == "immediate_threads";
            let threads: usize = std::env::var("IDEMFLOW_PROFILE_THREADS")
                .ok()
                .map(|n| n.parse().expect("IDEMFLOW_PROFILE_THREADS"))
                .unwrap_or(8);
            {
                // Entities made without a flush each, so strace counts the transitions' flushes.
                let (_engine, jobs) = open_engine(dir.path(), Durability::Buffered, batching);
                create_all(&jobs, 0..ENTITIES);
            }
            let (_engine, jobs) = open_engine(dir.path(), Durability::Immediate, batching);
            let payload = payload();
            started = Instant::now();
            std::thread::scope(|scope| {
                for t in 0..threads {
                    let (jobs, payload) = (&jobs, &payload);
                    let mine: Vec<String> = ids.iter().skip(t).step_by(threads).cloned().collect();
                    scope.spawn(move || run_engine(jobs, &mine, ops / threads, payload));
                }
            });
        }
        "compare" => {
            compare(dir.path(), &ids, (ops / 20).max(100));
            return;
        }
        other => panic!(
            "IDEMFLOW_PROFILE={other}: engine, engine_unbatched, raw, raw_one_tree or raw_outbox_ref"
        ),
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{what}: {ops} transitions in {secs:.2} s ({:.1} us each)",
        secs * 1e6 / ops as f64
    );
}

/// Alternating blocks of `block` transitions: raw sled, engine, engine
/// without batching; prints min / median time per transition of each.
fn compare(dir: &std::path::Path, ids: &[String], block: usize) {
    let raw = RawSled::open(&dir.join("raw"), Templates::capture());
    for id in ids {
        raw.create(id);
    }
    let mut cursors = vec![Cursor::default(); ids.len()];
    let (_a, batched) = open_engine(&dir.join("batched"), Durability::Buffered, true);
    let (_b, unbatched) = open_engine(&dir.join("unbatched"), Durability::Buffered, false);
    create_all(&batched, 0..ids.len());
    create_all(&unbatched, 0..ids.len());
    let payload = payload();
    let mut times: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..21 {
        let started = Instant::now();
        run_raw(&raw, ids, &mut cursors, block);
        let t0 = started.elapsed();
        let started = Instant::now();
        run_engine(&batched, ids, block, &payload);
        let t1 = started.elapsed();
        let started = Instant::now();
        run_engine(&unbatched, ids, block, &payload);
        let t2 = started.elapsed();
        if round > 0 {
            // round 0 warms up
            for (list, t) in times.iter_mut().zip([t0, t1, t2]) {
                list.push(t.as_secs_f64() * 1e6 / block as f64);
            }
        }
    }
    let mut medians = [0.0; 3];
    for (i, (name, list)) in ["raw sled", "engine", "engine (no batching)"]
        .iter()
        .zip(times.iter_mut())
        .enumerate()
    {
        list.sort_by(f64::total_cmp);
        medians[i] = list[list.len() / 2];
        eprintln!(
            "{name:<22} min {:>7.2} us  median {:>7.2} us per transition",
            list[0], medians[i]
        );
    }
    eprintln!(
        "throughput ratio engine / raw (medians): {:.2} (batching), {:.2} (no batching)",
        medians[0] / medians[1],
        medians[0] / medians[2]
    );
}

// `measured_*` is what callgrind collects (`--toggle-collect`); `run_*` is
// the same loop, also used for the warm-up.

#[inline(never)]
fn measured_engine(jobs: &Machine<Job>, ids: &[String], ops: usize, payload: &Value) {
    run_engine(jobs, ids, ops, payload);
}

#[inline(never)]
fn run_engine(jobs: &Machine<Job>, ids: &[String], ops: usize, payload: &Value) {
    for n in 0..ops {
        advance(jobs, &ids[n % ids.len()], fresh_key(), payload);
    }
}

#[inline(never)]
fn measured_raw(raw: &RawSled, ids: &[String], cursors: &mut [Cursor], ops: usize) {
    run_raw(raw, ids, cursors, ops);
}

#[inline(never)]
fn run_raw(raw: &RawSled, ids: &[String], cursors: &mut [Cursor], ops: usize) {
    for n in 0..ops {
        let i = n % ids.len();
        let (version, from) = cursors[i].step();
        raw.transition(&ids[i], version, from, &fresh_key());
    }
}

#[inline(never)]
fn measured_one_tree(one: &OneTree, ids: &[String], cursors: &mut [Cursor], ops: usize) {
    run_one_tree(one, ids, cursors, ops);
}

#[inline(never)]
fn run_one_tree(one: &OneTree, ids: &[String], cursors: &mut [Cursor], ops: usize) {
    for n in 0..ops {
        let i = n % ids.len();
        let (version, from) = cursors[i].step();
        one.transition(&ids[i], version, from, &fresh_key());
    }
}

/// The raw baseline's keys and values in one tree, each concern under a
/// one-byte prefix (`e`ntities, `h`istory, `s`tate index, `k`eys, `o`utbox).
struct OneTree {
    _db: sled::Db,
    tree: sled::Tree,
    templates: Templates,
}

fn prefixed(prefix: u8, key: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + key.len());
    bytes.push(prefix);
    bytes.extend_from_slice(key);
    bytes
}

impl OneTree {
    fn open(dir: &std::path::Path, templates: Templates) -> OneTree {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(common::CACHE_BYTES)
            .flush_every_ms(Some(common::FLUSH_EVERY_MS))
            .open()
            .expect("open sled");
        OneTree {
            tree: db.open_tree("all").expect("tree"),
            _db: db,
            templates,
        }
    }

    fn create(&self, id: &str) {
        let t = &self.templates;
        let tree = &self.tree;
        tree.insert(prefixed(b'e', id.as_bytes()), t.entity.as_slice())
            .unwrap();
        tree.insert(prefixed(b'h', &history_key(id, 1)), t.change.as_slice())
            .unwrap();
        tree.insert(
            prefixed(b's', &state_key(STATES[0], id)),
            t.marker.as_slice(),
        )
        .unwrap();
    }

    fn transition(&self, id: &str, version: u64, from: usize, key: &str) {
        let t = &self.templates;
        let at = now_ms();
        let to = (from + 1) % STATES.len();
        self.tree
            .transaction(|tree| {
                let record = tree.get(prefixed(b'e', id.as_bytes()))?;
                let seen = tree.get(prefixed(b'k', key.as_bytes()))?;
                black_box((&record, &seen));
                tree.insert(prefixed(b'e', id.as_bytes()), t.entity.as_slice())?;
                tree.insert(
                    prefixed(b'h', &history_key(id, version)),
                    t.change.as_slice(),
                )?;
                tree.remove(prefixed(b's', &state_key(STATES[from], id)))?;
                tree.insert(
                    prefixed(b's', &state_key(STATES[to], id)),
                    t.marker.as_slice(),
                )?;
                tree.insert(prefixed(b'k', key.as_bytes()), t.key_record.as_slice())?;
                tree.insert(
                    prefixed(b'o', &outbox_key(at, MACHINE, id, version)),
                    t.outbox_value.as_slice(),
                )?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .expect("one-tree transaction");
    }
}
