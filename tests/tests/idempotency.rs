//! `Idempotency-Key`: a retried write returns the first answer without a second effect.

use parking_tests::{hours_from_now, spawn_app, Reply, TestApp, PASSWORD};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

fn booking(slot_id: Uuid, from: i64, to: i64) -> Value {
    json!({"slot_id": slot_id, "start_time": hours_from_now(from), "end_time": hours_from_now(to), "vehicle_number": "AB-1"})
}

async fn book_with_key(
    app: &TestApp,
    token: &str,
    key: &str,
    slot_id: Uuid,
    from: i64,
    to: i64,
) -> Reply {
    app.post_idempotent(
        "/api/v1/bookings",
        Some(token),
        key,
        booking(slot_id, from, to),
    )
    .await
}

async fn count(app: &TestApp, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retried_booking_is_answered_again_without_a_second_booking() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    let first = book_with_key(&app, &driver, "key-1", fx.slot_id, 1, 2).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert!(first.headers.get("idempotent-replayed").is_none());

    let retry = book_with_key(&app, &driver, "key-1", fx.slot_id, 1, 2).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(retry.headers["location"], first.headers["location"]);
    assert_eq!(count(&app, "BookingCreated").await, 1);

    let key: String = sqlx::query_scalar("SELECT metadata::jsonb->>'idempotency_key' FROM events WHERE event_type = 'BookingCreated'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(key, "key-1");
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_refused() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    book_with_key(&app, &driver, "key-2", fx.slot_id, 1, 2).await;
    let other = book_with_key(&app, &driver, "key-2", fx.slot_id, 3, 4).await;
    other.assert_problem(422, "idempotency_key_reused");
    assert_eq!(count(&app, "BookingCreated").await, 1);
}

#[tokio::test]
async fn keys_belong_to_their_caller() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (alice, _) = app.signed_in("user").await;
    let (bob, _) = app.signed_in("user").await;
    let a = book_with_key(&app, &alice, "shared", fx.slot_id, 1, 2).await;
    assert_eq!(a.status, StatusCode::CREATED);
    // Bob's identical request with the same key is his own request: it runs, and conflicts.
    let b = book_with_key(&app, &bob, "shared", fx.slot_id, 1, 2).await;
    b.assert_problem(409, "slot_already_reserved");
    assert!(b.headers.get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn a_refusal_is_replayed_as_it_was() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (alice, _) = app.signed_in("user").await;
    let (bob, _) = app.signed_in("user").await;
    app.book(&alice, fx.slot_id, hours_from_now(1), hours_from_now(2))
        .await;
    let refused = book_with_key(&app, &bob, "k", fx.slot_id, 1, 2).await;
    refused.assert_problem(409, "slot_already_reserved");
    let again = book_with_key(&app, &bob, "k", fx.slot_id, 1, 2).await;
    again.assert_problem(409, "slot_already_reserved");
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, refused.body);
}

#[tokio::test]
async fn concurrent_retries_with_one_key_make_one_booking() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    let attempts = (0..10).map(|_| book_with_key(&app, &driver, "burst", fx.slot_id, 1, 2));
    let replies = futures::future::join_all(attempts).await;
    for reply in &replies {
        match reply.status {
            StatusCode::CREATED => {}
            StatusCode::CONFLICT => reply.assert_problem(409, "idempotency_request_in_progress"),
            other => panic!("unexpected {other}: {reply:?}"),
        }
    }
    assert!(replies.iter().any(|r| r.status == StatusCode::CREATED));
    assert_eq!(count(&app, "BookingCreated").await, 1);
}

#[tokio::test]
async fn a_retried_sign_up_registers_once() {
    let app = spawn_app().await;
    let body = json!({"email": "once@example.com", "password": PASSWORD, "full_name": "Once"});
    let first = app
        .post_idempotent("/api/v1/auth/register", None, "signup-1", body.clone())
        .await;
    let second = app
        .post_idempotent("/api/v1/auth/register", None, "signup-1", body)
        .await;
    assert_eq!(
        (first.status, second.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert_eq!(first.body, second.body);
    assert_eq!(count(&app, "UserRegistered").await, 1);
}

#[tokio::test]
async fn a_malformed_key_is_a_400() {
    let app = spawn_app().await;
    let (driver, _) = app.signed_in("user").await;
    let long = "k".repeat(256);
    let reply = app
        .post_idempotent("/api/v1/bookings", Some(&driver), &long, json!({}))
        .await;
    reply.assert_problem(400, "invalid_idempotency_key");
}

/// Forgets every stored answer, as when a process dies after committing a request's events
/// but before recording its answer (and the stale claim has been taken over).
async fn lose_stored_answers(app: &TestApp) {
    sqlx::query("DELETE FROM idempotency_keys")
        .execute(&app.db)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_retry_after_a_lost_answer_finds_the_booking_instead_of_making_another() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    let first = book_with_key(&app, &driver, "lost-1", fx.slot_id, 1, 2).await;
    assert_eq!(first.status, StatusCode::CREATED);
    lose_stored_answers(&app).await;

    let retry = book_with_key(&app, &driver, "lost-1", fx.slot_id, 1, 2).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert_eq!(retry.id(), first.id(), "the same booking, not a second one");
    assert!(
        retry.headers.get("idempotent-replayed").is_none(),
        "it ran again, and found its work"
    );
    assert_eq!(count(&app, "BookingCreated").await, 1);
    assert_eq!(count(&app, "SlotReserved").await, 1);

    lose_stored_answers(&app).await;
    let other = book_with_key(&app, &driver, "lost-1", fx.slot_id, 3, 4).await;
    other.assert_problem(422, "idempotency_key_reused");
    assert_eq!(count(&app, "BookingCreated").await, 1);
}

#[tokio::test]
async fn retries_after_lost_answers_create_lots_slots_and_users_once() {
    let app = spawn_app().await;
    let (owner, _) = app.signed_in("parking_owner").await;
    let lot = app
        .post_idempotent("/api/v1/lots", Some(&owner), "lot-key", app.lot_body())
        .await;
    lose_stored_answers(&app).await;
    let lot_again = app
        .post_idempotent("/api/v1/lots", Some(&owner), "lot-key", app.lot_body())
        .await;
    assert_eq!(
        (lot.status, lot_again.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert_eq!(lot_again.id(), lot.id());
    assert_eq!(count(&app, "LotRegistered").await, 1);

    let slots = format!("/api/v1/lots/{}/slots", lot.id());
    let slot_body = json!({"label": "K1", "slot_type": "standard"});
    let slot = app
        .post_idempotent(&slots, Some(&owner), "slot-key", slot_body.clone())
        .await;
    lose_stored_answers(&app).await;
    let slot_again = app
        .post_idempotent(&slots, Some(&owner), "slot-key", slot_body)
        .await;
    assert_eq!(
        (slot.status, slot_again.status),
        (StatusCode::CREATED, StatusCode::CREATED),
        "{slot_again:?}"
    );
    assert_eq!(slot_again.id(), slot.id());
    assert_eq!(count(&app, "SlotAdded").await, 1);

    let body = json!({"email": "again@example.com", "password": PASSWORD, "full_name": "Again"});
    let user = app
        .post_idempotent("/api/v1/auth/register", None, "user-key", body.clone())
        .await;
    lose_stored_answers(&app).await;
    let user_again = app
        .post_idempotent("/api/v1/auth/register", None, "user-key", body)
        .await;
    assert_eq!(
        (user.status, user_again.status),
        (StatusCode::CREATED, StatusCode::CREATED),
        "{user_again:?}"
    );
    assert_eq!(user_again.id(), user.id());
    assert_eq!(
        count(&app, "UserRegistered").await,
        2,
        "the owner, and this user once"
    );
    assert_eq!(
        app.login("again@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_retry_that_finds_its_work_done_answers_from_caught_up_read_models() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    let first = book_with_key(&app, &driver, "lost", fx.slot_id, 1, 2).await;
    assert_eq!(first.status, StatusCode::CREATED);
    // The answer was lost: the retry runs again, writes nothing, and must still answer with
    // the booking, at a position that covers it.
    lose_stored_answers(&app).await;
    let retry = book_with_key(&app, &driver, "lost", fx.slot_id, 1, 2).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert_eq!(retry.body, first.body);
    assert!(retry.position() >= first.position(), "{retry:?}");
    assert_eq!(count(&app, "BookingCreated").await, 1);
}
