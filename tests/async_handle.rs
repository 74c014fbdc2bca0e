//! The async handles (feature `tokio`, enabled for this crate's tests):
//! every method answers as the blocking handle does, a dropped future does
//! not cancel its commit, and a retry with the same key is the safe way on.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use idemflow::testing::ManualClock;
use idemflow::{
    AsyncMachine, Create, Engine, Error, MachineDef, NamedAsyncMachine, NamedRequest, Request,
};
use serde_json::json;

use common::{OrderEvent, OrderState};

#[tokio::test]
async fn async_handle_mirrors_the_blocking_one() {
    let clock = ManualClock::new(1_800_000_000_000);
    let engine = Engine::builder()
        .clock(clock.clone())
        .timers(false)
        .temporary()
        .unwrap();
    let orders: AsyncMachine<OrderState> = engine.machine_async().await.unwrap();

    let created = orders.create("o-1").await.unwrap();
    assert!(created.was_created());
    assert!(orders.create("o-1").await.unwrap().was_noop());
    let keyed = Create::new().key("new-o-2").payload(json!({"total": 3}));
    assert!(orders
        .create_request("o-2", keyed.clone())
        .await
        .unwrap()
        .was_created());
    assert!(orders
        .create_request("o-2", keyed)
        .await
        .unwrap()
        .is_replay());
    orders
        .create_with("o-3", Some(json!({"note": "x"})), Some("alice".into()))
        .await
        .unwrap();

    assert_eq!(
        orders
            .fire("o-1", OrderEvent::Submit)
            .await
            .unwrap()
            .state(),
        OrderState::Submitted
    );
    let pay = Request::to(OrderState::Paid)
        .key("pay-o-1")
        .expect_version(2);
    assert!(orders
        .apply("o-1", pay.clone())
        .await
        .unwrap()
        .was_applied());
    assert!(orders.apply("o-1", pay).await.unwrap().is_replay());
    assert!(orders
        .transition("o-1", OrderState::Paid)
        .await
        .unwrap()
        .was_noop());
    let stale = orders
        .apply("o-1", Request::to(OrderState::Shipped).expect_version(1))
        .await;
    assert!(matches!(
        stale,
        Err(Error::VersionConflict { actual: 3, .. })
    ));
    assert!(matches!(
        orders.fire("nobody", OrderEvent::Submit).await,
        Err(Error::NotFound { .. })
    ));

    let entity = orders.get("o-1").await.unwrap().unwrap();
    assert_eq!((entity.state, entity.version), (OrderState::Paid, 3));
    assert!(orders.get("o-404").await.unwrap().is_none());
    assert_eq!(orders.history("o-1").await.unwrap().len(), 3);
    assert_eq!(
        orders.in_state(OrderState::Draft).await.unwrap(),
        vec!["o-2".to_owned(), "o-3".to_owned()]
    );
    assert_eq!(
        orders
            .in_state_page(OrderState::Draft, Some("o-2"), 10)
            .await
            .unwrap(),
        vec!["o-3".to_owned()]
    );
    let counts = orders.count_by_state().await.unwrap();
    assert!(counts.contains(&(OrderState::Draft, 2)) && counts.contains(&(OrderState::Paid, 1)));

    let ship = Request::fire(OrderEvent::Ship).key("ship-o-1");
    let timer = orders
        .schedule("o-1", Duration::from_secs(60), ship)
        .await
        .unwrap();
    assert_eq!(timer.due_at, 1_800_000_060_000);
    orders
        .schedule(
            "o-2",
            Duration::from_secs(60),
            Request::fire(OrderEvent::Cancel)
                .key("cancel-o-2")
                .scope("shop-1"),
        )
        .await
        .unwrap();
    assert_eq!(orders.scheduled("o-1").await.unwrap().len(), 1);
    assert!(orders
        .cancel_scheduled_in("o-2", "shop-1", "cancel-o-2")
        .await
        .unwrap());
    assert!(!orders.cancel_scheduled("o-2", "cancel-o-2").await.unwrap());
    assert!(orders.cancel_scheduled("o-1", "ship-o-1").await.unwrap());
    assert!(orders.scheduled("o-1").await.unwrap().is_empty());

    // The blocking handle sees the same machine.
    assert_eq!(orders.blocking().get("o-1").unwrap().unwrap().version, 3);
}

#[tokio::test]
async fn named_async_handle_mirrors_the_named_one() {
    let engine = Engine::builder().timers(false).temporary().unwrap();
    let doors: NamedAsyncMachine = engine
        .register(
            MachineDef::new("door", "closed")
                .state("closed")
                .terminal_state("open")
                .transition("closed", "open", "open"),
        )
        .unwrap()
        .into();
    assert_eq!(doors.definition().name, "door");
    assert!(doors.create("front").await.unwrap().applied);
    let keyed = Create::new().key("new-back").scope("tenant-a");
    assert!(
        !doors
            .create_request("back", keyed.clone())
            .await
            .unwrap()
            .replay
    );
    assert!(doors.create_request("back", keyed).await.unwrap().replay);
    doors
        .create_with("side", None, Some("bob".into()))
        .await
        .unwrap();
    let open = NamedRequest::fire("open").key("k-1");
    assert_eq!(doors.apply("front", open.clone()).await.unwrap().version, 2);
    assert!(doors.apply("front", open).await.unwrap().replay);
    assert!(matches!(
        doors.apply("front", NamedRequest::to("nowhere")).await,
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(doors.get("front").await.unwrap().unwrap().state, "open");
    assert_eq!(doors.history("front").await.unwrap().len(), 2);
    assert_eq!(
        doors.in_state("closed", None, 10).await.unwrap(),
        vec!["back".to_owned(), "side".to_owned()]
    );
    assert_eq!(
        doors.count_by_state().await.unwrap(),
        vec![("closed".to_owned(), 2), ("open".to_owned(), 1)]
    );
    let timer = doors
        .schedule(
            "back",
            Duration::from_secs(5),
            NamedRequest::fire("open").key("later"),
        )
        .await
        .unwrap();
    assert_eq!(timer.id, "back");
    assert_eq!(doors.scheduled("back").await.unwrap().len(), 1);
    assert!(doors.cancel_scheduled("back", "later").await.unwrap());
    assert_eq!(doors.blocking().key_count().unwrap(), 2);

    // The typed handle's named view is the same machine.
    let typed = engine.machine_async::<OrderState>().await.unwrap();
    typed.create("o-1").await.unwrap();
    assert_eq!(typed.named().get("o-1").await.unwrap().unwrap().version, 1);
}

/// A gate a guard waits at: the test decides when the request may go on.
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, bool)>, // (entered, open)
    moved: Condvar,
}

impl Gate {
    fn enter_and_wait(&self) {
        let mut state = self.state.lock().unwrap();
        state.0 = true;
        self.moved.notify_all();
        let _ = self
            .moved
            .wait_timeout_while(state, Duration::from_secs(10), |(_, open)| !*open)
            .unwrap();
    }

    fn wait_entered(&self) {
        let state = self.state.lock().unwrap();
        let (state, _) = self
            .moved
            .wait_timeout_while(state, Duration::from_secs(10), |(entered, _)| !*entered)
            .unwrap();
        assert!(state.0, "the request never reached its guard");
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.moved.notify_all();
    }
}

/// Polls a future once.
struct PollOnce<'a, F>(Pin<&'a mut F>);

impl<F: Future> Future for PollOnce<'_, F> {
    type Output = Poll<F::Output>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(self.0.as_mut().poll(context))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_future_does_not_cancel_its_commit() {
    let engine = Engine::temporary().unwrap();
    let orders = engine.machine_async::<OrderState>().await.unwrap();
    let gate = Arc::new(Gate::default());
    let at_guard = gate.clone();
    orders.blocking().guard_to(OrderState::Paid, move |_| {
        at_guard.enter_and_wait();
        Ok(())
    });
    orders.create("o-1").await.unwrap();
    orders.fire("o-1", OrderEvent::Submit).await.unwrap();

    let pay = Request::to(OrderState::Paid)
        .key("pay-o-1")
        .payload(json!({"amount": 4200}));
    {
        let future = orders.apply("o-1", pay.clone());
        let mut future = std::pin::pin!(future);
        // Started: the request is on the blocking pool, held at its guard.
        assert!(PollOnce(future.as_mut()).await.is_pending());
        let waiting = gate.clone();
        tokio::task::spawn_blocking(move || waiting.wait_entered())
            .await
            .unwrap();
        // The caller gives up (a timeout, a client gone): the future is dropped here.
    }
    gate.open();
    // The request still commits.
    let mut version = 0;
    for _ in 0..500 {
        version = orders.get("o-1").await.unwrap().unwrap().version;
        if version == 3 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(10)))
            .await
            .unwrap();
    }
    assert_eq!(version, 3, "the dropped request was not committed");
    // The safe way on: the same request, the same key. It replays.
    let retry = orders.apply("o-1", pay).await.unwrap();
    assert!(retry.is_replay());
    assert_eq!((retry.state(), retry.version()), (OrderState::Paid, 3));
    assert_eq!(orders.history("o-1").await.unwrap().len(), 3);
}
