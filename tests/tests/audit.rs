//! Auditors end to end: who may read the history; the log and a stream, complete, in order,
//! with their metadata; a booking's state at moments of its life against what the API showed
//! then; an export against what Kafka holds; and the hash chain catching an altered byte, an
//! altered hash and a deleted row at their positions.

use std::time::Duration;

use chrono::Utc;
use parking_infra::kafka::Envelope;
use parking_tests::history::{Place, Script};
use parking_tests::kafka::{published_count, read_all, Broker, Received};
use parking_tests::{parking_api, spawn_app, spawn_app_with, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// A driver's booking made and cancelled through the API: a small history of every kind of
/// actor. Returns the booking's id and the driver's.
async fn some_history(app: &TestApp) -> (Uuid, Uuid) {
    let fx = app.lot_with_slot().await;
    let (driver_token, driver) = app.signed_in("user").await;
    let booking = app.booked_hour(&driver_token, fx.slot_id, 30).await.id();
    let cancelled = app
        .post(
            &format!("/api/v1/bookings/{booking}/cancel"),
            Some(&driver_token),
            json!({"reason": "plans changed"}),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{cancelled:?}");
    (booking, driver)
}

async fn head(app: &TestApp) -> i64 {
    app.log.as_ref().unwrap().sequence().await.unwrap()
}

/// Every page of `/audit/events` (after `query`'s filters), `limit` at a time.
async fn all_pages(app: &TestApp, token: &str, query: &str, limit: i64) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = app
            .get(
                &format!("/api/v1/audit/events?after={after}&limit={limit}{query}"),
                Some(token),
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        let batch = page.body["events"].as_array().unwrap().clone();
        if batch.is_empty() {
            assert_eq!(page.body["next_after"], after);
            return events;
        }
        assert!(batch.len() as i64 <= limit);
        after = page.body["next_after"].as_i64().unwrap();
        assert_eq!(batch.last().unwrap()["global_position"], after);
        events.extend(batch);
    }
}

#[tokio::test]
async fn only_auditors_and_admins_read_the_history() {
    let app = spawn_app().await;
    let (booking, _) = some_history(&app).await;
    let (user, _) = app.signed_in("user").await;
    let (owner, _) = app.signed_in("parking_owner").await;
    let (auditor, _) = app.auditor().await;
    let (admin, _) = app.admin().await;
    let paths = [
        "/api/v1/audit/events".to_owned(),
        format!("/api/v1/audit/streams/booking/{booking}"),
        format!("/api/v1/audit/streams/booking/{booking}/state"),
        "/api/v1/audit/verify".to_owned(),
    ];
    for path in &paths {
        app.get(path, None)
            .await
            .assert_problem(401, "unauthenticated");
        for token in [&user, &owner] {
            app.get(path, Some(token))
                .await
                .assert_problem(403, "forbidden");
        }
        for token in [&auditor, &admin] {
            let read = app.get(path, Some(token)).await;
            assert_eq!(read.status, StatusCode::OK, "{path}: {read:?}");
        }
    }
    // An auditor reads everything and changes nothing.
    let other = app
        .get(&format!("/api/v1/bookings/{booking}"), Some(&auditor))
        .await;
    assert_eq!(other.status, StatusCode::OK, "{other:?}");
    let lot = app
        .post("/api/v1/lots", Some(&auditor), app.lot_body())
        .await;
    assert_eq!(lot.status, StatusCode::FORBIDDEN, "{lot:?}");
}

#[tokio::test]
async fn the_log_and_a_stream_come_back_complete_in_order_with_their_metadata() {
    let app = spawn_app().await;
    let (booking, driver) = some_history(&app).await;
    let (auditor, _) = app.auditor().await;
    let head = head(&app).await;

    // The whole log, page by page: every position once, in order, as the store holds it.
    let events = all_pages(&app, &auditor, "", 7).await;
    let positions: Vec<i64> = events
        .iter()
        .map(|e| e["global_position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, (1..=head).collect::<Vec<_>>());
    let stored: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence, event_type FROM events
          ORDER BY global_position",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let listed: Vec<(String, String, i64, String)> = events
        .iter()
        .map(|e| {
            (
                e["aggregate_type"].as_str().unwrap().to_owned(),
                e["aggregate_id"].as_str().unwrap().to_owned(),
                e["sequence"].as_i64().unwrap(),
                e["event_type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(listed, stored);
    // Secrets stay out: the credentials event is there, its hash is not.
    let credentials = events
        .iter()
        .find(|e| e["event_type"] == "UserCredentialsSet")
        .unwrap();
    assert_eq!(credentials["payload"], json!({}));
    assert!(!serde_json::to_string(&events).unwrap().contains("$2b$"));

    // Streamed as NDJSON: the same events.
    let ndjson = reqwest::Client::new()
        .get(format!("{}/api/v1/audit/events", app.address))
        .bearer_auth(&auditor)
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(ndjson.status(), StatusCode::OK);
    assert_eq!(ndjson.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = (ndjson.text().await.unwrap().lines())
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines, events);

    // Filtered by aggregate type, and by time.
    let bookings = all_pages(&app, &auditor, "&aggregate_type=booking", 100).await;
    assert_eq!(bookings.len(), 2);
    assert!(bookings.iter().all(|e| e["aggregate_type"] == "booking"));
    let cancelled_at = bookings[1]["recorded_at"].as_str().unwrap().to_owned();
    let from = all_pages(
        &app,
        &auditor,
        &format!("&from={}", urlencoding(&cancelled_at)),
        100,
    )
    .await;
    assert!(!from.is_empty() && from.len() < events.len());
    assert!(from
        .iter()
        .all(|e| e["recorded_at"].as_str().unwrap() >= cancelled_at.as_str()));
    let to = all_pages(
        &app,
        &auditor,
        &format!("&to={}", urlencoding(&cancelled_at)),
        100,
    )
    .await;
    assert_eq!(from.len() + to.len(), events.len());

    // One stream, whole, with who did what and when.
    let stream = app
        .get(
            &format!("/api/v1/audit/streams/booking/{booking}"),
            Some(&auditor),
        )
        .await;
    assert_eq!(stream.status, StatusCode::OK, "{stream:?}");
    let stream = stream.body["events"].as_array().unwrap().clone();
    let kinds: Vec<&str> = stream
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["BookingCreated", "BookingCancelled"]);
    for (i, event) in stream.iter().enumerate() {
        assert_eq!(event["sequence"], i as i64 + 1);
        let meta = &event["metadata"];
        assert_eq!(meta["user_id"], driver.to_string(), "{event}");
        assert_eq!(meta["role"], "user");
        for id in ["request_id", "correlation_id", "causation_id"] {
            assert!(!meta[id].as_str().unwrap_or("").is_empty(), "{id}: {event}");
        }
        assert!(event["recorded_at"].is_string());
    }
    assert_eq!(stream[1]["payload"]["reason"], "plans changed");

    // What is not there, or not asked right.
    let missing = app
        .get(
            &format!("/api/v1/audit/streams/booking/{}", Uuid::new_v4()),
            Some(&auditor),
        )
        .await;
    missing.assert_problem(404, "stream_not_found");
    let unknown = app
        .get("/api/v1/audit/streams/parcel/1", Some(&auditor))
        .await;
    unknown.assert_problem(404, "unknown_aggregate_type");
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=1001", "invalid_limit"),
        ("after=-1", "invalid_after"),
        ("aggregate_type=parcel", "unknown_aggregate_type"),
        (
            "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            "invalid_time_range",
        ),
    ] {
        let refused = app
            .get(&format!("/api/v1/audit/events?{query}"), Some(&auditor))
            .await;
        refused.assert_problem(422, code);
    }
    let malformed = app
        .get("/api/v1/audit/events?from=yesterday", Some(&auditor))
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST, "{malformed:?}");
}

fn urlencoding(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn a_bookings_state_at_three_moments_is_what_the_api_showed_then() {
    let app = spawn_app().await;
    let (admin, _) = app.admin().await;
    let (auditor, _) = app.auditor().await;
    let owner = Uuid::new_v4();
    let start = Utc::now() + chrono::Duration::hours(2);
    let mut s = Script::default();
    let lot = s.lot(Utc::now(), owner, "Audited lot", "UTC", "EUR");
    let slot = s.slot(Utc::now(), lot, "A1");
    let place = Place {
        lot_id: lot,
        owner_id: owner,
        slot_id: slot,
    };
    let booking = s.booking(
        Utc::now(),
        place,
        (start, start + chrono::Duration::hours(1)),
        (250, "EUR"),
    );

    // Each step recorded, then read through the API, then the instant noted.
    let mut moments = Vec::new();
    let seen = |position: i64| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let shown = app
                .get_at(
                    &format!("/api/v1/bookings/{booking}"),
                    Some(&admin),
                    position,
                )
                .await;
            assert_eq!(shown.status, StatusCode::OK, "{shown:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
            (shown.body, Utc::now())
        }
    };
    moments.push(seen(s.append(&app.db).await.unwrap()).await);
    s.paid(Utc::now(), booking, lot, (250, "EUR"));
    moments.push(seen(s.append(&app.db).await.unwrap()).await);
    s.add(
        "booking",
        booking,
        Utc::now(),
        json!({"BookingCheckedIn": {"by": Uuid::new_v4(), "at": Utc::now()}}),
    );
    moments.push(seen(s.append(&app.db).await.unwrap()).await);

    let statuses: Vec<&str> = moments
        .iter()
        .map(|(shown, _)| shown["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["pending", "confirmed", "active"]);
    for (sequence, (shown, at)) in [1, 2, 3].into_iter().zip(&moments) {
        let then = app
            .get(
                &format!(
                    "/api/v1/audit/streams/booking/{booking}/state?at={}",
                    urlencoding(&at.to_rfc3339())
                ),
                Some(&auditor),
            )
            .await;
        assert_eq!(then.status, StatusCode::OK, "{then:?}");
        assert_eq!(then.body["sequence"], sequence);
        let state = &then.body["state"]["state"];
        for field in ["status", "vehicle_number", "slot_id", "lot_id"] {
            assert_eq!(
                state[field], shown[field],
                "{field} at {at}: {state} vs {shown}"
            );
        }
        assert_eq!(
            state["price"]["minor"], shown["price_cents"],
            "{state} vs {shown}"
        );
    }
    // Before its first event the booking did not exist.
    let before = app
        .get(
            &format!("/api/v1/audit/streams/booking/{booking}/state?at=2020-01-01T00:00:00Z"),
            Some(&auditor),
        )
        .await;
    before.assert_problem(404, "stream_not_found");
    // Every aggregate type replays; secrets stay out of states.
    let (_, user) = app.signed_in("user").await;
    let user_state = app
        .get(
            &format!("/api/v1/audit/streams/user/{user}/state"),
            Some(&auditor),
        )
        .await;
    assert_eq!(user_state.status, StatusCode::OK, "{user_state:?}");
    assert!(user_state.body["state"].get("password_hash").is_none());
    assert_eq!(user_state.body["state"]["registered"]["role"], "user");
    let payment = parking_domain::payment::payment_id_for(booking);
    for (kind, id) in [("lot", lot), ("slot", slot), ("payment", payment)] {
        let state = app
            .get(
                &format!("/api/v1/audit/streams/{kind}/{id}/state"),
                Some(&auditor),
            )
            .await;
        assert_eq!(state.status, StatusCode::OK, "{kind}: {state:?}");
    }
    let payment_state = app
        .get(
            &format!("/api/v1/audit/streams/payment/{payment}/state"),
            Some(&auditor),
        )
        .await;
    assert!(payment_state.body["state"]["state"]
        .get("client_secret")
        .is_none());
}

#[tokio::test]
async fn an_export_of_a_range_equals_that_range_read_from_kafka() {
    let broker = Broker::start().await;
    let app = spawn_app_with(&[("KAFKA_BROKERS", &broker.address())]).await;
    some_history(&app).await;
    some_history(&app).await;
    let head = head(&app).await;
    let received = all_published(&app, &broker).await;

    let (after, up_to) = (head / 4, head * 3 / 4);
    let file = std::env::temp_dir().join(format!("export-{}.ndjson", Uuid::new_v4()));
    let export = parking_api()
        .args(["history", "export", "--after", &after.to_string()])
        .args(["--up-to", &up_to.to_string(), "--output"])
        .arg(&file)
        .env("DATABASE_URL", &app.database_url)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(export.status.success(), "{export:?}");
    let exported: Vec<Envelope> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let _ = std::fs::remove_file(&file);
    let positions: Vec<i64> = exported.iter().map(|e| e.global_position).collect();
    assert_eq!(positions, (after + 1..=up_to).collect::<Vec<_>>());

    // The published ones, field by field; the internal e-mail claims are the auditors' only.
    let from_kafka: std::collections::HashMap<i64, &Envelope> = received
        .iter()
        .map(|r| (r.envelope.global_position, &r.envelope))
        .collect();
    let mut compared = 0;
    for envelope in &exported {
        match from_kafka.get(&envelope.global_position) {
            Some(published) => {
                assert_eq!(*published, envelope);
                compared += 1;
            }
            None => assert_eq!(envelope.aggregate_type, "email_claim", "{envelope:?}"),
        }
    }
    assert!(compared > 0);
}

/// Every event of `app`'s store the relay publishes, read from `broker`: all of them arrive.
async fn all_published(app: &TestApp, broker: &Broker) -> Vec<Received> {
    let published = published_count(&app.db).await;
    let received = read_all(&broker.address(), published, Duration::from_secs(60)).await;
    assert_eq!(received.len(), published);
    received
}

/// `GET /audit/verify`'s report.
async fn verify(app: &TestApp, token: &str, full: bool) -> Value {
    let report = app
        .get(&format!("/api/v1/audit/verify?full={full}"), Some(token))
        .await;
    assert_eq!(report.status, StatusCode::OK, "{report:?}");
    report.body
}

#[tokio::test]
async fn verify_names_an_altered_byte_an_altered_hash_and_a_deleted_row() {
    let key = std::env::temp_dir().join(format!("data-{}.key", Uuid::new_v4()));
    std::fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    let app = spawn_app_with(&[("DATA_KEY_FILE", key.to_str().unwrap())]).await;
    some_history(&app).await;
    let (auditor, _) = app.auditor().await;

    // Intact; the first walk starts from the first event and leaves a checkpoint.
    let first = verify(&app, &auditor, false).await;
    assert_eq!(first["intact"], true, "{first}");
    assert_eq!(first["checkpoint"], "none");
    let checked = first["checked"].as_i64().unwrap();
    assert_eq!(checked, first["head"]["position"].as_i64().unwrap());
    // A row inserted by hand is chained when it is numbered.
    some_history(&app).await;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('lot', $1, 1, 'LotNoted', '1', '{\"LotNoted\": {}}', '{}')",
    )
    .bind(Uuid::new_v4().to_string())
    .execute(&app.db)
    .await
    .unwrap();
    let head = head(&app).await;
    let second = verify(&app, &auditor, false).await;
    assert_eq!(second["intact"], true, "{second}");
    assert_eq!(second["checkpoint"], "resumed");
    assert_eq!(second["from_position"], checked);
    assert_eq!(second["checked"], head - checked);

    // One byte of one payload: named at its position, as the content.
    let (position, kind, id): (i64, String, String) = sqlx::query_as(
        "SELECT global_position, aggregate_type, aggregate_id FROM events
          WHERE payload::text LIKE '%Central Garage%' ORDER BY global_position LIMIT 1",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    let alter = |from: &'static str, to: &'static str| {
        sqlx::query(
            "UPDATE events SET payload = replace(payload::text, $1, $2)::json
              WHERE global_position = $3",
        )
        .bind(from)
        .bind(to)
        .bind(position)
    };
    alter("Central Garage", "Dentral Garage")
        .execute(&app.db)
        .await
        .unwrap();
    let broken = verify(&app, &auditor, true).await;
    assert_eq!(broken["intact"], false, "{broken}");
    assert_eq!(broken["checkpoint"], "full");
    let link = &broken["broken"];
    assert_eq!(link["position"], position, "{broken}");
    assert_eq!(link["problem"], "content_altered");
    assert_eq!(link["aggregate_type"], kind.as_str());
    assert_eq!(link["aggregate_id"], id.as_str());
    assert_ne!(link["recorded_hash"], link["computed_hash"]);
    // The command line finds it too, and says so with its exit status.
    let cli = parking_api()
        .args(["history", "verify", "--full"])
        .env("DATABASE_URL", &app.database_url)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(1), "{cli:?}");
    let report: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(report["broken"]["position"], position);
    alter("Dentral Garage", "Central Garage")
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(verify(&app, &auditor, true).await["intact"], true);

    // The hash a row carries.
    let later = position + 2;
    sqlx::query("UPDATE events SET hash = sha256(hash) WHERE global_position = $1")
        .bind(later)
        .execute(&app.db)
        .await
        .unwrap();
    let broken = verify(&app, &auditor, true).await;
    assert_eq!(broken["broken"]["position"], later, "{broken}");
    assert_eq!(broken["broken"]["problem"], "hash_altered");

    // A deleted row.
    let deleted = position + 4;
    sqlx::query("DELETE FROM events WHERE global_position = $1")
        .bind(deleted)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE events SET hash = parking_event_hash(
                    (SELECT hash FROM events WHERE global_position = $1 - 1), global_position,
                    aggregate_type, aggregate_id, sequence, event_type, event_version,
                    payload::text, metadata::text, recorded_at)
          WHERE global_position = $1",
    )
    .bind(later)
    .execute(&app.db)
    .await
    .unwrap();
    let broken = verify(&app, &auditor, true).await;
    assert_eq!(broken["broken"]["position"], deleted, "{broken}");
    assert_eq!(broken["broken"]["problem"], "missing");

    // A checkpoint written without the key is not trusted.
    sqlx::query(
        "INSERT INTO audit_checkpoints (position, hash, signature)
         SELECT position, hash, '\\x00' FROM event_log_head
         ON CONFLICT (position) DO UPDATE SET signature = EXCLUDED.signature",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let forged = verify(&app, &auditor, false).await;
    assert_eq!(forged["checkpoint"], "invalid", "{forged}");
    assert_eq!(forged["from_position"], 0);
    assert_eq!(forged["broken"]["position"], deleted);
    let _ = std::fs::remove_file(&key);
}

/// Whether `text` shows any of the person's data in clear.
fn shows(text: &str, secrets: &[&str]) -> Option<String> {
    secrets
        .iter()
        .find(|s| text.contains(*s))
        .map(|s| s.to_string())
}

#[tokio::test]
async fn an_erased_persons_data_reads_erased_everywhere_and_history_still_holds() {
    let broker = Broker::start().await;
    // Nothing is published until the erasure: the relay runs on a second node started after it.
    let app = spawn_app_with(&[
        ("KAFKA_BROKERS", &broker.address()),
        ("RELAY_ENABLED", "false"),
    ])
    .await;
    let fx = app.lot_with_slot().await;
    let email = format!("{}@example.com", Uuid::new_v4().simple());
    let full_name = "Ada Erasable";
    let plate = "ZQ-947-XK";
    let comment = "dark corner near the ramp";
    let registered = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": email, "password": parking_tests::PASSWORD,
                   "full_name": full_name, "role": "user"}),
        )
        .await;
    assert_eq!(registered.status, StatusCode::CREATED, "{registered:?}");
    let driver = registered.id();
    let token = app.login(&email, parking_tests::PASSWORD).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = parking_tests::hours_from_now(40);
    let booked = app
        .post(
            "/api/v1/bookings",
            Some(&token),
            json!({"slot_id": fx.slot_id, "start_time": start,
                   "end_time": start + chrono::Duration::hours(1), "vehicle_number": plate}),
        )
        .await;
    assert_eq!(booked.status, StatusCode::CREATED, "{booked:?}");
    assert_eq!(booked.body["vehicle_number"], plate);
    let booking = booked.id();
    let reviewed = app
        .post(
            &format!("/api/v1/lots/{}/reviews", fx.lot_id),
            Some(&token),
            json!({"safety_rating": 2, "lighting_rating": 1, "security_rating": 2,
                   "cleanliness_rating": 3, "comment": comment}),
        )
        .await;
    assert!(reviewed.status.is_success(), "{reviewed:?}");
    let secrets = [email.as_str(), full_name, plate, comment];

    // At rest the personal fields are sealed; read through the system they are clear.
    let stored: Vec<String> = sqlx::query_scalar("SELECT payload::text FROM events")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(shows(&stored.join("\n"), &secrets), None);
    let (auditor, _) = app.auditor().await;
    let stream = app
        .get(
            &format!("/api/v1/audit/streams/booking/{booking}"),
            Some(&auditor),
        )
        .await;
    assert_eq!(stream.body["events"][0]["payload"]["vehicle_number"], plate);

    // Only the person or an admin erases them.
    let (stranger, _) = app.signed_in("user").await;
    let path = format!("/api/v1/users/{driver}/erase");
    app.post(&path, Some(&stranger), json!({}))
        .await
        .assert_problem(403, "forbidden");
    let erased = app.post(&path, Some(&token), json!({})).await;
    assert_eq!(erased.status, StatusCode::OK, "{erased:?}");
    assert_eq!(erased.body["erased"], true);
    let again = app.post(&path, Some(&token), json!({})).await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "erasing twice is erasing once: {again:?}"
    );

    // They can no longer sign in, nor record anything; their address is free again.
    let login = app.login(&email, parking_tests::PASSWORD).await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED, "{login:?}");
    let more = app
        .post(
            "/api/v1/bookings",
            Some(&token),
            json!({"slot_id": fx.slot_id, "start_time": start + chrono::Duration::hours(2),
                   "end_time": start + chrono::Duration::hours(3), "vehicle_number": plate}),
        )
        .await;
    more.assert_problem(403, "user_erased");
    let me = app.get("/api/v1/auth/me", Some(&token)).await;
    assert_eq!(me.body["email"], "erased", "{me:?}");
    assert_eq!(me.body["full_name"], "erased");

    // Their booking still loads (an admin cancels it) and reads erased.
    let (admin, _) = app.admin().await;
    let cancelled = app
        .post(
            &format!("/api/v1/bookings/{booking}/cancel"),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{cancelled:?}");
    assert_eq!(cancelled.body["vehicle_number"], "erased");
    let state = app
        .get(
            &format!("/api/v1/audit/streams/booking/{booking}/state"),
            Some(&auditor),
        )
        .await;
    assert_eq!(
        state.body["state"]["state"]["vehicle_number"], "erased",
        "{state:?}"
    );
    let reviews = app
        .get(&format!("/api/v1/lots/{}/reviews", fx.lot_id), None)
        .await;
    assert_eq!(reviews.status, StatusCode::OK, "{reviews:?}");
    assert!(reviews.body.to_string().contains("erased"), "{reviews:?}");

    // Nowhere in clear: read models, snapshots, the audit log, an export, and what Kafka gets
    // from now on. A rebuild gives the same read models; the chain still verifies.
    let rows = parking_tests::read_model_rows(&app.db).await;
    assert_eq!(shows(&format!("{rows:?}"), &secrets), None);
    let snapshots: Vec<String> =
        sqlx::query_scalar("SELECT payload::text FROM aggregate_snapshots")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(shows(&snapshots.join("\n"), &secrets), None);
    let kept: Vec<String> = sqlx::query_scalar(
        "SELECT convert_from(body, 'UTF8') FROM idempotency_keys WHERE body IS NOT NULL",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(shows(&kept.join("\n"), &secrets), None);
    let log = all_pages(&app, &auditor, "", 1000).await;
    let log_text = serde_json::to_string(&log).unwrap();
    assert_eq!(shows(&log_text, &secrets), None);
    assert!(log_text.contains("UserErased"));
    let export = parking_api()
        .args(["history", "export"])
        .env("DATABASE_URL", &app.database_url)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(export.status.success(), "{export:?}");
    let exported = String::from_utf8(export.stdout).unwrap();
    assert_eq!(exported.lines().count(), log.len());
    assert_eq!(shows(&exported, &secrets), None);
    parking_tests::assert_read_models_equal_a_rebuild(&app.db).await;
    assert_eq!(verify(&app, &auditor, true).await["intact"], true);

    let _relay = parking_tests::spawn_second_node(
        &app,
        &[
            ("KAFKA_BROKERS", &broker.address()),
            ("RELAY_ENABLED", "true"),
        ],
    )
    .await;
    let received = all_published(&app, &broker).await;
    let on_kafka = format!(
        "{:?}",
        received.iter().map(|r| &r.envelope).collect::<Vec<_>>()
    );
    assert_eq!(shows(&on_kafka, &secrets), None);
    let created = received
        .iter()
        .find(|r| r.envelope.event_type == "BookingCreated")
        .unwrap();
    assert_eq!(created.envelope.payload["vehicle_number"], "erased");

    // The address may be registered again, by a new account.
    let anew = app.register(&email, "user").await;
    assert_eq!(anew.status, StatusCode::CREATED, "{anew:?}");
    assert_ne!(anew.id(), driver);
}
