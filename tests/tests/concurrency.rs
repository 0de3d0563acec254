//! Races on one slot: the calendar must admit exactly one of any set of overlapping bookings,
//! whether the racing requests are decided in one batch, in several, or on several nodes.

use parking_tests::{hours_from_now, spawn_app, spawn_second_node, TestApp};
use reqwest::StatusCode;
use uuid::Uuid;

/// The slot's event sequences, in order.
async fn slot_sequences(app: &TestApp, slot_id: Uuid) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT sequence FROM events WHERE aggregate_type = 'slot' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(slot_id.to_string())
    .fetch_all(&app.db)
    .await
    .unwrap()
}

/// Books the slot for each of the next `hours` hours, all requests at once; all must succeed.
async fn book_hours_at_once(app: &TestApp, driver: &str, slot_id: Uuid, hours: i64) {
    let attempts = (0..hours).map(|h| async move {
        app.book(driver, slot_id, hours_from_now(h), hours_from_now(h + 1))
            .await
    });
    let replies = futures::future::join_all(attempts).await;
    assert!(
        replies.iter().all(|r| r.status == StatusCode::CREATED),
        "{replies:?}"
    );
}

#[tokio::test]
async fn forty_concurrent_overlapping_bookings_admit_exactly_one() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let mut drivers = Vec::new();
    for _ in 0..8 {
        drivers.push(app.signed_in("user").await.0);
    }
    let attempts = (0..40).map(|i| {
        let (app, token) = (&app, drivers[i % drivers.len()].clone());
        // Every range overlaps every other: all contain hour 2..3.
        let start = hours_from_now(1 + (i % 2) as i64);
        let end = hours_from_now(3 + (i % 3) as i64);
        async move { app.book(&token, fx.slot_id, start, end).await }
    });
    let replies = futures::future::join_all(attempts).await;

    assert!(
        replies.iter().all(|r| !r.status.is_server_error()),
        "{replies:?}"
    );
    let created = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{replies:?}");
    for refused in replies.iter().filter(|r| r.status != StatusCode::CREATED) {
        refused.assert_problem(409, "slot_already_reserved");
    }
    let (reserved, bookings): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE event_type = 'SlotReserved'),
                count(*) FILTER (WHERE event_type = 'BookingCreated') FROM events",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((reserved, bookings), (1, 1));
}

#[tokio::test]
async fn concurrent_non_overlapping_bookings_of_one_slot_all_succeed() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    // Twelve back-to-back hours, all racing for the same slot stream.
    book_hours_at_once(&app, &driver, fx.slot_id, 12).await;
    assert_eq!(
        slot_sequences(&app, fx.slot_id).await,
        (1..=13).collect::<Vec<i64>>(),
        "registration plus twelve reservations, no gaps"
    );
}

#[tokio::test]
async fn concurrent_bookings_are_recorded_in_shared_transactions() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    // The log's head row is locked, so the desk's first appends wait in the database: it has
    // at most two batches on their way, and every request that arrives meanwhile queues.
    let mut lock = app.db.begin().await.unwrap();
    sqlx::query("SELECT position FROM event_log_head FOR UPDATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let received = app.metric("parking_booking_requests_received_total").await;
    let release_once_all_queued = async {
        while app.metric("parking_booking_requests_received_total").await < received + 32 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        lock.rollback().await.unwrap();
    };
    futures::join!(
        book_hours_at_once(&app, &driver, fx.slot_id, 32),
        release_once_all_queued
    );

    // Each booking is recorded with its reservation, in one transaction.
    let per_booking: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT transaction_id::text,
                count(*) FILTER (WHERE event_type = 'SlotReserved'),
                count(*) FILTER (WHERE event_type = 'BookingCreated')
           FROM events WHERE event_type IN ('SlotReserved', 'BookingCreated')
          GROUP BY transaction_id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(
        per_booking
            .iter()
            .all(|(_, reserved, created)| reserved == created),
        "{per_booking:?}"
    );
    let booked: i64 = per_booking.iter().map(|(_, _, created)| created).sum();
    assert_eq!(booked, 32);
    // The two batches on their way when the lock was taken, then everything queued behind them.
    assert!(
        per_booking.len() <= 3,
        "32 bookings in {} transactions",
        per_booking.len()
    );
    assert_eq!(
        slot_sequences(&app, fx.slot_id).await,
        (1..=33).collect::<Vec<i64>>()
    );
    // Every answer covers its own booking: the read models show all of them.
    let listed = app
        .get("/api/v1/bookings?per_page=100", Some(&driver))
        .await;
    assert_eq!(listed.body["total"], 32, "{listed:?}");
}

#[tokio::test]
async fn two_nodes_booking_one_slot_at_once_lose_nothing_and_double_book_nothing() {
    let app = spawn_app().await;
    let other = spawn_second_node(&app, &[]).await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    // Hours 0..20 once each, alternating nodes, and hours 0..10 a second time: exactly one
    // booking per hour may stand, whichever node decides it.
    let attempts = (0..30).map(|i| {
        let node = if i % 2 == 0 { &app } else { &other };
        let hour = i % 20;
        let token = driver.clone();
        async move {
            node.book(
                &token,
                fx.slot_id,
                hours_from_now(hour),
                hours_from_now(hour + 1),
            )
            .await
        }
    });
    let replies = futures::future::join_all(attempts).await;
    assert!(
        replies.iter().all(|r| !r.status.is_server_error()),
        "{replies:?}"
    );
    let created = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 20, "{replies:?}");
    for refused in replies.iter().filter(|r| r.status != StatusCode::CREATED) {
        refused.assert_problem(409, "slot_already_reserved");
    }
    assert_eq!(
        slot_sequences(&app, fx.slot_id).await,
        (1..=21).collect::<Vec<i64>>(),
        "registration plus twenty reservations, no gaps"
    );
}

#[tokio::test]
async fn one_request_twice_in_one_batch_makes_one_booking() {
    use parking_commands::{BookingRequest, CommandContext, Commands, Settings};
    use parking_domain::booking::VehicleNumber;
    use parking_domain::time::TimeRange;
    use parking_domain::{Actor, Role};

    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (_, driver) = app.signed_in("user").await;
    // Below the HTTP layer, whose idempotency keys stop most such twins first.
    let commands = Commands::new(
        parking_tests::event_log(&app.db),
        std::sync::Arc::new(parking_infra::clock::SystemClock),
        Settings {
            bcrypt_cost: 4,
            booking_policy: Default::default(),
        },
        None,
    );
    let actor = Actor {
        user_id: driver,
        role: Role::User,
    };
    let attempt = |request_id: &str| {
        let mut ctx =
            CommandContext::for_request(Some(actor), request_id.into(), chrono::Utc::now());
        ctx.idempotency_key = Some("the-same-key".into());
        let request = BookingRequest {
            slot_id: fx.slot_id,
            range: TimeRange::new(hours_from_now(1), hours_from_now(2)).unwrap(),
            vehicle_number: VehicleNumber::parse("AB-123-CD").unwrap(),
        };
        (ctx, request)
    };
    let ((first_ctx, first), (second_ctx, second)) = (attempt("first"), attempt("second"));
    // Queued together: both are decided in the desk's first batch.
    let (first, second) = tokio::join!(
        commands.book(&first_ctx, first),
        commands.book(&second_ctx, second)
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.booking_id, second.booking_id);
    let created: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'BookingCreated'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(created, 1);
    for ctx in [&first_ctx, &second_ctx] {
        let position = commands.settle(ctx).await.unwrap();
        assert!(position > 0, "each answer covers the booking");
    }
}

/// The booking desk decides on the slots and lots it holds from its earlier batches, without
/// reading them again: a slot that moved elsewhere meanwhile (a cancellation's release) must
/// not be decided on as the desk last saw it. Here that stale slot would still show the
/// cancelled reservation and refuse the same hour again.
#[tokio::test]
async fn a_held_slot_that_moved_elsewhere_is_decided_on_as_it_is_now() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    let first = app.booked_hour(&driver, fx.slot_id, 3).await;
    let path = format!("/api/v1/bookings/{}/cancel", first.id());
    let cancelled = app.post(&path, Some(&driver), serde_json::json!({})).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{cancelled:?}");

    let again = app
        .book(&driver, fx.slot_id, hours_from_now(3), hours_from_now(4))
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{again:?}");
    // Added, reserved, released, reserved again: no gap, nothing twice.
    assert_eq!(slot_sequences(&app, fx.slot_id).await, vec![1, 2, 3, 4]);
}

/// A held slot that another node booked meanwhile: this node's desk decides on its stale copy
/// and appends right after the sequence it saw, which the other node took. That append must
/// fail as a lost race (the primary key, not a probe, catches it: the desk probes only the
/// streams it does not write) and the booking be decided again on the slot as it is now.
#[tokio::test]
async fn a_held_slot_booked_by_another_node_meanwhile_is_decided_again() {
    let app = spawn_app().await;
    let other = spawn_second_node(&app, &[]).await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    app.booked_hour(&driver, fx.slot_id, 1).await;
    other.booked_hour(&driver, fx.slot_id, 2).await;

    // Overlaps what the other node booked: refused, although this node's copy has it free.
    app.book(&driver, fx.slot_id, hours_from_now(2), hours_from_now(3))
        .await
        .assert_problem(409, "slot_already_reserved");
    app.booked_hour(&driver, fx.slot_id, 3).await;
    // Added, then three reservations: no gap, nothing twice.
    assert_eq!(slot_sequences(&app, fx.slot_id).await, vec![1, 2, 3, 4]);
}

/// Likewise for a held lot: deactivated after the desk last read it, it takes no booking.
#[tokio::test]
async fn a_held_lot_deactivated_meanwhile_takes_no_booking() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    app.booked_hour(&driver, fx.slot_id, 1).await;

    let path = format!("/api/v1/lots/{}", fx.lot_id);
    let deactivated = app
        .request(reqwest::Method::DELETE, &path, Some(&fx.owner_token), None)
        .await;
    assert_eq!(
        deactivated.status,
        StatusCode::NO_CONTENT,
        "{deactivated:?}"
    );

    app.book(&driver, fx.slot_id, hours_from_now(5), hours_from_now(6))
        .await
        .assert_problem(409, "lot_inactive");
}
