//! The relay publishes the event log to a real Kafka-protocol broker: every event exactly
//! once, in each aggregate's order, with the contract's envelope and headers; a broker
//! outage delays delivery without refusing commands; and a broker that speaks only TLS is
//! reached as the operator's `KAFKA_CLIENT_PROPERTIES_FILE` says, and only if trusted.

use std::time::{Duration, Instant};

use parking_tests::kafka::{
    assert_published_exactly_once, published_count, read_all, read_all_with, read_exactly, Broker,
    TlsBroker,
};
use parking_tests::{
    assert_read_models_equal_a_rebuild, hours_from_now, spawn_app_with, ServerProcess, TestApp,
};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

/// Waits until the relay's checkpoint has reached the head of the log.
async fn relayed(app: &TestApp, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (checkpoint, head): (Option<i64>, i64) = sqlx::query_as(
            "SELECT (SELECT position FROM log_checkpoints WHERE consumer = 'relay:kafka'),
                    (SELECT position FROM event_log_head)",
        )
        .fetch_one(&app.db)
        .await
        .unwrap();
        if checkpoint == Some(head) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "relay at {checkpoint:?}, log at {head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A driver with a slot of their own, so that drivers never compete.
struct Driver {
    token: String,
    slot_id: Uuid,
}

async fn drivers(app: &TestApp, clients: usize) -> Vec<Driver> {
    let fx = app.lot_with_slot().await;
    let mut drivers = Vec::new();
    for i in 0..clients {
        let slot = app
            .post(
                &format!("/api/v1/lots/{}/slots", fx.lot_id),
                Some(&fx.owner_token),
                json!({"label": format!("W{i}"), "slot_type": "standard"}),
            )
            .await;
        assert_eq!(slot.status, StatusCode::CREATED, "{slot:?}");
        let (token, _) = app.signed_in("user").await;
        drivers.push(Driver {
            token,
            slot_id: slot.id(),
        });
    }
    drivers
}

/// Each driver issues `per_client` commands, all drivers at once: bookings of consecutive
/// hours from `from_hour`, and every fifth command cancels the booking before it. Requests
/// that fail (a server killed under them) are counted, not fatal; returns the successes.
async fn drive(address: &str, drivers: &[Driver], per_client: usize, from_hour: i64) -> usize {
    let client = reqwest::Client::new();
    let runs = drivers.iter().map(|driver| {
        let client = client.clone();
        async move {
            let mut succeeded = 0;
            let mut last: Option<String> = None;
            for i in 0..per_client as i64 {
                let request = match last.take() {
                    Some(booking) if i % 5 == 4 => client
                        .post(format!("{address}/api/v1/bookings/{booking}/cancel"))
                        .json(&json!({})),
                    _ => {
                        let hour = from_hour + i;
                        client
                            .post(format!("{address}/api/v1/bookings"))
                            .json(&json!({
                                "slot_id": driver.slot_id,
                                "start_time": hours_from_now(hour),
                                "end_time": hours_from_now(hour + 1),
                                "vehicle_number": "AB-123-CD",
                            }))
                    }
                };
                let Ok(response) = request.bearer_auth(&driver.token).send().await else {
                    continue;
                };
                if response.status().is_success() {
                    succeeded += 1;
                    let body: serde_json::Value = response.json().await.unwrap_or_default();
                    if let Some(id) = body["id"].as_str() {
                        last = Some(id.to_owned());
                    }
                }
            }
            succeeded
        }
    });
    futures::future::join_all(runs).await.into_iter().sum()
}

/// Waits until every projection has applied the whole log.
async fn projected(app: &TestApp, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM log_checkpoints
              WHERE consumer LIKE 'projection:%'
                AND position < (SELECT position FROM event_log_head)",
        )
        .fetch_one(&app.db)
        .await
        .unwrap();
        if behind == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{behind} projections behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn commands_per_run() -> usize {
    std::env::var("RELAY_TEST_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

#[tokio::test]
async fn every_event_reaches_kafka_once_in_order_with_the_contract() {
    let broker = Broker::start().await;
    let app = spawn_app_with(&[("KAFKA_BROKERS", &broker.address())]).await;
    let clients = 16;
    let drivers = drivers(&app, clients).await;
    let per_client = commands_per_run() / clients;
    let done = drive(&app.address, &drivers, per_client, 0).await;
    assert_eq!(done, per_client * clients, "every command accepted");

    relayed(&app, Duration::from_secs(120)).await;
    let expected = published_count(&app.db).await;
    // Nothing more trickles in after them: exactly once, not at least once.
    let received = read_exactly(&broker.address(), expected, Duration::from_secs(60)).await;
    assert_eq!(received.len(), expected);
    assert_published_exactly_once(&app.db, &received).await;
}

#[tokio::test]
async fn commands_are_accepted_while_the_broker_is_down_and_delivered_after() {
    let mut broker = Broker::start().await;
    // The test broker forgets its topics when it stops. A librdkafka consumer group subscribed
    // to a topic that vanishes and comes back can crash the process (docs/operations.md,
    // "Observations from Kafka"), so this deployment reads observations over HTTP only.
    let app = spawn_app_with(&[
        ("KAFKA_BROKERS", &broker.address()),
        ("OBSERVATIONS_FROM_KAFKA", "false"),
    ])
    .await;
    let fx = app.lot_with_slot().await;
    relayed(&app, Duration::from_secs(30)).await;

    broker.stop();
    let (driver, _) = app.signed_in("user").await;
    let mut bookings = Vec::new();
    for hour in 0..5 {
        let booked = app.booked_hour(&driver, fx.slot_id, hour).await;
        bookings.push(booked.id().to_string());
    }
    // Nothing can have been delivered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let checkpoint: i64 =
        sqlx::query_scalar("SELECT position FROM log_checkpoints WHERE consumer = 'relay:kafka'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let head: i64 = sqlx::query_scalar("SELECT position FROM event_log_head")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(checkpoint < head, "relayed to a stopped broker?");

    // The broker comes back empty (in-memory storage): the relay re-creates the topics and
    // delivers everything recorded since its checkpoint.
    broker.resume().await;
    relayed(&app, Duration::from_secs(60)).await;
    let published_since: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE global_position > $1
            AND aggregate_type IN ('lot', 'slot', 'booking', 'payment', 'review', 'user')",
    )
    .bind(checkpoint)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let received = read_all(
        &broker.address(),
        published_since as usize,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(received.len(), published_since as usize);
    let mut ids: Vec<uuid::Uuid> = received.iter().map(|r| r.envelope.event_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), received.len(), "duplicates after the outage");
    for booking in &bookings {
        assert!(
            received.iter().any(|r| &r.envelope.aggregate_id == booking
                && r.envelope.event_type == "BookingCreated"),
            "booking {booking} not delivered"
        );
    }
}

/// A broker, a fresh database, and `parking-api serve` run as a process against both, so that
/// a test can kill it.
struct Deployment {
    broker: Broker,
    database_url: String,
}

impl Deployment {
    async fn new() -> Self {
        Self {
            broker: Broker::start().await,
            database_url: parking_tests::fresh_database().await,
        }
    }

    async fn serve(&self) -> ServerProcess {
        let brokers = self.broker.address();
        ServerProcess::start(&self.database_url, &[("KAFKA_BROKERS", &brokers)]).await
    }
}

#[tokio::test]
async fn a_server_killed_mid_run_loses_and_duplicates_nothing() {
    let deployment = Deployment::new().await;
    let server = deployment.serve().await;
    let app = TestApp::connect(server.address.clone(), deployment.database_url.clone()).await;
    let drivers = std::sync::Arc::new(drivers(&app, 8).await);

    // Commands in full flow when the process dies: no shutdown, no flush, nothing.
    let run = {
        let (address, drivers) = (server.address.clone(), drivers.clone());
        tokio::spawn(async move { drive(&address, &drivers, 200, 0).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    let before_kill = run.await.unwrap();
    assert!(before_kill > 0, "the kill came before any work");

    let server = deployment.serve().await;
    let after_restart = drive(&server.address, &drivers, 20, 1000).await;
    assert_eq!(
        after_restart,
        20 * drivers.len(),
        "the restarted server works"
    );

    relayed(&app, Duration::from_secs(60)).await;
    projected(&app, Duration::from_secs(60)).await;
    let expected = published_count(&app.db).await;
    let received = read_exactly(
        &deployment.broker.address(),
        expected,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(received.len(), expected, "duplicates on Kafka");
    assert_published_exactly_once(&app.db, &received).await;

    // Every read model equals a rebuild from the history.
    assert_read_models_equal_a_rebuild(&app.db).await;
}

#[tokio::test]
async fn a_relay_that_lost_its_checkpoint_sends_nothing_twice() {
    // The crash window made certain: every event acknowledged by Kafka, the checkpoint not
    // moved (here: moved back to the beginning while the server was down).
    let deployment = Deployment::new().await;
    let server = deployment.serve().await;
    let app = TestApp::connect(server.address.clone(), deployment.database_url.clone()).await;
    let drivers = drivers(&app, 4).await;
    drive(&server.address, &drivers, 10, 0).await;
    relayed(&app, Duration::from_secs(30)).await;
    server.kill();
    sqlx::query("UPDATE log_checkpoints SET position = 0 WHERE consumer = 'relay:kafka'")
        .execute(&app.db)
        .await
        .unwrap();

    let server = deployment.serve().await;
    drive(&server.address, &drivers, 5, 100).await;
    relayed(&app, Duration::from_secs(30)).await;
    let expected = published_count(&app.db).await;
    let received = read_all(
        &deployment.broker.address(),
        expected + 1,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(received.len(), expected, "sent again after the restart");
    assert_published_exactly_once(&app.db, &received).await;
}

#[tokio::test]
async fn projections_fed_from_kafka_equal_a_rebuild_from_the_store() {
    let mut broker = Broker::start().await;
    let app = spawn_app_with(&[
        ("KAFKA_BROKERS", &broker.address()),
        ("PROJECTION_SOURCE", "kafka"),
        ("READ_WAIT_MS", "1000"),
        // The broker is stopped below (see the test above).
        ("OBSERVATIONS_FROM_KAFKA", "false"),
    ])
    .await;
    // The read models now learn of every write through the relay and the broker: sign-ups
    // (whose e-mail claims are never published), lots and slots answer from them, and every
    // later read of the drivers waits for their bookings (`X-Min-Position`).
    let clients = 4;
    let drivers = drivers(&app, clients).await;
    let done = drive(&app.address, &drivers, 20, 0).await;
    assert_eq!(done, 20 * clients);
    let head: i64 = sqlx::query_scalar("SELECT position FROM event_log_head")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let lot = app.get_at("/api/v1/lots?per_page=1", None, head).await;
    assert_eq!(lot.status, StatusCode::OK, "{lot:?}");

    assert_read_models_equal_a_rebuild(&app.db).await;

    // They really do depend on the broker (the reason `store` is the default, ADR 0012): with
    // it gone, a write is still recorded and answered, but a read that asks to see it cannot
    // be answered in time.
    broker.stop();
    let (token, slot_id) = (&drivers[0].token, drivers[0].slot_id);
    let late = app
        .book(token, slot_id, hours_from_now(500), hours_from_now(501))
        .await;
    assert_eq!(late.status, StatusCode::CREATED, "{late:?}");
    let position = late.position().expect("X-Event-Position");
    let path = format!("/api/v1/bookings/{}", late.id());
    app.get_at(&path, Some(token), position)
        .await
        .assert_problem(503, "read_model_lagging");
}

#[tokio::test]
async fn two_nodes_share_the_projections_and_one_relay() {
    let broker = Broker::start().await;
    let kafka = [("KAFKA_BROKERS", broker.address())];
    let kafka: Vec<(&'static str, &str)> = kafka.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = spawn_app_with(&kafka).await;
    let second = parking_tests::spawn_second_node(&first, &kafka).await;
    let drivers = drivers(&first, 8).await;
    // Both nodes take writes at once; each runs every projection and a relay.
    let (a, b) = tokio::join!(
        drive(&first.address, &drivers[..4], 20, 0),
        drive(&second.address, &drivers[4..], 20, 0),
    );
    assert_eq!(a + b, 8 * 20);

    relayed(&first, Duration::from_secs(60)).await;
    projected(&first, Duration::from_secs(60)).await;
    let expected = published_count(&first.db).await;
    let received = read_exactly(&broker.address(), expected, Duration::from_secs(60)).await;
    assert_eq!(
        received.len(),
        expected,
        "one relay at a time: nothing twice"
    );
    assert_published_exactly_once(&first.db, &received).await;
    assert_read_models_equal_a_rebuild(&first.db).await;
}

/// An app whose relay reaches `broker` as its properties file says (trusting its certificate or
/// not), after a lot, a slot and a booking were made on it.
async fn app_that_booked_with(broker: &TlsBroker, trusted: bool) -> TestApp {
    let file = broker.properties_file(trusted);
    let app = spawn_app_with(&[
        ("KAFKA_BROKERS", &broker.address()),
        ("KAFKA_CLIENT_PROPERTIES_FILE", file.to_str().unwrap()),
    ])
    .await;
    // Commands do not depend on the broker.
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    app.booked_hour(&driver, fx.slot_id, 1).await;
    app
}

#[tokio::test]
async fn the_relay_reaches_a_tls_broker_as_the_client_properties_file_says() {
    let broker = TlsBroker::start().await;
    let app = app_that_booked_with(&broker, true).await;

    relayed(&app, Duration::from_secs(30)).await;
    let expected = published_count(&app.db).await;
    let received = read_all_with(
        &broker.address(),
        &broker.client_properties(true),
        expected,
        Duration::from_secs(30),
    )
    .await;
    assert_published_exactly_once(&app.db, &received).await;
}

#[tokio::test]
async fn a_tls_broker_whose_certificate_is_not_trusted_gets_nothing() {
    let broker = TlsBroker::start().await;
    // TLS, but without the broker's certificate among the trusted ones.
    let app = app_that_booked_with(&broker, false).await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    let checkpoint: Option<i64> =
        sqlx::query_scalar("SELECT position FROM log_checkpoints WHERE consumer = 'relay:kafka'")
            .fetch_optional(&app.db)
            .await
            .unwrap();
    assert!(
        checkpoint.unwrap_or(0) == 0,
        "the relay published to an untrusted broker (checkpoint {checkpoint:?})"
    );
    let received = read_all_with(
        &broker.address(),
        &broker.client_properties(true),
        1,
        Duration::from_secs(2),
    )
    .await;
    assert!(received.is_empty(), "{} events reached it", received.len());
}
