//! Drives `examples/http_service.rs` over real HTTP: every status code and
//! header of SPEC section 8, replays after the entity moved on, a reused key,
//! and 16 concurrent identical requests of which exactly one applies.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Barrier, OnceLock};
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;

/// `target/<profile>`, from this test binary's path (`target/<profile>/deps/..`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary in target/<profile>/deps")
        .to_owned()
}

/// Builds the example once per test run and returns its path.
fn example_binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let profile = profile_dir();
        let mut build = Command::new(env!("CARGO"));
        build
            .args([
                "build",
                "--quiet",
                "--example",
                "http_service",
                "--manifest-path",
            ])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
        if let Some(target) = profile.parent() {
            build.arg("--target-dir").arg(target);
        }
        if profile.file_name().is_some_and(|name| name == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(
            status.success(),
            "cargo build --example http_service failed"
        );
        let binary = profile
            .join("examples")
            .join(format!("http_service{}", std::env::consts::EXE_SUFFIX));
        assert!(binary.is_file(), "{} was not built", binary.display());
        binary
    })
}

/// A running service on a fresh database; killed when dropped (also on panic).
struct Server {
    child: Child,
    base: String,
    client: Client,
    _db: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start() -> Server {
        let db = TempDir::new().expect("temp dir");
        let mut child = Command::new(example_binary())
            .arg("127.0.0.1:0")
            .arg(db.path().join("db"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the example starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver.recv_timeout(Duration::from_secs(60));
        let mut server = Server {
            child,
            base: String::new(),
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            _db: db,
        };
        let line = line.expect("the service prints its address within 60 s");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        server.base = base;
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn create(&self, id: &str) -> Response {
        self.client
            .post(self.url(&format!("/orders/{id}")))
            .send()
            .expect("request")
    }

    /// `POST /orders/{id}/transitions` with optional key and If-Match.
    fn transition(
        &self,
        id: &str,
        body: &str,
        key: Option<&str>,
        if_match: Option<&str>,
    ) -> Response {
        let mut request = self
            .client
            .post(self.url(&format!("/orders/{id}/transitions")))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(version) = if_match {
            request = request.header("If-Match", version);
        }
        request.send().expect("request")
    }

    fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().expect("request")
    }
}

fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Status, ETag, replay header and body of a response.
struct Answer {
    status: StatusCode,
    etag: Option<String>,
    replayed: bool,
    body: String,
}

impl Answer {
    fn of(response: Response) -> Answer {
        let status = response.status();
        let etag = header(&response, "etag");
        let replayed = header(&response, "idempotency-replayed").as_deref() == Some("true");
        let body = response.text().expect("body");
        Answer {
            status,
            etag,
            replayed,
            body,
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    /// Asserts an error answer with this status and kind.
    #[track_caller]
    fn assert_error(&self, status: StatusCode, kind: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        let body = self.json();
        assert_eq!(body["kind"], kind, "{}", self.body);
        assert!(
            body["error"].as_str().is_some_and(|text| !text.is_empty()),
            "{}",
            self.body
        );
        assert!(!self.replayed);
    }
}

const PAY: &str = r#"{"to": "paid", "payload": {"amount": 4200}}"#;

#[test]
fn status_codes_and_headers_follow_the_spec() {
    let server = Server::start();

    // Create: 201, then 200 for an existing entity.
    let created = Answer::of(server.create("o-1"));
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.etag.as_deref(), Some("\"1\""));
    assert_eq!(created.json()["state"], "draft");
    let existing = Answer::of(server.create("o-1"));
    assert_eq!(existing.status, StatusCode::OK);
    assert_eq!(existing.json()["applied"], false);

    // Applied by event: 200 with the new version as ETag.
    let submitted = Answer::of(server.transition("o-1", r#"{"event": "submit"}"#, None, None));
    assert_eq!(submitted.status, StatusCode::OK, "{}", submitted.body);
    assert_eq!(submitted.etag.as_deref(), Some("\"2\""));
    assert_eq!(submitted.json()["state"], "submitted");
    assert!(!submitted.replayed);

    // Reads.
    let read = Answer::of(server.get("/orders/o-1"));
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.etag.as_deref(), Some("\"2\""));
    assert_eq!(read.json()["state"], "submitted");
    Answer::of(server.get("/orders/nope")).assert_error(StatusCode::NOT_FOUND, "NotFound");
    Answer::of(server.get("/orders/nope/history")).assert_error(StatusCode::NOT_FOUND, "NotFound");

    // 400: malformed JSON, a body naming both or neither, unknown names, bad headers.
    Answer::of(server.transition("o-1", "{not json", None, None))
        .assert_error(StatusCode::BAD_REQUEST, "InvalidInput");
    Answer::of(server.transition("o-1", r#"{"to": "paid", "event": "pay"}"#, None, None))
        .assert_error(StatusCode::BAD_REQUEST, "InvalidInput");
    Answer::of(server.transition("o-1", r#"{}"#, None, None))
        .assert_error(StatusCode::BAD_REQUEST, "InvalidInput");
    Answer::of(server.transition("o-1", r#"{"to": "teleported"}"#, None, None))
        .assert_error(StatusCode::BAD_REQUEST, "InvalidInput");
    Answer::of(server.transition("o-1", PAY, None, Some("2")))
        .assert_error(StatusCode::BAD_REQUEST, "InvalidInput");
    Answer::of(server.transition("o-1", PAY, None, Some("\"two\"")))
        .assert_error(StatusCode::BAD_REQUEST, "InvalidInput");
    Answer::of(server.transition("o-1", PAY, Some(""), None))
        .assert_error(StatusCode::BAD_REQUEST, "InvalidInput");

    // 404: no such entity.
    Answer::of(server.transition("o-404", PAY, None, None))
        .assert_error(StatusCode::NOT_FOUND, "NotFound");
    // 409: an illegal transition, and a guard's refusal (a payment needs an amount).
    Answer::of(server.transition("o-1", r#"{"to": "shipped"}"#, None, None))
        .assert_error(StatusCode::CONFLICT, "InvalidTransition");
    Answer::of(server.transition("o-1", r#"{"event": "pay"}"#, Some("pay-free"), None))
        .assert_error(StatusCode::CONFLICT, "GuardRejected");
    // 412: a stale If-Match.
    Answer::of(server.transition("o-1", PAY, Some("pay-o-1"), Some("\"1\"")))
        .assert_error(StatusCode::PRECONDITION_FAILED, "VersionConflict");

    // Errors are not stored under the key: the same key now applies.
    let paid = Answer::of(server.transition("o-1", PAY, Some("pay-o-1"), Some("\"2\"")));
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    assert_eq!(paid.etag.as_deref(), Some("\"3\""));
    assert!(!paid.replayed);
    assert_eq!(paid.json()["applied"], true);
    assert_eq!(paid.json()["from"], "submitted");

    // The entity moves on.
    let shipped =
        Answer::of(server.transition("o-1", r#"{"event": "ship"}"#, Some("ship-o-1"), None));
    assert_eq!(shipped.status, StatusCode::OK, "{}", shipped.body);
    assert_eq!(shipped.etag.as_deref(), Some("\"4\""));

    // The payment retried after a lost response: the original status and
    // body, marked as a replay, although the order is shipped by now.
    let replay = Answer::of(server.transition("o-1", PAY, Some("pay-o-1"), Some("\"2\"")));
    assert_eq!(replay.status, paid.status);
    assert_eq!(replay.body, paid.body);
    assert_eq!(replay.etag, paid.etag);
    assert!(replay.replayed);
    assert_eq!(
        Answer::of(server.get("/orders/o-1")).json()["state"],
        "shipped"
    );

    // 422: the key reused for another request (another payload).
    let other = r#"{"to": "paid", "payload": {"amount": 1}}"#;
    Answer::of(server.transition("o-1", other, Some("pay-o-1"), Some("\"2\"")))
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "KeyReused");

    // No-op: the target is already reached; 200, nothing applied, no replay.
    let noop = Answer::of(server.transition("o-1", r#"{"to": "shipped"}"#, None, Some("\"1\"")));
    assert_eq!(noop.status, StatusCode::OK, "{}", noop.body);
    assert_eq!(noop.json()["applied"], false);
    assert_eq!(noop.etag.as_deref(), Some("\"4\""));
    assert!(!noop.replayed);

    // History: one entry per applied change, oldest first.
    let history = Answer::of(server.get("/orders/o-1/history"));
    assert_eq!(history.status, StatusCode::OK);
    let entries = history.json();
    let entries = entries.as_array().expect("array");
    let states: Vec<&str> = entries
        .iter()
        .filter_map(|entry| entry["to"].as_str())
        .collect();
    assert_eq!(states, ["draft", "submitted", "paid", "shipped"]);
    assert_eq!(entries[2]["key"], "pay-o-1");
    assert_eq!(entries[2]["payload"], json!({"amount": 4200}));
}

#[test]
fn graphs_are_served() {
    let server = Server::start();
    let created = Answer::of(server.create("o-1"));
    assert_eq!(created.status, StatusCode::CREATED);

    let response = server.get("/machines/order/graph.dot");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        header(&response, "content-type").is_some_and(|kind| kind.starts_with("text/vnd.graphviz"))
    );
    let dot = response.text().expect("body");
    assert!(dot.starts_with("digraph \"order\""), "{dot}");
    assert!(
        dot.contains("tooltip=\"Paid: the customer's card was charged.\""),
        "{dot}"
    );

    let heat = server
        .get("/machines/order/graph.dot?counts=true")
        .text()
        .expect("body");
    assert!(heat.contains(r#"label="draft\n1""#), "{heat}");

    let svg = Answer::of(server.get("/machines/order/graph.svg"));
    let has_dot = Command::new("dot")
        .arg("-V")
        .output()
        .is_ok_and(|out| out.status.success());
    if has_dot {
        assert_eq!(svg.status, StatusCode::OK, "{}", svg.body);
        assert!(svg.body.contains("<svg"), "{}", svg.body);
    } else {
        assert!(
            std::env::var_os("IDEMFLOW_REQUIRE_DOT").is_none(),
            "Graphviz is required"
        );
        svg.assert_error(StatusCode::SERVICE_UNAVAILABLE, "GraphvizMissing");
    }
}

#[test]
fn sixteen_identical_concurrent_requests_apply_once() {
    const REQUESTS: usize = 16;
    let server = Arc::new(Server::start());
    assert_eq!(Answer::of(server.create("o-2")).status, StatusCode::CREATED);
    let submitted = Answer::of(server.transition("o-2", r#"{"event": "submit"}"#, None, None));
    assert_eq!(submitted.status, StatusCode::OK);

    let barrier = Arc::new(Barrier::new(REQUESTS));
    let answers: Vec<Answer> = (0..REQUESTS)
        .map(|_| {
            let server = Arc::clone(&server);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                Answer::of(server.transition("o-2", PAY, Some("pay-o-2"), None))
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|handle| handle.join().expect("request thread"))
        .collect();

    for answer in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.etag.as_deref(), Some("\"3\""));
    }
    let originals: Vec<&Answer> = answers.iter().filter(|answer| !answer.replayed).collect();
    assert_eq!(
        originals.len(),
        1,
        "exactly one request applies, the others replay"
    );
    assert_eq!(originals[0].json()["applied"], true);
    for answer in &answers {
        assert_eq!(
            answer.body, originals[0].body,
            "every replay has the original body"
        );
    }

    let history = Answer::of(server.get("/orders/o-2/history")).json();
    let payments = history
        .as_array()
        .expect("array")
        .iter()
        .filter(|entry| entry["to"] == "paid")
        .count();
    assert_eq!(payments, 1);
    assert_eq!(Answer::of(server.get("/orders/o-2")).json()["version"], 3);
}

/// Malformed requests get 4xx with a JSON error body and write nothing.
#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let server = Server::start();
    assert_eq!(server.create("o-1").status().as_u16(), 201);
    let history = |id: &str| -> String {
        let response = server.get(&format!("/orders/{id}/history"));
        assert_eq!(response.status().as_u16(), 200);
        response.text().expect("body")
    };
    let before = history("o-1");
    let long_key = "k".repeat(256);
    let deep = format!(
        "{{\"event\": \"submit\", \"payload\": {}1{}}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    // (id, body, Idempotency-Key, If-Match, expected status)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, u16);
    let cases: Vec<Case<'_>> = vec![
        ("o-1", "{not json", None, None, 400),
        ("o-1", "{}", None, None, 400),
        ("o-1", r#"{"to": "paid", "event": "pay"}"#, None, None, 400),
        ("o-1", r#"{"to": "lost"}"#, None, None, 400),
        ("o-1", r#"{"event": "teleport"}"#, None, None, 400),
        ("o-1", r#"{"event": "submit"}"#, Some(""), None, 400),
        ("o-1", r#"{"event": "submit"}"#, Some(&long_key), None, 400),
        ("o-1", &deep, None, None, 400),
        ("o-1", r#"{"event": "submit"}"#, None, Some("\"abc\""), 400),
        ("o-1", r#"{"event": "submit"}"#, None, Some("\"7\""), 412),
        ("o-1", r#"{"to": "shipped"}"#, None, None, 409),
        ("o-404", r#"{"event": "submit"}"#, None, None, 404),
    ];
    for (id, body, key, if_match, status) in cases {
        let response = server.transition(id, body, key, if_match);
        assert_eq!(
            response.status().as_u16(),
            status,
            "{body} key={key:?} if-match={if_match:?}"
        );
        let error: serde_json::Value = response.json().expect("a JSON error body");
        assert!(error["error"].is_string(), "{error}");
    }
    let long_id = "x".repeat(1025);
    assert_eq!(server.create(&long_id).status().as_u16(), 400);
    assert_eq!(
        history("o-1"),
        before,
        "a refused request changed the entity"
    );
    assert_eq!(server.get("/orders/o-404").status().as_u16(), 404);
}
