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
