//! The `idemflow` binary end to end: the demo, every tool subcommand with its
//! text and `--json` output, and the error cases (exit codes and one-line messages).

use std::path::Path;
use std::process::{Command, Output};

use idemflow::{Engine, MachineDef, NamedRequest};
use serde_json::Value;
use tempfile::TempDir;

mod common;

/// Runs the binary in `cwd` (so that nothing lands in the source tree).
fn run_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idemflow"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the idemflow binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
fn ok(output: Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(0),
        "expected success\nstdout:\n{}\nstderr:\n{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Asserts a user error: exit 1, one line `error: ...` on stderr, no panic.
/// Returns the line.
#[track_caller]
fn user_error(output: Output) -> String {
    let err = stderr(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit 1\nstdout:\n{}\nstderr:\n{err}",
        stdout(&output)
    );
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    assert!(err.starts_with("error: "), "{err:?}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err:?}"
    );
    err
}

#[track_caller]
fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}):\n{text}"))
}

/// The order machine, as a tool would find it stored (no Rust type here).
fn order_def() -> MachineDef {
    MachineDef::new("order", "draft")
        .state("draft")
        .describe("Being filled by the customer")
        .state("submitted")
        .state("paid")
        .terminal_state("shipped")
        .terminal_state("cancelled")
        .terminal_state("refunded")
        .transition("draft", "submit", "submitted")
        .transition("draft", "cancel", "cancelled")
        .transition("submitted", "pay", "paid")
        .transition("submitted", "cancel", "cancelled")
        .transition("paid", "ship", "shipped")
        .transition("paid", "refund", "refunded")
}

/// A database with orders o-1 (shipped, through a keyed payment), o-2
/// (submitted) and o-3 (draft); closed again, ready for the CLI.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = TempDir::new().expect("temp dir");
        {
            let engine = Engine::open(dir.path().join("db")).expect("open");
            let orders = engine.register(order_def()).expect("register");
            for id in ["o-1", "o-2", "o-3"] {
                orders.create(id).expect("create");
            }
            orders
                .apply("o-1", NamedRequest::fire("submit"))
                .expect("submit");
            orders
                .apply(
                    "o-1",
                    NamedRequest::to("paid")
                        .key("pay-o-1")
                        .payload(serde_json::json!({"amount": 4200}))
                        .actor("payments"),
                )
                .expect("pay");
            orders
                .apply("o-1", NamedRequest::fire("ship"))
                .expect("ship");
            orders
                .apply("o-2", NamedRequest::fire("submit"))
                .expect("submit");
        }
        Fixture { dir }
    }

    fn db(&self) -> String {
        self.dir.path().join("db").display().to_string()
    }

    fn run(&self, args: &[&str]) -> Output {
        run_in(self.dir.path(), args)
    }
}

fn dot_required() -> bool {
    std::env::var_os("IDEMFLOW_REQUIRE_DOT").is_some()
}

fn dot_available() -> bool {
    Command::new("dot")
        .arg("-V")
        .output()
        .is_ok_and(|output| output.status.success())
}

#[test]
fn demo_passes_every_invariant_check() {
    let work = TempDir::new().expect("temp dir");
    let db = work.path().join("demo-db");
    let db_arg = db.display().to_string();
    let out = ok(run_in(
        work.path(),
        &["demo", "--db", &db_arg, "--orders", "200", "--threads", "4"],
    ));
    assert!(out.contains("PASS"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    assert_eq!(out.matches("PASS").count(), 8, "{out}");
    assert!(
        out.contains("PASS  no paid order was ever cancelled by a timeout"),
        "{out}"
    );
    // The payment timeout cancelled the abandoned orders (and the payments
    // that lost their race against it): some, for 200 orders.
    let by_timeout = out
        .lines()
        .find_map(|line| line.strip_prefix("cancelled by the payment timeout"))
        .and_then(|count| count.trim().replace(',', "").parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no timeout count in the summary:\n{out}"));
    assert!(by_timeout > 0, "{out}");
    for word in [
        "sent",
        "applied",
        "no-ops",
        "replays",
        "rejected",
        "requests/s",
    ] {
        assert!(out.contains(word), "summary lacks {word:?}:\n{out}");
    }
    for file in ["order.dot", "order-counts.dot", "order.mmd"] {
        assert!(db.join(file).is_file(), "{file} not written");
        assert!(out.contains(file), "{out}");
    }
    if dot_available() || dot_required() {
        assert!(db.join("order.svg").is_file(), "order.svg not written");
    }

    // The database it left is a normal one: the tools read it.
    let machines = json(&ok(run_in(
        work.path(),
        &["machines", "--db", &db_arg, "--json"],
    )));
    assert_eq!(machines[0]["name"], "order");
    assert_eq!(machines[0]["entities"], 200);
    let shown = json(&ok(run_in(
        work.path(),
        &["show", "--db", &db_arg, "order", "order-000007", "--json"],
    )));
    let history = shown["history"].as_array().expect("history");
    assert_eq!(shown["entity"]["version"], history.len());

    // A second run on the same database refuses: its checks need no prior orders.
    let again = user_error(run_in(
        work.path(),
        &["demo", "--db", &db_arg, "--orders", "10"],
    ));
    assert!(again.contains("already holds 200 orders"), "{again}");
}

#[test]
fn demo_json_on_a_temporary_database() {
    let work = TempDir::new().expect("temp dir");
    let out = ok(run_in(
        work.path(),
        &[
            "demo",
            "--orders",
            "150",
            "--threads",
            "3",
            "--duplicate-rate",
            "0.5",
            "--seed",
            "7",
            "--json",
        ],
    ));
    let summary = json(&out);
    assert_eq!(summary["all_checks_passed"], true, "{out}");
    assert_eq!(summary["orders"], 150);
    let requests = &summary["requests"];
    let sent = requests["sent"].as_u64().expect("sent");
    let parts: u64 = ["applied", "noops", "replays", "rejected"]
        .iter()
        .map(|name| requests[name].as_u64().expect("count"))
        .sum();
    assert_eq!(sent, parts, "{requests}");
    assert!(requests["replays"].as_u64() > Some(0));
    assert!(requests["rejected_by_reason"]["InvalidTransition"].as_u64() > Some(0));
    assert!(summary["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .all(|check| check["pass"] == true));
    assert_eq!(summary["orders_charged_twice"], 0);
    assert_timeouts_checked(&summary);
    // Without --db, the graphs go to ./idemflow-demo/.
    assert!(work.path().join("idemflow-demo/order.dot").is_file());
    assert!(work.path().join("idemflow-demo/order.mmd").is_file());
}

/// The demo's summary says that the payment timeout cancelled some orders,
/// fired by `run_due_timers`, and that none of them had been paid.
fn assert_timeouts_checked(summary: &Value) {
    let check = summary["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|check| check["name"] == "no paid order was ever cancelled by a timeout")
        .unwrap_or_else(|| panic!("no timeout check: {summary}"));
    assert_eq!(check["pass"], true, "{check}");
    let cancelled = summary["orders_cancelled_by_timeout"]
        .as_u64()
        .expect("orders_cancelled_by_timeout");
    assert!(cancelled > 0, "{summary}");
    assert!(
        summary["timer_firings"].as_u64() >= Some(cancelled),
        "{summary}"
    );
}

#[test]
fn definitions_and_migrate_show_the_change_log_and_finish_a_rename() {
    let fixture = Fixture::new();
    let db = fixture.db();
    {
        // Rename "submitted" to "placed" (and the event "submit" to "place").
        let engine = Engine::open(fixture.dir.path().join("db")).expect("open");
        let renamed = serde_json::to_string(&order_def())
            .unwrap()
            .replace("\"submitted\"", "\"placed\"")
            .replace("\"submit\"", "\"place\"");
        let renamed: idemflow::MachineDef = serde_json::from_str(&renamed).unwrap();
        let renamed = renamed
            .alias("placed", "submitted")
            .event_alias("place", "submit");
        engine.register(renamed).expect("the rename is accepted");
    }
    let log = ok(fixture.run(&["definitions", "--db", &db, "order"]));
    assert!(log.contains("order: 2 stored versions"), "{log}");
    assert!(log.contains("version 2"), "{log}");
    assert!(log.contains("renamed state submitted to placed"), "{log}");
    assert!(log.contains("renamed event submit to place"), "{log}");
    let versions = json(&ok(fixture.run(&[
        "definitions",
        "--db",
        &db,
        "order",
        "--json",
    ])));
    assert_eq!(versions.as_array().unwrap().len(), 2);
    let listed = ok(fixture.run(&["machines", "--db", &db]));
    assert!(listed.contains("definition version 2"), "{listed}");
    let migrated = ok(fixture.run(&["migrate", "--db", &db]));
    assert!(
        migrated.contains("order (definition version 2)"),
        "{migrated}"
    );
    assert!(
        migrated.contains("nothing left under former state names"),
        "{migrated}"
    );
    let listed = json(&ok(fixture.run(&["machines", "--db", &db, "--json"])));
    assert_eq!(listed[0]["pending_migration"], 0);
    let unknown = fixture.run(&["definitions", "--db", &db, "nope"]);
    assert!(!unknown.status.success());
}

#[test]
fn timers_lists_pending_timers_by_due_time() {
    let dir = TempDir::new().expect("temp dir");
    let db = dir.path().join("db");
    {
        let engine = Engine::builder().timers(false).open(&db).expect("open");
        let invoices = engine
            .register(
                idemflow::MachineDef::new("invoice", "sent")
                    .state("sent")
                    .terminal_state("paid")
                    .terminal_state("expired")
                    .transition("sent", "pay", "paid")
                    .transition("sent", "expire", "expired")
                    .timeout("sent", std::time::Duration::from_secs(1800), "expire"),
            )
            .expect("register");
        invoices.create("i-1").expect("create");
        invoices
            .schedule(
                "i-1",
                std::time::Duration::from_secs(60),
                NamedRequest::fire("pay").key("pay-i-1"),
            )
            .expect("schedule");
    }
    let db = db.display().to_string();
    let text = ok(run_in(dir.path(), &["timers", "--db", &db]));
    assert!(text.contains("2 pending timers"), "{text}");
    let first = text
        .lines()
        .position(|l| l.contains("pay-i-1"))
        .expect("the scheduled one");
    let second = text
        .lines()
        .position(|l| l.contains("timeout/sent/1"))
        .expect("the timeout");
    assert!(first < second, "by due time: {text}");
    let listed = json(&ok(run_in(
        dir.path(),
        &["timers", "--db", &db, "invoice", "--json"],
    )));
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[1]["kind"], "timeout");
}

#[test]
fn machines_lists_counts_per_state() {
    let fixture = Fixture::new();
    let db = fixture.db();
    let text = ok(fixture.run(&["machines", "--db", &db]));
    assert!(
        text.contains("order: definition version 1, 3 entities, 6 states, 6 transitions"),
        "{text}"
    );
    assert!(text.contains("Being filled by the customer"), "{text}");
    let listed = json(&ok(fixture.run(&["machines", "--db", &db, "--json"])));
    let states = listed[0]["states"].as_array().expect("states");
    let count = |name: &str| {
        states
            .iter()
            .find(|state| state["name"] == name)
            .map(|state| state["entities"].clone())
    };
    assert_eq!(count("draft"), Some(1.into()));
    assert_eq!(count("submitted"), Some(1.into()));
    assert_eq!(count("shipped"), Some(1.into()));
    assert_eq!(count("paid"), Some(0.into()));
}

#[test]
fn show_prints_snapshot_and_history() {
    let fixture = Fixture::new();
    let db = fixture.db();
    let text = ok(fixture.run(&["show", "--db", &db, "order", "o-1"]));
    assert!(text.contains("state    shipped"), "{text}");
    assert!(text.contains("version  4"), "{text}");
    assert!(text.contains("pay-o-1"), "{text}");
    assert!(text.contains(r#"{"amount":4200}"#), "{text}");
    let shown = json(&ok(
        fixture.run(&["show", "--db", &db, "order", "o-1", "--json"])
    ));
    assert_eq!(shown["entity"]["state"], "shipped");
    let history = shown["history"].as_array().expect("history");
    assert_eq!(history.len(), 4);
    assert_eq!(history[2]["key"], "pay-o-1");
    assert_eq!(history[2]["actor"], "payments");
}

#[test]
fn graph_exports_dot_mermaid_and_svg() {
    let fixture = Fixture::new();
    let db = fixture.db();
    let dot = ok(fixture.run(&["graph", "--db", &db, "order"]));
    assert!(dot.starts_with("digraph \"order\""), "{dot}");
    assert!(
        dot.contains(r#""submitted" -> "paid" [label="pay"]"#),
        "{dot}"
    );

    let mermaid = ok(fixture.run(&["graph", "--db", &db, "order", "--format", "mermaid"]));
    assert!(mermaid.starts_with("stateDiagram-v2"), "{mermaid}");
    assert!(mermaid.contains("submitted --> paid : pay"), "{mermaid}");

    let heat = ok(fixture.run(&["graph", "--db", &db, "order", "--counts"]));
    assert!(heat.contains(r#"label="draft\n1""#), "{heat}");
    assert!(heat.contains(r#"label="paid\n0""#), "{heat}");

    let path = ok(fixture.run(&["graph", "--db", &db, "order", "--entity", "o-1"]));
    assert_ne!(path, dot);
    assert!(
        path.contains(r##""paid" -> "shipped" [label="ship", color="#1f6feb""##),
        "{path}"
    );

    let file = fixture.dir.path().join("order.mmd");
    let file_arg = file.display().to_string();
    let written = fixture.run(&[
        "graph", "--db", &db, "order", "--format", "mermaid", "-o", &file_arg,
    ]);
    assert!(ok(written).is_empty());
    let saved = std::fs::read_to_string(&file).expect("written file");
    assert_eq!(saved, mermaid);

    let wrong = user_error(fixture.run(&[
        "graph", "--db", &db, "order", "--format", "mermaid", "--counts",
    ]));
    assert!(wrong.contains("--counts"), "{wrong}");
    let unknown = user_error(fixture.run(&["graph", "--db", &db, "order", "--entity", "nope"]));
    assert!(unknown.contains("does not exist"), "{unknown}");

    if dot_available() || dot_required() {
        let svg = ok(fixture.run(&["graph", "--db", &db, "order", "--format", "svg", "--counts"]));
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains("submitted"), "{svg}");
    }
}

#[test]
fn svg_without_graphviz_says_how_to_install_it() {
    let fixture = Fixture::new();
    let db = fixture.db();
    // An empty PATH: no `dot` to be found.
    let output = Command::new(env!("CARGO_BIN_EXE_idemflow"))
        .args(["graph", "--db", &db, "order", "--format", "svg"])
        .env("PATH", "")
        .output()
        .expect("runs");
    let message = user_error(output);
    assert!(message.contains("apt-get install graphviz"), "{message}");
}

#[test]
fn outbox_lists_and_acknowledges() {
    let fixture = Fixture::new();
    let db = fixture.db();
    // 3 creations + 3 transitions of o-1 + 1 of o-2.
    let text = ok(fixture.run(&["outbox", "--db", &db, "--limit", "2"]));
    assert!(
        text.starts_with("7 pending events; the oldest 2:"),
        "{text}"
    );
    let listed = json(&ok(fixture.run(&["outbox", "--db", &db, "--json"])));
    assert_eq!(listed["pending"], 7);
    let events = listed["events"].as_array().expect("events");
    assert_eq!(events.len(), 7);
    assert!(events
        .iter()
        .any(|event| event["id"] == "o-1" && event["version"] == 3 && event["key"] == "pay-o-1"));
    assert_eq!(listed["acknowledged"], Value::Null);

    let acked =
        json(&ok(fixture.run(&[
            "outbox", "--db", &db, "--limit", "5", "--ack", "--json",
        ])));
    assert_eq!(acked["acknowledged"], 5);
    let text = ok(fixture.run(&["outbox", "--db", &db, "--ack"]));
    assert!(text.contains("acknowledged 2 events"), "{text}");
    let empty = json(&ok(fixture.run(&["outbox", "--db", &db, "--json"])));
    assert_eq!(empty["pending"], 0);
}

#[test]
fn purge_keys_reports_a_count() {
    let fixture = Fixture::new();
    let db = fixture.db();
    let text = ok(fixture.run(&["purge-keys", "--db", &db]));
    // The one key (pay-o-1) is fresh: nothing expired.
    assert_eq!(text, "purged 0 expired idempotency keys\n");
    let purged = json(&ok(fixture.run(&["purge-keys", "--db", &db, "--json"])));
    assert_eq!(purged["purged"], 0);
}

#[test]
fn create_and_apply_follow_the_semantics() {
    let fixture = Fixture::new();
    let db = fixture.db();
    let created = ok(fixture.run(&["create", "--db", &db, "order", "o-9"]));
    assert_eq!(
        created,
        "created order \"o-9\" in state draft (version 1)\n"
    );
    let again = json(&ok(
        fixture.run(&["create", "--db", &db, "order", "o-9", "--json"])
    ));
    assert_eq!(again["applied"], false);
    assert_eq!(again["machine"], "order");

    let submitted = ok(fixture.run(&["apply", "--db", &db, "order", "o-9", "--event", "submit"]));
    assert!(
        submitted
            .starts_with("applied: order \"o-9\": draft -> submitted by event submit (version 2)"),
        "{submitted}"
    );

    let pay = [
        "apply",
        "--db",
        &db,
        "order",
        "o-9",
        "--to",
        "paid",
        "--key",
        "pay-o-9",
        "--payload",
        r#"{"amount": 100}"#,
        "--actor",
        "cli",
        "--expect-version",
        "2",
        "--json",
    ];
    let paid = json(&ok(fixture.run(&pay)));
    assert_eq!(
        (paid["state"].clone(), paid["version"].clone()),
        ("paid".into(), 3.into())
    );
    assert_eq!(
        (paid["applied"].clone(), paid["replay"].clone()),
        (true.into(), false.into())
    );

    ok(fixture.run(&["apply", "--db", &db, "order", "o-9", "--event", "ship"]));
    // The same keyed request after the order moved on: the original outcome.
    let replay = json(&ok(fixture.run(&pay)));
    assert_eq!(replay["replay"], true);
    assert_eq!(replay["state"], "paid");
    assert_eq!(replay["version"], 3);
    let text_pay: Vec<&str> = pay[..pay.len() - 1].to_vec();
    let replay_text = ok(fixture.run(&text_pay));
    assert!(replay_text.starts_with("replay: "), "{replay_text}");

    let noop = ok(fixture.run(&["apply", "--db", &db, "order", "o-9", "--to", "shipped"]));
    assert!(
        noop.starts_with("no-op: order \"o-9\": already in shipped"),
        "{noop}"
    );

    // Errors of the request: one line each, exit 1.
    let conflict = user_error(fixture.run(&[
        "apply",
        "--db",
        &db,
        "order",
        "o-2",
        "--to",
        "paid",
        "--expect-version",
        "1",
        "--payload",
        r#"{"amount": 1}"#,
    ]));
    assert!(conflict.contains("expected version 1"), "{conflict}");
    let illegal =
        user_error(fixture.run(&["apply", "--db", &db, "order", "o-3", "--event", "ship"]));
    assert!(illegal.contains("cannot go from \"draft\""), "{illegal}");
    let reused = user_error(fixture.run(&[
        "apply", "--db", &db, "order", "o-2", "--event", "cancel", "--key", "pay-o-9",
    ]));
    assert!(reused.contains("pay-o-9"), "{reused}");
    let bad_payload = user_error(fixture.run(&[
        "apply",
        "--db",
        &db,
        "order",
        "o-2",
        "--event",
        "pay",
        "--payload",
        "{amount",
    ]));
    assert!(
        bad_payload.contains("--payload is not valid JSON"),
        "{bad_payload}"
    );

    let history = json(&ok(
        fixture.run(&["show", "--db", &db, "order", "o-9", "--json"])
    ));
    assert_eq!(history["history"].as_array().map(Vec::len), Some(4));
}

#[test]
fn errors_are_one_line_with_exit_code_1() {
    let fixture = Fixture::new();
    let db = fixture.db();

    let missing_dir = fixture.dir.path().join("no-such-db");
    let missing = missing_dir.display().to_string();
    for args in [
        vec!["machines", "--db", &missing],
        vec!["show", "--db", &missing, "order", "o-1"],
        vec!["graph", "--db", &missing, "order"],
        vec!["outbox", "--db", &missing],
        vec!["purge-keys", "--db", &missing],
        vec!["create", "--db", &missing, "order", "o-1"],
        vec!["apply", "--db", &missing, "order", "o-1", "--to", "paid"],
    ] {
        let message = user_error(fixture.run(&args));
        assert!(message.contains("does not exist"), "{args:?}: {message}");
    }
    assert!(!missing_dir.exists(), "a read command created the database");

    let empty = TempDir::new().expect("temp dir");
    let empty_arg = empty.path().display().to_string();
    let message = user_error(fixture.run(&["machines", "--db", &empty_arg]));
    assert!(message.contains("not an idemflow database"), "{message}");
    assert_eq!(
        std::fs::read_dir(empty.path()).map(Iterator::count).ok(),
        Some(0)
    );

    let message = user_error(fixture.run(&["show", "--db", &db, "invoice", "o-1"]));
    assert!(
        message.contains("no machine named \"invoice\""),
        "{message}"
    );
    let message = user_error(fixture.run(&["graph", "--db", &db, "invoice"]));
    assert!(message.contains("invoice"), "{message}");

    let message = user_error(fixture.run(&["show", "--db", &db, "order", "o-404"]));
    assert_eq!(message, "error: order \"o-404\" does not exist\n");
    let message =
        user_error(fixture.run(&["apply", "--db", &db, "order", "o-404", "--to", "paid"]));
    assert!(message.contains("does not exist"), "{message}");

    let message =
        user_error(fixture.run(&["apply", "--db", &db, "order", "o-2", "--to", "teleported"]));
    assert!(message.contains("teleported"), "{message}");
    let message =
        user_error(fixture.run(&["apply", "--db", &db, "order", "o-2", "--event", "teleport"]));
    assert!(message.contains("teleport"), "{message}");
}

#[test]
fn usage_errors_exit_2() {
    let work = TempDir::new().expect("temp dir");
    for args in [
        vec!["frobnicate"],
        vec!["show", "--db", "x"],
        vec!["apply", "--db", "x", "order", "o-1"],
        vec![
            "apply", "--db", "x", "order", "o-1", "--to", "a", "--event", "b",
        ],
        vec!["graph", "--db", "x", "order", "--format", "png"],
        vec!["demo", "--duplicate-rate", "2"],
        vec!["demo", "--orders", "0"],
    ] {
        let output = run_in(work.path(), &args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let output = run_in(work.path(), &[]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn a_locked_database_is_reported() {
    let fixture = Fixture::new();
    let db = fixture.db();
    let holder = Engine::open(&db).expect("the test holds the database");
    for args in [
        vec!["machines", "--db", &db],
        vec!["apply", "--db", &db, "order", "o-2", "--to", "paid"],
        vec!["demo", "--db", &db, "--orders", "5"],
    ] {
        let message = user_error(fixture.run(&args));
        assert!(message.contains("locked"), "{args:?}: {message}");
    }
    drop(holder);
    ok(fixture.run(&["machines", "--db", &db]));
}

#[test]
fn every_subcommand_has_help_with_examples() {
    let work = TempDir::new().expect("temp dir");
    let top = ok(run_in(work.path(), &["--help"]));
    let subcommands = [
        "demo",
        "machines",
        "show",
        "graph",
        "outbox",
        "purge-keys",
        "create",
        "apply",
    ];
    for name in subcommands {
        assert!(top.contains(name), "--help lacks {name}:\n{top}");
        let help = ok(run_in(work.path(), &[name, "--help"]));
        assert!(help.contains("Usage: idemflow"), "{name}:\n{help}");
        assert!(help.contains("Examples:"), "{name}:\n{help}");
        assert!(
            help.contains(&format!("idemflow {name}")),
            "{name}:\n{help}"
        );
    }
    let version = ok(run_in(work.path(), &["--version"]));
    assert!(version.starts_with("idemflow "), "{version}");
}

/// `--db` may be relative to the working directory.
#[test]
fn relative_db_paths_work() {
    let fixture = Fixture::new();
    let text = ok(fixture.run(&["show", "--db", "db", "order", "o-2"]));
    assert!(text.contains("state    submitted"), "{text}");
}

/// Builds an example (a no-op when `cargo test` built it already) and returns its path.
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary in target/<profile>/deps")
        .to_owned();
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "--example", name, "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    if let Some(target) = profile.parent() {
        build.arg("--target-dir").arg(target);
    }
    if profile.file_name().is_some_and(|dir| dir == "release") {
        build.arg("--release");
    }
    assert!(
        build.status().expect("cargo runs").success(),
        "building {name} failed"
    );
    profile
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

#[test]
fn the_examples_run() {
    let work = TempDir::new().expect("temp dir");
    let quick_start = ok(Command::new(example("order_lifecycle"))
        .current_dir(work.path())
        .output()
        .expect("runs"));
    assert!(
        quick_start.contains("replay of the original outcome"),
        "{quick_start}"
    );
    assert!(
        quick_start.contains("stale cancel refused"),
        "{quick_start}"
    );
    assert!(quick_start.contains("7 outbox events"), "{quick_start}");

    let graphs = work.path().join("graphs");
    let listed = ok(Command::new(example("graph_export"))
        .arg(&graphs)
        .output()
        .expect("runs"));
    for file in ["order.dot", "order-counts.dot", "order.mmd"] {
        assert!(graphs.join(file).is_file(), "{file} missing");
        assert!(listed.contains(file), "{listed}");
    }
    if dot_available() || dot_required() {
        assert!(graphs.join("order.svg").is_file());
    }
}

/// Everything the CLI can read of the fixture, as JSON, to compare before and after.
fn dump(fixture: &Fixture) -> Vec<Value> {
    let db = fixture.db();
    let mut dump = vec![
        json(&ok(fixture.run(&["machines", "--db", &db, "--json"]))),
        json(&ok(
            fixture.run(&["outbox", "--db", &db, "--limit", "1000", "--json"])
        )),
    ];
    for id in ["o-1", "o-2", "o-3"] {
        dump.push(json(&ok(
            fixture.run(&["show", "--db", &db, "order", id, "--json"])
        )));
    }
    dump
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let fixture = Fixture::new();
    let db = fixture.db();
    let before = dump(&fixture);
    let long_id = "x".repeat(1025);
    let long_key = "k".repeat(256);
    let deep_payload = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let huge_payload = format!("\"{}\"", "p".repeat(70 * 1024));
    // (arguments, what the one-line message must mention)
    let refused: Vec<(Vec<&str>, &str)> = vec![
        (vec!["create", "--db", &db, "order", &long_id], "id"),
        (vec!["create", "--db", &db, "order", ""], "id"),
        (
            vec!["apply", "--db", &db, "order", &long_id, "--event", "submit"],
            "id",
        ),
        (
            vec![
                "apply", "--db", &db, "order", "o-3", "--event", "submit", "--key", &long_key,
            ],
            "key",
        ),
        (
            vec![
                "apply", "--db", &db, "order", "o-3", "--event", "submit", "--key", "",
            ],
            "key",
        ),
        (
            vec![
                "apply",
                "--db",
                &db,
                "order",
                "o-3",
                "--event",
                "submit",
                "--payload",
                "{not json",
            ],
            "payload",
        ),
        (
            vec![
                "apply",
                "--db",
                &db,
                "order",
                "o-3",
                "--event",
                "submit",
                "--payload",
                &deep_payload,
            ],
            "payload",
        ),
        (
            vec![
                "apply",
                "--db",
                &db,
                "order",
                "o-3",
                "--event",
                "submit",
                "--payload",
                &huge_payload,
            ],
            "payload",
        ),
        (
            vec!["apply", "--db", &db, "order", "o-3", "--to", "lost"],
            "lost",
        ),
        (
            vec!["apply", "--db", &db, "order", "o-3", "--event", ""],
            "event",
        ),
        (
            vec!["apply", "--db", &db, "invoice", "o-3", "--event", "submit"],
            "invoice",
        ),
        (
            vec!["apply", "--db", &db, "order", "o-3", "--to", "shipped"],
            "cannot go",
        ),
        (
            vec![
                "apply",
                "--db",
                &db,
                "order",
                "o-2",
                "--to",
                "paid",
                "--expect-version",
                "1",
            ],
            "version",
        ),
        (
            vec![
                "apply",
                "--db",
                &db,
                "order",
                "o-3",
                "--to",
                "cancelled",
                "--key",
                "pay-o-1",
            ],
            "key",
        ),
    ];
    for (args, mentions) in &refused {
        let message = user_error(fixture.run(args));
        assert!(
            message.to_lowercase().contains(mentions),
            "{:?}: {message}",
            &args[..args.len().min(7)]
        );
    }
    // Malformed numbers are usage errors (exit 2).
    for version in ["abc", "99999999999999999999999", "-1"] {
        let output = fixture.run(&[
            "apply",
            "--db",
            &db,
            "order",
            "o-3",
            "--event",
            "submit",
            "--expect-version",
            version,
        ]);
        assert_eq!(output.status.code(), Some(2), "--expect-version {version}");
    }
    assert_eq!(
        dump(&fixture),
        before,
        "a refused command changed the database"
    );
}

/// The tools and the multi-process demo on PostgreSQL (`--db postgres://...`).
#[test]
fn tools_and_a_four_process_demo_work_on_postgres() {
    let url = match common::backend::postgres_url() {
        Ok(url) => common::backend::with_schema(&url, &format!("cli_demo_{}", std::process::id())),
        Err(why) => {
            common::backend::skip_postgres("tools_and_a_four_process_demo_work_on_postgres", &why);
            return;
        }
    };
    let cwd = TempDir::new().unwrap();
    let demo = ok(run_in(
        cwd.path(),
        &[
            "demo",
            "--db",
            &url,
            "--processes",
            "4",
            "--orders",
            "200",
            "--threads",
            "2",
            "--json",
        ],
    ));
    let summary: Value = serde_json::from_str(&demo).unwrap();
    assert_eq!(summary["all_checks_passed"], Value::Bool(true), "{demo}");
    assert_eq!(summary["processes"], 4);
    assert_timeouts_checked(&summary);
    let machines: Value = serde_json::from_str(&ok(run_in(
        cwd.path(),
        &["machines", "--db", &url, "--json"],
    )))
    .unwrap();
    assert_eq!(machines[0]["entities"], 200);
    let shown = ok(run_in(
        cwd.path(),
        &["show", "--db", &url, "order", "order-000007"],
    ));
    assert!(shown.contains("order-000007"), "{shown}");
    ok(run_in(
        cwd.path(),
        &["create", "--db", &url, "order", "extra"],
    ));
    ok(run_in(
        cwd.path(),
        &[
            "apply", "--db", &url, "order", "extra", "--event", "submit", "--key", "k-1",
        ],
    ));
    let replay = ok(run_in(
        cwd.path(),
        &[
            "apply", "--db", &url, "order", "extra", "--event", "submit", "--key", "k-1", "--json",
        ],
    ));
    assert!(
        replay.contains("\"replay\": true") || replay.contains("\"replay\":true"),
        "{replay}"
    );
    ok(run_in(
        cwd.path(),
        &["outbox", "--db", &url, "--limit", "5", "--ack"],
    ));
    ok(run_in(cwd.path(), &["purge-keys", "--db", &url]));
    // The password of a URL never shows in an error.
    let refused = run_in(
        cwd.path(),
        &["machines", "--db", "postgres://app:s3cret@127.0.0.1:1/x"],
    );
    assert_ne!(refused.status.code(), Some(0));
    assert!(!stderr(&refused).contains("s3cret"), "{}", stderr(&refused));
}
