//! Cameras of a lot, occupancy observations and live slot status, end to end.

use chrono::{Duration, Utc};
use parking_tests::{fresh_database, spawn_app, Reply, ServerProcess, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

const SQUARE: [[f64; 2]; 4] = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.5], [0.1, 0.5]];
const STREAM: &str = "rtsp://viewer:hunter2-secret@10.0.0.5:554/stream1";

fn camera(slot_id: Uuid, polygon: &[[f64; 2]]) -> Value {
    json!({"stream_url": STREAM, "slots": [{"slot_id": slot_id, "polygon": polygon}]})
}

async fn put(app: &TestApp, token: &str, lot_id: Uuid, camera_id: Uuid, body: Value) -> Reply {
    let path = format!("/api/v1/lots/{lot_id}/cameras/{camera_id}");
    app.request(Method::PUT, &path, Some(token), Some(body))
        .await
}

async fn observe(
    app: &TestApp,
    token: &str,
    slot_id: Uuid,
    occupied: bool,
    at: chrono::DateTime<Utc>,
) -> Reply {
    let body = json!({"occupied": occupied, "confidence": 0.93, "observed_at": at});
    app.post(
        &format!("/api/v1/slots/{slot_id}/occupancy"),
        Some(token),
        body,
    )
    .await
}

async fn slot_status(app: &TestApp, lot_id: Uuid) -> String {
    let slots = app.get(&format!("/api/v1/lots/{lot_id}/slots"), None).await;
    slots.body["items"][0]["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn available(app: &TestApp, lot_id: Uuid) -> i64 {
    let lot = app.get(&format!("/api/v1/lots/{lot_id}"), None).await;
    lot.body["available_slots"].as_i64().unwrap()
}

async fn count(app: &TestApp, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn cameras_are_checked_and_their_credentials_shown_only_to_those_who_run_them() {
    let database_url = fresh_database().await;
    let server = ServerProcess::start(&database_url, &[("RUST_LOG", "debug")]).await;
    let app = TestApp::connect(server.address.clone(), database_url).await;
    let fx = app.lot_with_slot().await;
    let other = app.lot_with_slot().await;
    let camera_id = Uuid::new_v4();

    let configured = put(
        &app,
        &fx.owner_token,
        fx.lot_id,
        camera_id,
        camera(fx.slot_id, &SQUARE),
    )
    .await;
    assert_eq!(configured.status, StatusCode::OK, "{configured:?}");
    assert_eq!(configured.body["stream_url"], STREAM);
    assert_eq!(configured.body["slots"][0]["polygon"], json!(SQUARE));
    let again = put(
        &app,
        &fx.owner_token,
        fx.lot_id,
        camera_id,
        camera(fx.slot_id, &SQUARE),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        count(&app, "CameraConfigured").await,
        1,
        "the same configuration records nothing"
    );

    let two_points = camera(fx.slot_id, &SQUARE[..2]);
    put(&app, &fx.owner_token, fx.lot_id, camera_id, two_points)
        .await
        .assert_problem(422, "invalid_polygon");
    let bow_tie = camera(
        fx.slot_id,
        &[[0.1, 0.1], [0.4, 0.4], [0.4, 0.1], [0.1, 0.4]],
    );
    put(&app, &fx.owner_token, fx.lot_id, camera_id, bow_tie)
        .await
        .assert_problem(422, "invalid_polygon");
    let foreign = camera(other.slot_id, &SQUARE);
    put(&app, &fx.owner_token, fx.lot_id, camera_id, foreign)
        .await
        .assert_problem(422, "slot_not_in_lot");
    let ftp = json!({"stream_url": "ftp://user:hunter2-secret@cam/x", "slots": []});
    let refused = put(&app, &fx.owner_token, fx.lot_id, camera_id, ftp).await;
    refused.assert_problem(422, "invalid_stream_url");
    assert!(!refused.body.to_string().contains("hunter2"), "{refused:?}");
    put(
        &app,
        &other.owner_token,
        fx.lot_id,
        camera_id,
        camera(fx.slot_id, &SQUARE),
    )
    .await
    .assert_problem(403, "forbidden");

    let (service, _) = app.service_account().await;
    let listed = app
        .get(
            &format!("/api/v1/lots/{}/cameras", fx.lot_id),
            Some(&service),
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    assert_eq!(listed.body["total"], 1);
    assert_eq!(listed.body["items"][0]["stream_url"], STREAM);
    let (driver, _) = app.signed_in("user").await;
    let hidden = app
        .get(
            &format!("/api/v1/lots/{}/cameras", fx.lot_id),
            Some(&driver),
        )
        .await;
    hidden.assert_problem(403, "forbidden");
    assert!(!hidden.body.to_string().contains("hunter2"));

    let path = format!("/api/v1/lots/{}/cameras/{camera_id}", fx.lot_id);
    let removed = app
        .request(Method::DELETE, &path, Some(&fx.owner_token), None)
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{removed:?}");
    app.request(Method::DELETE, &path, Some(&fx.owner_token), None)
        .await
        .assert_problem(404, "camera_not_found");

    // Debug-level logs of every request above: the credentials are in none of them.
    let log = server.log();
    assert!(
        log.contains("cameras"),
        "the server logged its requests: {log}"
    );
    assert!(
        !log.contains("hunter2"),
        "credentials in the server's log:\n{log}"
    );
}

#[tokio::test]
async fn an_observation_flips_the_slot_and_the_lots_availability_and_only_changes_are_recorded() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (service, _) = app.service_account().await;
    let now = Utc::now();
    assert_eq!(slot_status(&app, fx.lot_id).await, "free");
    assert_eq!(available(&app, fx.lot_id).await, 1);

    let seen = observe(&app, &service, fx.slot_id, true, now).await;
    assert_eq!(seen.status, StatusCode::OK, "{seen:?}");
    assert_eq!(seen.body["recorded"], true);
    assert_eq!(slot_status(&app, fx.lot_id).await, "occupied");
    assert_eq!(available(&app, fx.lot_id).await, 0);
    let slot = app
        .get(&format!("/api/v1/lots/{}/slots", fx.lot_id), None)
        .await;
    assert_eq!(slot.body["items"][0]["occupied"], true);
    // The slot is not free for a range that has begun, as its status says.
    let from = (now - Duration::seconds(30)).to_rfc3339();
    let to = (now + Duration::hours(1)).to_rfc3339();
    let availability = app
        .get(
            &format!(
                "/api/v1/lots/{}/availability?from={}&to={}",
                fx.lot_id,
                urlencode(&from),
                urlencode(&to)
            ),
            None,
        )
        .await;
    assert_eq!(availability.body["available"], 0, "{availability:?}");
    // Nor can it be booked from now; from later on it can.
    let (driver, _) = app.signed_in("user").await;
    let now_on = app
        .book(&driver, fx.slot_id, Utc::now(), now + Duration::hours(1))
        .await;
    now_on.assert_problem(409, "slot_occupied");
    let later = app
        .book(
            &driver,
            fx.slot_id,
            now + Duration::hours(2),
            now + Duration::hours(3),
        )
        .await;
    assert_eq!(later.status, StatusCode::CREATED, "{later:?}");

    // The same state again, and an older frame saying otherwise: nothing recorded.
    let repeated = observe(&app, &service, fx.slot_id, true, now + Duration::seconds(1)).await;
    assert_eq!(repeated.body["recorded"], false);
    let late = observe(
        &app,
        &service,
        fx.slot_id,
        false,
        now - Duration::seconds(5),
    )
    .await;
    assert_eq!(late.body["recorded"], false);
    assert_eq!(count(&app, "SlotOccupancyObserved").await, 1);
    assert_eq!(slot_status(&app, fx.lot_id).await, "occupied");

    let left = observe(
        &app,
        &service,
        fx.slot_id,
        false,
        now + Duration::seconds(2),
    )
    .await;
    assert_eq!(left.body["recorded"], true);
    assert_eq!(slot_status(&app, fx.lot_id).await, "free");
    assert_eq!(available(&app, fx.lot_id).await, 1);
}

#[tokio::test]
async fn only_the_vision_service_or_an_admin_reports_occupancy() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    let now = Utc::now();
    observe(&app, &driver, fx.slot_id, true, now)
        .await
        .assert_problem(403, "forbidden");
    observe(&app, &fx.owner_token, fx.slot_id, true, now)
        .await
        .assert_problem(403, "forbidden");
    let (admin, _) = app.admin().await;
    assert_eq!(
        observe(&app, &admin, fx.slot_id, true, now).await.body["recorded"],
        true
    );

    let (service, _) = app.service_account().await;
    let future = observe(
        &app,
        &service,
        fx.slot_id,
        false,
        now + Duration::minutes(5),
    )
    .await;
    future.assert_problem(422, "observed_in_future");
    let body = json!({"occupied": true, "confidence": 1.5, "observed_at": now});
    let unsure = app
        .post(
            &format!("/api/v1/slots/{}/occupancy", fx.slot_id),
            Some(&service),
            body,
        )
        .await;
    unsure.assert_problem(422, "invalid_confidence");
    observe(&app, &service, Uuid::new_v4(), true, now)
        .await
        .assert_problem(404, "slot_not_found");
    assert_eq!(count(&app, "SlotOccupancyObserved").await, 1);
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

/// Polls the lot's only slot until it shows `status` (up to 20 s): observations from Kafka
/// carry no position for the test to wait on.
async fn until_status(app: &TestApp, lot_id: Uuid, status: &str) {
    for _ in 0..200 {
        if slot_status(app, lot_id).await == status {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the slot never became {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observations_from_kafka_apply_once_and_a_malformed_one_is_skipped() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::ClientConfig;

    let broker = parking_tests::kafka::Broker::start().await;
    let app = parking_tests::spawn_app_with(&[("KAFKA_BROKERS", &broker.address())]).await;
    let fx = app.lot_with_slot().await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    let key = fx.slot_id.to_string();
    let send = |value: String| {
        let (producer, key) = (&producer, key.clone());
        async move {
            let record = FutureRecord::to("parking.vision.observations")
                .key(&key)
                .payload(&value);
            producer
                .send(record, std::time::Duration::from_secs(30))
                .await
                .expect("delivered to the broker");
        }
    };
    let now = Utc::now();
    let observation = |occupied: bool, at: chrono::DateTime<Utc>| {
        json!({
            "observation_id": Uuid::new_v4(), "slot_id": fx.slot_id, "occupied": occupied,
            "confidence": 0.97, "camera_id": null, "observed_at": at,
        })
        .to_string()
    };

    let arrived = observation(true, now);
    send(arrived.clone()).await;
    until_status(&app, fx.lot_id, "occupied").await;

    // Delivered again, then garbage, then a departure: the garbage is skipped, the departure
    // still applies, and the repeat records nothing.
    send(arrived).await;
    send("{\"not\": \"an observation\"".to_owned()).await;
    send(observation(false, now + Duration::seconds(3))).await;
    until_status(&app, fx.lot_id, "free").await;
    assert_eq!(count(&app, "SlotOccupancyObserved").await, 2);
    let metadata: Value = sqlx::query_scalar(
        "SELECT metadata::jsonb FROM events WHERE event_type = 'SlotOccupancyObserved' LIMIT 1",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(metadata["role"], "service");
    assert!(metadata["request_id"]
        .as_str()
        .unwrap()
        .starts_with("vision-"));
}
