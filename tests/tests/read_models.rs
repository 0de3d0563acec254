//! The projector runtime: read models follow the global log in order, record their progress
//! with their rows, never skip, and can be rebuilt from history with the same result.

use async_trait::async_trait;
use parking_infra::LoggedEvent;
use parking_projections::{ProjectionError, Projections, ReadModel, StoreTail};
use parking_tests::{read_model_rows, spawn_app};
use serde_json::json;
use sqlx::PgConnection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Records each position it sees in `seen`, and fails on the event at `fail_at` while told to.
struct Recorder {
    fail_at: i64,
    failing: Arc<AtomicBool>,
}

#[async_trait]
impl ReadModel for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["seen"]
    }

    async fn apply(
        &self,
        db: &mut PgConnection,
        event: &LoggedEvent,
    ) -> Result<(), ProjectionError> {
        sqlx::query("INSERT INTO seen (position) VALUES ($1)")
            .bind(event.global_position)
            .execute(&mut *db)
            .await?;
        if event.global_position == self.fail_at && self.failing.load(Ordering::SeqCst) {
            return Err(sqlx::Error::Protocol("made to fail".into()).into());
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_batch_records_nothing_and_is_applied_once_when_retried() {
    let app = spawn_app().await;
    // Some history: a few users and a lot with a slot.
    let fx = app.lot_with_slot().await;
    let head = parking_tests::event_log(&app.db).sequence().await.unwrap();
    assert!(head >= 5, "{head}");
    sqlx::query("CREATE TABLE seen (position bigint NOT NULL)")
        .execute(&app.db)
        .await
        .unwrap();

    let failing = Arc::new(AtomicBool::new(true));
    let recorder = Recorder {
        fail_at: head - 1,
        failing: failing.clone(),
    };
    let projections = Projections::new(app.db.clone(), vec![Box::new(recorder)]);
    let source = StoreTail::shared(parking_tests::event_log(&app.db));
    let err = projections.catch_up(source.as_ref()).await;
    assert!(err.is_err(), "the recorder was made to fail");
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM seen")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let checkpoint = parking_projections::runtime::checkpoint(&app.db, "projection:recorder")
        .await
        .unwrap();
    assert_eq!(
        (seen, checkpoint),
        (0, 0),
        "the failed batch left rows or progress behind"
    );

    failing.store(false, Ordering::SeqCst);
    let reached = projections.catch_up(source.as_ref()).await.unwrap();
    assert_eq!(reached, head);
    let positions: Vec<i64> = sqlx::query_scalar("SELECT position FROM seen ORDER BY position")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(
        positions,
        (1..=head).collect::<Vec<_>>(),
        "every event exactly once, in order"
    );

    // New events continue from the checkpoint, nothing earlier again.
    app.post(
        &format!("/api/v1/lots/{}/slots", fx.lot_id),
        Some(&fx.owner_token),
        json!({"label": "Z9", "slot_type": "standard"}),
    )
    .await;
    let reached = projections.catch_up(source.as_ref()).await.unwrap();
    assert!(reached > head);
    let (count, distinct, max): (i64, i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT position), max(position) FROM seen")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((count, distinct, max), (reached, reached, reached));
}

#[tokio::test]
async fn read_models_rebuilt_from_history_equal_the_live_ones() {
    use parking_tests::hours_from_now;
    use reqwest::Method;

    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let slots = format!("/api/v1/lots/{}/slots", fx.lot_id);
    let b1 = app
        .post(
            &slots,
            Some(&fx.owner_token),
            json!({"label": "B1", "slot_type": "disabled"}),
        )
        .await;
    app.request(
        Method::PATCH,
        &format!("/api/v1/slots/{}", b1.id()),
        Some(&fx.owner_token),
        Some(json!({"label": "B2", "out_of_service": true})),
    )
    .await;
    app.request(
        Method::PATCH,
        &format!("/api/v1/lots/{}", fx.lot_id),
        Some(&fx.owner_token),
        Some(json!({"name": "Renamed", "description": "Covered"})),
    )
    .await;
    let (driver, _) = app.signed_in("user").await;
    let kept = app
        .book(&driver, fx.slot_id, hours_from_now(1), hours_from_now(2))
        .await;
    let cancelled = app
        .book(&driver, fx.slot_id, hours_from_now(3), hours_from_now(4))
        .await;
    app.post(
        &format!("/api/v1/bookings/{}/cancel", cancelled.id()),
        Some(&driver),
        json!({}),
    )
    .await;
    assert_eq!(
        (kept.status.as_u16(), cancelled.status.as_u16()),
        (201, 201)
    );
    // The kept booking's payment, as the webhook records it (no payment provider here).
    let payment_id = parking_domain::payment::payment_id_for(kept.id());
    let at = chrono::Utc::now();
    let money = json!({"minor": 250, "currency": "EUR"});
    let payment = [
        json!({"PaymentOpened": {"booking_id": kept.id(), "user_id": uuid::Uuid::new_v4(),
            "lot_id": fx.lot_id, "lot_owner_id": fx.owner_id, "amount": money, "opened_at": at}}),
        json!({"PaymentSucceeded": {"intent_id": "pi_1", "charge_id": null, "amount": money,
            "provider_event_id": "evt_1", "succeeded_at": at}}),
    ];
    let mut script = parking_tests::history::Script::default();
    for payload in payment {
        script.add("payment", payment_id, at, payload);
    }
    script.append(&app.db).await.unwrap();
    // A review, revised: a row in each reviews table.
    let reviews = format!("/api/v1/lots/{}/reviews", fx.lot_id);
    for rating in [4, 2] {
        let body = json!({"safety_rating": rating, "lighting_rating": 3, "security_rating": 5,
                          "cleanliness_rating": 1, "comment": "fine"});
        let reviewed = app.post(&reviews, Some(&driver), body).await;
        assert!(reviewed.status.is_success(), "{reviewed:?}");
    }
    // A camera, and its lighting as the vision service reports it.
    let camera = format!(
        "/api/v1/lots/{}/cameras/{}",
        fx.lot_id,
        uuid::Uuid::new_v4()
    );
    let body = json!({"stream_url": "rtsp://camera.example/1", "slots": []});
    let configured = (app.request(Method::PUT, &camera, Some(&fx.owner_token), Some(body))).await;
    assert!(configured.status.is_success(), "{configured:?}");
    let (vision, _) = app.service_account().await;
    let body = json!({"score": 64.5, "observed_at": chrono::Utc::now()});
    let lit = app
        .post(&format!("{camera}/lighting"), Some(&vision), body)
        .await;
    assert_eq!(lit.body["recorded"], true, "{lit:?}");
    let live = read_model_rows(&app.db).await;

    // Rebuild every read model from history into fresh tables and swap them in, while the
    // server (and its live projectors) keep running.
    for model in parking_projections::all() {
        let mut reports = 0;
        let done = parking_projections::rebuild::rebuild(
            &parking_tests::event_log(&app.db),
            model.as_ref(),
            |_| reports += 1,
        )
        .await
        .unwrap();
        assert!(reports > 0, "{} reported no progress", model.name());
        let head: i64 = sqlx::query_scalar("SELECT position FROM event_log_head")
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(done.position, head, "{} caught up", model.name());
    }
    let leftovers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild\\_%'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(leftovers, 0, "rebuild schemas left behind");
    let rebuilt = read_model_rows(&app.db).await;
    for ((table, live), (_, rebuilt)) in live.iter().zip(&rebuilt) {
        assert_eq!(live, rebuilt, "{table} differs after a rebuild");
        assert_ne!(live, &serde_json::json!([]), "{table} was not exercised");
    }

    // The swapped-in tables are the live ones now: the API reads them, the projector writes
    // them, and the view over slots was re-created.
    let slots = app
        .get(&format!("/api/v1/lots/{}/slots", fx.lot_id), None)
        .await;
    assert_eq!(slots.status.as_u16(), 200, "{slots:?}");
    let after = app
        .post(
            &format!("/api/v1/lots/{}/slots", fx.lot_id),
            Some(&fx.owner_token),
            json!({"label": "C1", "slot_type": "standard"}),
        )
        .await;
    assert_eq!(after.status.as_u16(), 201, "{after:?}");
    assert_eq!(after.body["label"], "C1");
}
