//! What the engine tells an application: the `tracing` spans of every public
//! call (and their fields), the events for retries, conflicts, migrations,
//! timer firings and sync failures, and the `metrics` it records, captured
//! by a subscriber and a recorder installed here (the library installs
//! neither). No payload, key, scope or actor value ever appears in a span
//! or an event.
//!
//! The subscriber and the recorder are global to this test binary, so its
//! tests run one at a time (`serial`) and each uses machines of its own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use idemflow::observe;
use idemflow::testing::{Faults, ManualClock};
use idemflow::{Create, Durability, Engine, Error, MachineDef, NamedRequest, Request};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Markers that stand for secrets: they must never reach a span or an event.
const KEY: &str = "KEY-SECRET-7f3a";
const PAYLOAD: &str = "PAYLOAD-SECRET-card-4242";
const SCOPE: &str = "SCOPE-SECRET-tenant";
const ACTOR: &str = "ACTOR-SECRET-alice";

#[derive(idemflow::StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "obs_order", initial = Draft, events = ObsOrderEvent)]
enum ObsOrder {
    #[on(submit = Submitted, cancel = Cancelled)]
    Draft,
    #[on(pay = Paid, cancel = Cancelled)]
    Submitted,
    #[on(ship = Shipped)]
    Paid,
    #[terminal]
    Shipped,
    #[terminal]
    Cancelled,
}

#[derive(idemflow::StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "obs_metrics", initial = Draft, events = MetricsEvent)]
enum MetricsOrder {
    #[on(submit = Submitted)]
    Draft,
    #[on(pay = Paid)]
    Submitted,
    #[on(ship = Shipped)]
    Paid,
    #[terminal]
    Shipped,
}

#[derive(idemflow::StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "obs_async", initial = Draft, events = AsyncEvent)]
enum AsyncOrder {
    #[on(submit = Submitted)]
    Draft,
    #[terminal]
    Submitted,
}

// ---------------------------------------------------------------------------
// Capturing spans and events
// ---------------------------------------------------------------------------

/// A span as it closed (or as it is, if still open): its fields and its parent.
#[derive(Clone, Debug, Default)]
struct SpanSeen {
    name: String,
    target: String,
    parent: Option<String>,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
struct EventSeen {
    /// The span the event happened in.
    span: Option<String>,
    fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Captured {
    spans: BTreeMap<u64, SpanSeen>,
    closed: Vec<SpanSeen>,
    events: Vec<EventSeen>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

struct Capture(Arc<Mutex<Captured>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut seen = SpanSeen {
            name: attrs.metadata().name().to_owned(),
            target: attrs.metadata().target().to_owned(),
            parent: ctx
                .span(id)
                .and_then(|span| span.parent())
                .map(|parent| parent.name().to_owned()),
            ..SpanSeen::default()
        };
        attrs.record(&mut Fields(&mut seen.fields));
        lock(&self.0).spans.insert(id.into_u64(), seen);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        if let Some(seen) = lock(&self.0).spans.get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let span = ctx.event_span(event).map(|span| span.name().to_owned());
        lock(&self.0).events.push(EventSeen { span, fields });
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        let mut captured = lock(&self.0);
        if let Some(seen) = captured.spans.remove(&id.into_u64()) {
            captured.closed.push(seen);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The global subscriber and recorder of this binary, installed once.
struct Observed {
    captured: Arc<Mutex<Captured>>,
    metrics: Snapshotter,
}

fn observed() -> &'static Observed {
    static OBSERVED: OnceLock<Observed> = OnceLock::new();
    OBSERVED.get_or_init(|| {
        let captured = Arc::new(Mutex::new(Captured::default()));
        let subscriber = tracing_subscriber::registry().with(Capture(captured.clone()));
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        let recorder = DebuggingRecorder::new();
        let metrics = recorder.snapshotter();
        recorder.install().expect("one global recorder");
        Observed { captured, metrics }
    })
}

/// Runs this binary's tests one at a time (they share the globals).
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    lock(&SERIAL)
}

/// Every span (closed or open) and event captured so far.
fn everything() -> (Vec<SpanSeen>, Vec<EventSeen>) {
    let captured = lock(&observed().captured);
    let mut spans = captured.closed.clone();
    spans.extend(captured.spans.values().cloned());
    (spans, captured.events.clone())
}

fn spans_of(machine: &str) -> Vec<SpanSeen> {
    everything()
        .0
        .into_iter()
        .filter(|span| span.fields.get("machine").map(String::as_str) == Some(machine))
        .collect()
}

fn field<'a>(span: &'a SpanSeen, name: &str) -> Option<&'a str> {
    span.fields.get(name).map(String::as_str)
}

/// No secret marker in any span field or event field captured so far.
fn assert_no_secrets() {
    let (spans, events) = everything();
    for span in &spans {
        for (name, value) in &span.fields {
            for secret in [KEY, PAYLOAD, SCOPE, ACTOR] {
                assert!(
                    !value.contains(secret),
                    "span {} field {name} = {value:?} carries a secret",
                    span.name
                );
            }
        }
    }
    for event in &events {
        for (name, value) in &event.fields {
            for secret in [KEY, PAYLOAD, SCOPE, ACTOR] {
                assert!(
                    !value.contains(secret),
                    "event {:?} field {name} = {value:?} carries a secret",
                    event.fields.get("message")
                );
            }
        }
    }
}

fn has_event(words: &str) -> bool {
    everything().1.iter().any(|event| {
        event
            .fields
            .get("message")
            .is_some_and(|message| message.contains(words))
    })
}

// ---------------------------------------------------------------------------
// Spans and events
// ---------------------------------------------------------------------------

#[test]
fn every_call_has_a_span_with_its_outcome_and_no_secret() {
    let _serial = serial();
    observed();
    let clock = ManualClock::new(1_800_000_000_000);
    let engine = Engine::builder()
        .clock(clock.clone())
        .timers(false)
        .temporary()
        .unwrap();
    let orders = engine.machine::<ObsOrder>().unwrap();
    let secret_payload = json!({"card": PAYLOAD, "amount": 4200});

    let create = Create::new()
        .key(format!("{KEY}-create"))
        .scope(SCOPE)
        .payload(secret_payload.clone())
        .actor(ACTOR);
    orders.create_request("o-1", create.clone()).unwrap();
    orders.create_request("o-1", create).unwrap(); // replay
    let submit = Request::fire(ObsOrderEvent::Submit)
        .key(KEY)
        .scope(SCOPE)
        .payload(secret_payload.clone())
        .actor(ACTOR);
    orders.apply("o-1", submit.clone()).unwrap();
    orders.apply("o-1", submit).unwrap(); // replay
    orders.transition("o-1", ObsOrder::Submitted).unwrap(); // no-op
    let stale = orders.apply("o-1", Request::to(ObsOrder::Paid).expect_version(1));
    assert!(matches!(stale, Err(Error::VersionConflict { .. })));
    let reused = orders.apply(
        "o-1",
        Request::to(ObsOrder::Cancelled).key(KEY).scope(SCOPE),
    );
    assert!(matches!(reused, Err(Error::KeyReused { .. })));
    assert!(orders.get("o-1").unwrap().is_some());
    assert!(orders.get("o-404").unwrap().is_none());
    assert_eq!(orders.history("o-1").unwrap().len(), 2);
    assert_eq!(orders.in_state(ObsOrder::Submitted).unwrap().len(), 1);
    orders.count_by_state().unwrap();
    let pay = Request::fire(ObsOrderEvent::Pay)
        .key(format!("{KEY}-pay"))
        .payload(secret_payload);
    orders
        .schedule("o-1", Duration::from_secs(60), pay)
        .unwrap();
    orders
        .schedule(
            "o-1",
            Duration::from_secs(600),
            Request::fire(ObsOrderEvent::Cancel).key(format!("{KEY}-cancel")),
        )
        .unwrap();
    assert_eq!(orders.scheduled("o-1").unwrap().len(), 2);
    assert!(orders
        .cancel_scheduled("o-1", &format!("{KEY}-cancel"))
        .unwrap());
    clock.advance(Duration::from_secs(61));
    assert_eq!(engine.run_due_timers().unwrap(), 1);
    let outbox = engine.outbox();
    let events = outbox.pending(100).unwrap();
    outbox.ack(&events).unwrap();
    engine.purge_keys().unwrap();

    let spans = spans_of("obs_order");
    let named =
        |name: &str| -> Vec<&SpanSeen> { spans.iter().filter(|span| span.name == name).collect() };
    for name in [
        "install",
        "create",
        "apply",
        "get",
        "history",
        "in_state",
        "count_by_state",
        "schedule",
        "scheduled",
        "cancel_scheduled",
    ] {
        assert!(!named(name).is_empty(), "no {name} span in {spans:#?}");
        assert!(named(name).iter().all(|span| span.target == "idemflow"));
    }
    let (all, _) = everything();
    for name in [
        "run_due_timers",
        "outbox_pending",
        "outbox_ack",
        "purge_keys",
    ] {
        assert!(all.iter().any(|span| span.name == name), "no {name} span");
    }

    // Requests: outcome, version, whether a key was given.
    let outcomes: Vec<(Option<&str>, Option<&str>, Option<&str>)> = named("apply")
        .iter()
        .map(|span| {
            (
                field(span, "outcome"),
                field(span, "version"),
                field(span, "key"),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (Some("applied"), Some("2"), Some("true")),
            (Some("replay"), Some("2"), Some("true")),
            (Some("noop"), Some("2"), Some("false")),
            (Some("VersionConflict"), None, Some("false")),
            (Some("KeyReused"), None, Some("true")),
        ]
    );
    let creates: Vec<_> = named("create")
        .iter()
        .map(|span| {
            (
                field(span, "outcome"),
                field(span, "id"),
                field(span, "key"),
            )
        })
        .collect();
    assert_eq!(
        creates,
        vec![
            (Some("applied"), Some("o-1"), Some("true")),
            (Some("replay"), Some("o-1"), Some("true")),
        ]
    );
    let gets: Vec<_> = named("get")
        .iter()
        .map(|span| (field(span, "outcome"), field(span, "version")))
        .collect();
    assert_eq!(
        gets,
        vec![(Some("found"), Some("2")), (Some("absent"), None)]
    );
    assert_eq!(field(named("history")[0], "count"), Some("2"));
    assert_eq!(
        field(named("cancel_scheduled")[0], "outcome"),
        Some("cancelled")
    );

    // Events: the conflicts (in their request's span, naming this test's
    // machine: the other tests of this binary conflict too, and the captured
    // events are shared), the timer firing.
    for conflict in [
        "conflict: the entity is not at the expected version",
        "conflict: the idempotency key was already used",
    ] {
        let event = everything()
            .1
            .into_iter()
            .find(|event| {
                event
                    .fields
                    .get("message")
                    .is_some_and(|m| m.contains(conflict))
                    && event.fields.get("machine").map(String::as_str) == Some("obs_order")
            })
            .unwrap_or_else(|| panic!("no event {conflict:?} naming machine obs_order"));
        assert_eq!(event.span.as_deref(), Some("apply"));
    }
    let fired = everything()
        .1
        .into_iter()
        .find(|event| {
            event
                .fields
                .get("message")
                .is_some_and(|m| m == "fired a timer")
                && event.fields.get("machine").map(String::as_str) == Some("obs_order")
        })
        .expect("a timer-firing event naming machine obs_order");
    assert_eq!(
        fired.fields.get("outcome").map(String::as_str),
        Some("applied")
    );

    assert_no_secrets();
}

#[test]
fn sync_failures_retries_and_migrations_are_events() {
    let _serial = serial();
    observed();
    let faults = Faults::new();
    let engine = Engine::builder()
        .faults(faults.clone())
        .temporary()
        .unwrap();
    let orders = engine.machine::<ObsOrder>().unwrap();
    orders.create("o-2").unwrap();
    faults.fail_next_syncs(1);
    let submit = Request::fire(ObsOrderEvent::Submit)
        .key(KEY)
        .payload(json!({"card": PAYLOAD}));
    let unknown = orders.apply("o-2", submit.clone());
    assert!(
        matches!(unknown, Err(Error::CommitUnknown { .. })),
        "{unknown:?}"
    );
    assert!(orders.apply("o-2", submit).unwrap().is_replay());
    assert!(has_event("a sync failed"));
    assert!(has_event("outcome unknown"));
    let apply_spans: Vec<_> = spans_of("obs_order")
        .into_iter()
        .filter(|span| span.name == "apply" && field(span, "id") == Some("o-2"))
        .map(|span| field(&span, "outcome").map(str::to_owned))
        .collect();
    assert_eq!(
        apply_spans,
        vec![Some("CommitUnknown".to_owned()), Some("replay".to_owned())]
    );

    // A guard that sees a record that then changes runs again: a retry event.
    let guarded = engine.machine::<ObsOrder>().unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let gate = Mutex::new(Some((started_tx, go_rx)));
    guarded.guard_to(ObsOrder::Cancelled, move |_| {
        if let Some((started, go)) = lock(&gate).take() {
            let _ = started.send(());
            let _ = go.recv_timeout(Duration::from_secs(10));
        }
        Ok(())
    });
    guarded.create("o-3").unwrap();
    let racer = guarded.clone();
    let cancelling = std::thread::spawn(move || racer.transition("o-3", ObsOrder::Cancelled));
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    guarded.fire("o-3", ObsOrderEvent::Submit).unwrap(); // the record moves on
    go_tx.send(()).unwrap();
    let cancelled = cancelling.join().unwrap().unwrap();
    assert_eq!(cancelled.version(), 3);
    assert!(has_event("retry: the record changed since the guards ran"));

    // A rename by alias: the new definition is stored, entities move.
    let v1 = MachineDef::new("obs_evolve", "queued")
        .state("queued")
        .terminal_state("done")
        .transition("queued", "finish", "done");
    let queue = engine.register(v1).unwrap();
    queue.create("q-1").unwrap();
    queue
        .apply(
            "q-1",
            NamedRequest::fire("finish")
                .key(KEY)
                .payload(json!({"card": PAYLOAD})),
        )
        .unwrap();
    queue.create("q-2").unwrap();
    let v2 = MachineDef::new("obs_evolve", "waiting")
        .state("waiting")
        .terminal_state("done")
        .transition("waiting", "finish", "done")
        .alias("waiting", "queued");
    let queue = engine.register(v2).unwrap();
    while queue.migrate_step().unwrap() > 0 {}
    assert_eq!(queue.pending_migration().unwrap(), 0);
    assert!(has_event(
        "migration: stored a new version of the machine's definition"
    ));
    assert!(has_event("migration: moved entities"));

    assert_no_secrets();
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/// Metric values by name and sorted labels.
type Metrics = BTreeMap<(String, Vec<(String, String)>), DebugValue>;

/// The metrics recorded since the previous snapshot (counters and gauges
/// are reset by a snapshot), by name and labels.
fn snapshot() -> Metrics {
    observed()
        .metrics
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect();
            labels.sort();
            ((key.name().to_owned(), labels), value)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut labels: Vec<_> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    labels
}

fn counter(metrics: &Metrics, name: &str, pairs: &[(&str, &str)]) -> u64 {
    match metrics.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Counter(count)) => *count,
        None => 0,
        Some(other) => panic!("{name} is not a counter: {other:?}"),
    }
}

#[test]
fn metrics_count_requests_commits_outbox_and_timers() {
    let _serial = serial();
    observed();
    let clock = ManualClock::new(1_800_000_000_000);
    let faults = Faults::new();
    let engine = Engine::builder()
        .clock(clock.clone())
        .faults(faults.clone())
        .timers(false)
        .durability(Durability::Immediate)
        .temporary()
        .unwrap();
    let orders = engine.machine::<MetricsOrder>().unwrap();
    snapshot(); // from here on, this engine's counts (the outbox gauge is 0: a new database)

    orders.create("m-1").unwrap();
    orders.create("m-2").unwrap();
    orders.create("m-2").unwrap(); // no-op
    let submit = Request::fire(MetricsEvent::Submit).key("submit-m-1");
    orders.apply("m-1", submit.clone()).unwrap();
    orders.apply("m-1", submit).unwrap(); // replay
    let stale = orders.apply(
        "m-2",
        Request::to(MetricsOrder::Submitted).expect_version(7),
    );
    assert!(matches!(stale, Err(Error::VersionConflict { .. })));
    let outbox = engine.outbox();
    let first = outbox.pending(1).unwrap();
    assert_eq!(outbox.ack(&first).unwrap(), 1);

    faults.fail_next_syncs(1);
    let pay = Request::fire(MetricsEvent::Pay).key("pay-m-1");
    assert!(matches!(
        orders.apply("m-1", pay.clone()),
        Err(Error::CommitUnknown { .. })
    ));
    assert!(orders.apply("m-1", pay).unwrap().is_replay());

    orders
        .schedule(
            "m-1",
            Duration::from_secs(60),
            Request::fire(MetricsEvent::Ship).key("ship-m-1"),
        )
        .unwrap();
    clock.advance(Duration::from_secs(60));
    assert_eq!(engine.run_due_timers().unwrap(), 1);

    let metrics = snapshot();
    let machine = ("machine", "obs_metrics");
    let requests = |outcome: &str| {
        counter(
            &metrics,
            observe::REQUESTS_TOTAL,
            &[machine, ("outcome", outcome)],
        )
    };
    assert_eq!(requests("applied"), 3, "{metrics:#?}");
    assert_eq!(requests("noop"), 1);
    assert_eq!(requests("replay"), 2);
    assert_eq!(requests("VersionConflict"), 1);
    assert_eq!(requests("CommitUnknown"), 1);
    assert_eq!(
        counter(&metrics, observe::COMMIT_UNKNOWN_TOTAL, &[machine]),
        1
    );
    assert_eq!(
        counter(
            &metrics,
            observe::TIMERS_FIRED_TOTAL,
            &[machine, ("outcome", "applied")]
        ),
        1
    );
    // Five changes (two creations, submit, pay, ship) appended five events; one was acknowledged.
    assert_eq!(
        metrics.get(&(observe::OUTBOX_PENDING.to_owned(), vec![])),
        Some(&DebugValue::Gauge(4.0.into())),
        "{metrics:#?}"
    );
    assert_eq!(outbox.len().unwrap(), 4);
    let histogram = |name: &str| match metrics.get(&(name.to_owned(), vec![])) {
        Some(DebugValue::Histogram(values)) => values.iter().map(|v| v.into_inner()).collect(),
        other => panic!("{name}: {other:?}"),
    };
    let sizes: Vec<f64> = histogram(observe::BATCH_SIZE);
    let seconds: Vec<f64> = histogram(observe::COMMIT_SECONDS);
    // Every batch that reached the writer: two creations, submit, pay (its
    // sync failed) and the timer's firing; the no-op, the replays and the
    // conflict were answered from reads.
    assert!(sizes.len() >= 5, "{sizes:?}");
    assert!(sizes.iter().all(|size| *size >= 1.0));
    assert_eq!(seconds.len(), sizes.len());
    assert!(seconds.iter().all(|s| *s >= 0.0 && *s < 60.0));
    assert!(metrics.contains_key(&(observe::TIMERS_DUE.to_owned(), vec![])));
}

// ---------------------------------------------------------------------------
// Async handles
// ---------------------------------------------------------------------------

#[test]
fn async_calls_run_in_the_callers_span() {
    use tracing::Instrument;

    let _serial = serial();
    observed();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async {
        let engine = Engine::temporary().unwrap();
        let orders = engine.machine_async::<AsyncOrder>().await.unwrap();
        async {
            orders.create("a-1").await.unwrap();
            orders
                .apply("a-1", Request::fire(AsyncEvent::Submit).key(KEY))
                .await
                .unwrap();
        }
        .instrument(tracing::info_span!("http_request"))
        .await;
    });
    let spans = spans_of("obs_async");
    let parents: Vec<_> = spans
        .iter()
        .filter(|span| span.name == "create" || span.name == "apply")
        .map(|span| (span.name.as_str(), span.parent.as_deref()))
        .collect();
    assert_eq!(
        parents,
        vec![
            ("create", Some("http_request")),
            ("apply", Some("http_request"))
        ]
    );
    assert_no_secrets();
}
