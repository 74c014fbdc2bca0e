//! Idempotency keys that keep going: indexed by expiry, purged in the
//! background (deleting only expired keys), an unreadable key record reported
//! and skipped, older databases indexed on the way. Time comes from a
//! `ManualClock`, so expiry is deterministic.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use idemflow::testing::ManualClock;
use idemflow::{Durability, Engine, EngineBuilder, Error, Request};

mod common;

use common::backend::TestDb;
use common::{open_sled, retry_locked, watchdog, OrderState};

const START: u64 = 1_800_000_000_000;

fn builder(clock: &ManualClock, purge: Option<Duration>) -> EngineBuilder {
    Engine::builder()
        .durability(Durability::Buffered)
        .clock(clock.clone())
        .key_retention(Duration::from_secs(60))
        .purge_interval(purge)
}

fn open(dir: &Path, clock: &ManualClock, purge: Option<Duration>) -> Engine {
    retry_locked(|| builder(clock, purge).open(dir))
}

/// Keyed no-ops on "o-1": each stores a key record and nothing else.
fn store_keys(engine: &Engine, prefix: &str, count: usize) -> Vec<String> {
    let orders = engine.machine::<OrderState>().unwrap();
    orders.create("o-1").unwrap();
    (0..count)
        .map(|n| {
            let key = format!("{prefix}-{n:04}");
            orders
                .apply("o-1", Request::to(OrderState::Draft).key(key.clone()))
                .unwrap();
            key
        })
        .collect()
}

fn stored_keys(dir: &Path) -> BTreeSet<String> {
    let db = retry_locked(|| open_sled(dir));
    let tree = db.open_tree("keys/order").unwrap();
    tree.iter()
        .keys()
        .map(|key| String::from_utf8(key.unwrap().to_vec()).unwrap())
        .collect()
}

/// On both backends (library level); the raw look at the stored keys
/// afterwards is sled's.
fn the_background_purge_deletes_expired_keys_and_only_them(db: &TestDb) {
    let db = db.clone();
    watchdog("background purge", Duration::from_secs(120), move || {
        let clock = ManualClock::new(START);
        let live = {
            let engine = db.open(builder(&clock, Some(Duration::from_millis(20))));
            let expired = store_keys(&engine, "old", 1500); // more than one purge round
            clock.advance(Duration::from_secs(61));
            let live = store_keys(&engine, "new", 40);
            // The background purge runs every 20 ms; wait until a manual
            // purge finds nothing left to do.
            let mut waited = Duration::ZERO;
            loop {
                std::thread::sleep(Duration::from_millis(50));
                waited += Duration::from_millis(50);
                if stored_count(&engine) == live.len() {
                    break;
                }
                assert!(
                    waited < Duration::from_secs(30),
                    "the background purge did not run"
                );
            }
            assert_eq!(
                engine.purge_expired_keys().unwrap(),
                0,
                "nothing was left to purge"
            );
            // Live keys still replay.
            let orders = engine.machine::<OrderState>().unwrap();
            for key in &live {
                let replay = orders
                    .apply("o-1", Request::to(OrderState::Draft).key(key.clone()))
                    .unwrap();
                assert!(replay.is_replay(), "{key}");
            }
            assert_eq!(expired.len(), 1500);
            live
        };
        if let Some(dir) = db.dir() {
            assert_eq!(stored_keys(&dir), live.into_iter().collect());
        }
    });
}

backend_tests! {
    the_background_purge_deletes_expired_keys_and_only_them,
}

/// How many key records are stored (live, or expired and not yet purged).
fn stored_count(engine: &Engine) -> usize {
    let orders = engine.machine::<OrderState>().unwrap();
    usize::try_from(orders.named().key_count().unwrap()).unwrap()
}

#[test]
fn an_unreadable_key_record_is_reported_and_skipped() {
    watchdog(
        "purge with a damaged key record",
        Duration::from_secs(60),
        || {
            let dir = tempfile::tempdir().unwrap();
            let clock = ManualClock::new(START);
            {
                let engine = open(dir.path(), &clock, None);
                store_keys(&engine, "old", 30);
                engine.flush().unwrap();
            }
            {
                let db = retry_locked(|| open_sled(dir.path()));
                let keys = db.open_tree("keys/order").unwrap();
                let mut value = keys.get("old-0007").unwrap().unwrap().to_vec();
                value.truncate(20); // the expiry survives in the index; the record does not decode
                keys.insert("old-0007", value).unwrap();
                db.flush().unwrap();
            }
            clock.advance(Duration::from_secs(120));
            {
                let engine = open(dir.path(), &clock, None);
                let report = engine.purge_keys().unwrap();
                assert_eq!(report.purged, 29);
                assert_eq!(report.skipped.len(), 1);
                match &report.skipped[0] {
                    Error::Corrupt { tree, key, .. } => {
                        assert_eq!(tree, "keys/order");
                        assert!(key.contains("old-0007"), "{key}");
                    }
                    other => panic!("expected Corrupt, got {other:?}"),
                }
                // Reported once: the next purge has nothing to do.
                let again = engine.purge_keys().unwrap();
                assert_eq!((again.purged, again.skipped.len()), (0, 0));
            }
            assert_eq!(
                stored_keys(dir.path()),
                BTreeSet::from(["old-0007".to_owned()])
            );
        },
    );
}

#[test]
fn keys_of_an_older_database_are_indexed_and_purged() {
    watchdog(
        "indexing an older database's keys",
        Duration::from_secs(60),
        || {
            let dir = tempfile::tempdir().unwrap();
            let clock = ManualClock::new(START);
            {
                let engine = open(dir.path(), &clock, None);
                store_keys(&engine, "old", 1100);
                engine.flush().unwrap();
            }
            {
                // As a database written before the expiry index existed.
                let db = retry_locked(|| open_sled(dir.path()));
                assert!(db.drop_tree("key_expiry/order").unwrap());
                let meta = db.open_tree("meta").unwrap();
                meta.remove("key_expiry_indexed/order").unwrap();
                db.flush().unwrap();
            }
            clock.advance(Duration::from_secs(120));
            let engine = open(dir.path(), &clock, None);
            assert_eq!(engine.purge_expired_keys().unwrap(), 1100);
            drop(engine);
            assert!(stored_keys(dir.path()).is_empty());
        },
    );
}
