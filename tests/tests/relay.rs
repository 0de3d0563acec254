//! The relay publishes the event log to a real Kafka-protocol broker: every event exactly
//! once, in each aggregate's order, with the contract's envelope and headers; and a broker
//! outage delays delivery without refusing commands.

use std::time::{Duration, Instant};

use parking_tests::kafka::{assert_published_exactly_once, read_all, Broker};
use parking_tests::{hours_from_now, spawn_app_with, TestApp};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

/// Published events in the store (those of the contract's aggregates).
async fn published_count(app: &TestApp) -> usize {
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE aggregate_type IN ('lot', 'slot', 'booking', 'payment', 'review', 'user')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    count as usize
}

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

/// `clients` drivers, each with a slot of its own, issue `per_client` commands each,
/// concurrently: bookings, and every fifth command cancels the booking before it.
async fn workload(app: &TestApp, clients: usize, per_client: usize) {
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
        drivers.push((token, slot.id()));
    }
    let runs = drivers.into_iter().map(|(token, slot_id)| async move {
        let mut last: Option<Uuid> = None;
        for i in 0..per_client as i64 {
            let reply = match last.take() {
                Some(booking) if i % 5 == 4 => {
                    let path = format!("/api/v1/bookings/{booking}/cancel");
                    app.post(&path, Some(&token), json!({})).await
                }
                _ => {
                    let reply = app
                        .book(&token, slot_id, hours_from_now(i), hours_from_now(i + 1))
                        .await;
                    last = Some(reply.id());
                    reply
                }
            };
            assert!(reply.status.is_success(), "{reply:?}");
        }
    });
    futures::future::join_all(runs).await;
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
    workload(&app, clients, commands_per_run() / clients).await;

    relayed(&app, Duration::from_secs(120)).await;
    let expected = published_count(&app).await;
    let received = read_all(&broker.address(), expected, Duration::from_secs(60)).await;
    assert_eq!(received.len(), expected);
    assert_published_exactly_once(&app.db, &received).await;
    // Nothing more trickles in: exactly once, not at least once.
    let again = read_all(&broker.address(), expected + 1, Duration::from_secs(2)).await;
    assert_eq!(again.len(), expected);
}

#[tokio::test]
async fn commands_are_accepted_while_the_broker_is_down_and_delivered_after() {
    let mut broker = Broker::start().await;
    let app = spawn_app_with(&[("KAFKA_BROKERS", &broker.address())]).await;
    let fx = app.lot_with_slot().await;
    relayed(&app, Duration::from_secs(30)).await;

    broker.stop();
    let (driver, _) = app.signed_in("user").await;
    let mut bookings = Vec::new();
    for hour in 0..5 {
        let booked = app
            .book(
                &driver,
                fx.slot_id,
                hours_from_now(hour),
                hours_from_now(hour + 1),
            )
            .await;
        assert_eq!(booked.status, StatusCode::CREATED, "{booked:?}");
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
