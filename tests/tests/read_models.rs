//! Read models apply each stream's events in order, whatever order updates arrive in.

use chrono::Utc;
use cqrs_es::{EventStore, Query};
use parking_commands::{Bus, CommandContext};
use parking_domain::geo::GeoPoint;
use parking_domain::lot::{LotChanges, LotCommand, LotDetails, ParkingLot};
use parking_domain::money::{Currency, Money};
use parking_domain::{Actor, Role};
use parking_infra::event_store::Snapshots;
use parking_infra::PgEventStore;
use parking_projections::lots::LotsProjection;
use parking_projections::ReadModel;
use parking_tests::spawn_app;
use uuid::Uuid;

#[tokio::test]
async fn late_and_out_of_order_updates_leave_the_newest_state() {
    let app = spawn_app().await;
    // Record three lot events with no read model attached.
    let bus = Bus::new(
        PgEventStore::<ParkingLot>::new(app.db.clone(), Snapshots::Never),
        (),
        Vec::new(),
    );
    let owner = Actor {
        user_id: Uuid::new_v4(),
        role: Role::ParkingOwner,
    };
    let ctx = CommandContext::for_request(Some(owner), "test".into(), Utc::now());
    let lot_id = Uuid::new_v4().to_string();
    let details = LotDetails {
        name: "First".into(),
        address: "1 Main St".into(),
        city: "Lyon".into(),
        location: GeoPoint::new(45.0, 4.0).unwrap(),
        hourly_rate: Money::new(100, Currency::parse("EUR").unwrap()).unwrap(),
        description: None,
        camera_url: None,
    };
    bus.execute(
        &lot_id,
        LotCommand::Register {
            actor: owner,
            details,
        },
        &ctx,
    )
    .await
    .unwrap();
    let rename = |name: &str| LotCommand::Update {
        actor: owner,
        changes: LotChanges {
            name: Some(name.into()),
            ..LotChanges::default()
        },
    };
    bus.execute(&lot_id, rename("Second"), &ctx).await.unwrap();
    let rate = LotCommand::Update {
        actor: owner,
        changes: LotChanges {
            hourly_rate_minor: Some(300),
            ..LotChanges::default()
        },
    };
    bus.execute(&lot_id, rate, &ctx).await.unwrap();
    let events = PgEventStore::<ParkingLot>::new(app.db.clone(), Snapshots::Never)
        .load_events(&lot_id)
        .await
        .unwrap();
    assert_eq!(events.len(), 3);

    // The after-commit updates arrive newest first, as racing requests may deliver them.
    let read_model = ReadModel::<ParkingLot, _>::new(app.db.clone(), LotsProjection);
    read_model.dispatch(&lot_id, &events[2..3]).await;
    read_model.dispatch(&lot_id, &events[1..2]).await;
    read_model.dispatch(&lot_id, &events[0..1]).await;

    let (name, rate, version): (String, i64, i64) =
        sqlx::query_as("SELECT name, hourly_rate_cents, version FROM rm_lots WHERE id = $1")
            .bind(lot_id.parse::<Uuid>().unwrap())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((name.as_str(), rate, version), ("Second", 300, 3));
    let checkpoint: i64 =
        sqlx::query_scalar("SELECT sequence FROM rm_stream_checkpoints WHERE aggregate_id = $1")
            .bind(&lot_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(checkpoint, 3);
}

/// Every read-model table, as JSON rows in a stable order.
async fn read_model_rows(db: &sqlx::PgPool) -> Vec<(String, serde_json::Value)> {
    let mut all = Vec::new();
    for table in [
        "rm_users",
        "rm_lots",
        "rm_slots",
        "rm_slot_service",
        "rm_bookings",
    ] {
        let rows: serde_json::Value = sqlx::query_scalar(&format!(
            "SELECT COALESCE(json_agg(row_to_json(t) ORDER BY row_to_json(t)::text), '[]'::json) FROM {table} t"
        ))
        .fetch_one(db)
        .await
        .unwrap();
        all.push((table.to_owned(), rows));
    }
    all
}

#[tokio::test]
async fn read_models_rebuilt_from_history_equal_the_live_ones() {
    use parking_domain::booking::Booking;
    use parking_domain::slot::Slot;
    use parking_domain::user::User;
    use parking_projections::bookings::BookingsProjection;
    use parking_projections::slots::SlotsProjection;
    use parking_projections::users::UsersProjection;
    use parking_tests::hours_from_now;
    use reqwest::Method;
    use serde_json::json;

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
    let live = read_model_rows(&app.db).await;

    sqlx::query(
        "TRUNCATE rm_users, rm_lots, rm_slots, rm_slot_service, rm_bookings, rm_stream_checkpoints",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let streams: Vec<(String, String)> =
        sqlx::query_as("SELECT DISTINCT aggregate_type, aggregate_id FROM events")
            .fetch_all(&app.db)
            .await
            .unwrap();
    for (aggregate_type, id) in &streams {
        let db = app.db.clone();
        match aggregate_type.as_str() {
            "user" => {
                ReadModel::<User, _>::new(db, UsersProjection)
                    .dispatch(id, &[])
                    .await
            }
            "lot" => {
                ReadModel::<ParkingLot, _>::new(db, LotsProjection)
                    .dispatch(id, &[])
                    .await
            }
            "slot" => {
                ReadModel::<Slot, _>::new(db, SlotsProjection)
                    .dispatch(id, &[])
                    .await
            }
            "booking" => {
                ReadModel::<Booking, _>::new(db, BookingsProjection)
                    .dispatch(id, &[])
                    .await
            }
            _ => {} // e-mail claims have no read model
        }
    }
    let rebuilt = read_model_rows(&app.db).await;
    for ((table, live), (_, rebuilt)) in live.iter().zip(&rebuilt) {
        assert_eq!(live, rebuilt, "{table} differs after a rebuild");
        assert_ne!(live, &serde_json::json!([]), "{table} was not exercised");
    }
}
