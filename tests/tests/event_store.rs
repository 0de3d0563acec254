//! The event store is the record: what it holds, with what metadata, and snapshots that
//! reproduce exactly what a full replay gives.

use chrono::{Duration, TimeZone, Utc};
use cqrs_es::EventStore;
use parking_commands::{Bus, CommandContext};
use parking_domain::lot::SlotType;
use parking_domain::slot::{Slot, SlotCommand};
use parking_domain::time::TimeRange;
use parking_infra::event_store::{event_id, Snapshots};
use parking_infra::PgEventStore;
use parking_tests::{hours_from_now, spawn_app, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// An event store of `A`'s streams on `app`'s database, as the server's own.
fn event_store<A: cqrs_es::Aggregate>(app: &TestApp, snapshots: Snapshots) -> PgEventStore<A> {
    PgEventStore::new(
        app.db.clone(),
        snapshots,
        parking_tests::event_log(&app.db).keys().clone(),
    )
}

#[tokio::test]
async fn every_accepted_command_is_an_event_row_with_its_metadata() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, driver_id) = app.signed_in("user").await;
    let booking = app
        .book(&driver, fx.slot_id, hours_from_now(1), hours_from_now(2))
        .await;
    assert_eq!(booking.status, StatusCode::CREATED);
    app.post(
        &format!("/api/v1/bookings/{}/cancel", booking.id()),
        Some(&driver),
        json!({}),
    )
    .await;

    let mut types = app.event_types().await;
    types.sort();
    let expected = [
        ("booking", "BookingCancelled"),
        ("booking", "BookingCreated"),
        ("email_claim", "EmailClaimConfirmed"),
        ("email_claim", "EmailClaimConfirmed"),
        ("email_claim", "EmailClaimed"),
        ("email_claim", "EmailClaimed"),
        ("lot", "LotRegistered"),
        ("lot", "SlotAdded"),
        ("slot", "SlotRegistered"),
        ("slot", "SlotReleased"),
        ("slot", "SlotReserved"),
        ("user", "UserCredentialsSet"),
        ("user", "UserCredentialsSet"),
        ("user", "UserRegistered"),
        ("user", "UserRegistered"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, e)| (a.to_string(), e.to_string()))
        .collect();
    assert_eq!(types, expected);

    let metadata = |aggregate: &'static str, event: &'static str| {
        let db = app.db.clone();
        async move {
            let (id, sequence, metadata): (String, i64, Value) = sqlx::query_as(
                "SELECT aggregate_id, sequence, metadata::jsonb FROM events WHERE aggregate_type = $1 AND event_type = $2",
            )
            .bind(aggregate)
            .bind(event)
            .fetch_one(&db)
            .await
            .unwrap();
            (id, sequence, metadata)
        }
    };
    let (slot_id, reserved_seq, reserved) = metadata("slot", "SlotReserved").await;
    let (_, _, created) = metadata("booking", "BookingCreated").await;
    let request_id = booking.request_id.clone().expect("x-request-id header");
    assert_eq!(reserved["request_id"], request_id.as_str());
    assert_eq!(reserved["correlation_id"], request_id.as_str());
    assert_eq!(reserved["causation_id"], request_id.as_str());
    assert_eq!(reserved["user_id"], driver_id.to_string());
    assert_eq!(reserved["role"], "user");
    assert!(reserved["occurred_at"].as_str().is_some());
    // The booking was caused by the reservation, within the same correlation.
    assert_eq!(created["correlation_id"], request_id.as_str());
    assert_eq!(
        created["causation_id"],
        event_id("slot", &slot_id, reserved_seq as usize).to_string()
    );

    let recorded_at_is_set: bool =
        sqlx::query_scalar("SELECT bool_and(recorded_at IS NOT NULL) FROM events")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(recorded_at_is_set);
}

/// Snapshots often enough that every load in these tests starts from one.
const EVERY_FIVE: Snapshots = Snapshots::Every {
    every: 5,
    schema: 1,
};

fn at(hour: i64) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0).unwrap() + Duration::hours(hour)
}

/// A new slot, registered through a command bus with `snapshots`; the bus and the context of
/// its commands (at hour 0).
async fn registered_slot(
    app: &parking_tests::TestApp,
    snapshots: Snapshots,
) -> (Bus<Slot>, String, CommandContext) {
    let bus = Bus::new(event_store::<Slot>(app, snapshots), ());
    let slot_id = Uuid::new_v4().to_string();
    let ctx = CommandContext::for_request(None, "test".into(), at(0));
    let register = SlotCommand::Register {
        lot_id: Uuid::new_v4(),
        label: "A1".into(),
        slot_type: SlotType::Standard,
    };
    bus.execute(&slot_id, register, &ctx).await.unwrap();
    (bus, slot_id, ctx)
}

/// Drives one slot through a registration, reservations (some refused as overlapping, some
/// with lapsing holds) and releases, with snapshots every 5 events, so that loads start from
/// snapshots taken in every kind of state.
async fn busy_slot(app: &parking_tests::TestApp, snapshots: Snapshots) -> String {
    let (bus, slot_id, ctx) = registered_slot(app, snapshots).await;
    for i in 0..40i64 {
        let booking_id = Uuid::from_u128(i as u128 + 1);
        // Time moves on by an hour per booking, so older reservations end and get pruned.
        let reserve = SlotCommand::Reserve {
            booking_id,
            range: TimeRange::new(at(i + 1), at(i + 3)).unwrap(),
            hold_until: if i % 3 == 0 {
                Some(at(i) + Duration::minutes(15))
            } else {
                None
            },
            now: at(i),
        };
        match bus.execute(&slot_id, reserve, &ctx).await {
            Ok(_) => {}
            Err(e) if e.code() == "slot_already_reserved" => {} // the previous hour's still runs
            Err(e) => panic!("unexpected {e:?}"),
        }
        if i % 4 == 1 {
            bus.execute(&slot_id, SlotCommand::Release { booking_id }, &ctx)
                .await
                .unwrap();
        }
    }
    slot_id
}

#[tokio::test]
async fn a_snapshotted_slot_loads_exactly_as_a_full_replay() {
    let app = spawn_app().await;
    let snapshots = EVERY_FIVE;
    let slot_id = busy_slot(&app, snapshots).await;

    let with_snapshots = event_store::<Slot>(&app, snapshots);
    let replay_only = event_store::<Slot>(&app, Snapshots::Never);
    let from_snapshot = with_snapshots.load_aggregate(&slot_id).await.unwrap();
    let replayed = replay_only.load_aggregate(&slot_id).await.unwrap();
    assert_eq!(from_snapshot.aggregate, replayed.aggregate);
    assert_eq!(from_snapshot.current_sequence, replayed.current_sequence);
    assert!(
        from_snapshot.current_snapshot.is_some(),
        "a snapshot was used"
    );
    assert!(
        (1..=3).contains(&replayed.aggregate.reservations.len()),
        "ended reservations were pruned, live ones kept: {:?}",
        replayed.aggregate.reservations
    );

    let (snapshot_sequence, events): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sequence FROM aggregate_snapshots WHERE aggregate_id = $1),
                (SELECT count(*) FROM events WHERE aggregate_id = $1)",
    )
    .bind(&slot_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(
        snapshot_sequence > events - 5 && snapshot_sequence <= events,
        "{snapshot_sequence} of {events}"
    );
}

#[tokio::test]
async fn a_snapshot_of_another_schema_or_unreadable_is_ignored() {
    let app = spawn_app().await;
    let snapshots = EVERY_FIVE;
    let slot_id = busy_slot(&app, snapshots).await;
    let replayed = event_store::<Slot>(&app, Snapshots::Never)
        .load_aggregate(&slot_id)
        .await
        .unwrap();

    let newer_schema = event_store::<Slot>(
        &app,
        Snapshots::Every {
            every: 5,
            schema: 2,
        },
    );
    let loaded = newer_schema.load_aggregate(&slot_id).await.unwrap();
    assert_eq!(loaded.current_snapshot, None);
    assert_eq!(loaded.aggregate, replayed.aggregate);

    sqlx::query("UPDATE aggregate_snapshots SET payload = '{\"garbage\": true, \"reservations\": 7}' WHERE aggregate_id = $1")
        .bind(&slot_id)
        .execute(&app.db)
        .await
        .unwrap();
    let loaded = event_store::<Slot>(&app, snapshots)
        .load_aggregate(&slot_id)
        .await
        .unwrap();
    assert_eq!(loaded.current_snapshot, None);
    assert_eq!(loaded.aggregate, replayed.aggregate);
}

/// An imagined version 0 of `LotRegistered`, with flat fields, and its upcaster to version 1.
fn legacy_lot_registered(fields: &mut serde_json::Map<String, Value>) {
    let take = |fields: &mut serde_json::Map<String, Value>, key: &str| {
        fields.remove(key).unwrap_or(Value::Null)
    };
    let details = json!({
        "name": take(fields, "name"),
        "address": take(fields, "address"),
        "city": take(fields, "city"),
        "location": {"latitude": take(fields, "lat"), "longitude": take(fields, "lng")},
        "hourly_rate": {"minor": take(fields, "rate_cents"), "currency": take(fields, "currency")},
        "description": null,
        "camera_url": null,
    });
    fields.insert("details".into(), details);
}

#[tokio::test]
async fn an_old_event_version_is_read_through_its_upcaster() {
    use parking_domain::lot::{LotChanges, LotCommand, ParkingLot};
    use parking_domain::{Actor, Role};
    use parking_infra::upcasting::FieldsUpcaster;

    let app = spawn_app().await;
    let owner = Uuid::new_v4();
    let lot_id = Uuid::new_v4().to_string();
    let old = json!({"LotRegistered": {
        "owner_id": owner, "name": "Old Garage", "address": "2 Rue", "city": "Lyon",
        "lat": 45.76, "lng": 4.83, "rate_cents": 180, "currency": "EUR"
    }});
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('lot', $1, 1, 'LotRegistered', '0', $2, '{}')",
    )
    .bind(&lot_id)
    .bind(&old)
    .execute(&app.db)
    .await
    .unwrap();

    let upcaster = || {
        let upcaster = FieldsUpcaster {
            event_type: "LotRegistered",
            from_version: "0",
            to_version: "1",
            transform: legacy_lot_registered,
        };
        vec![Box::new(upcaster) as Box<dyn cqrs_es::persist::EventUpcaster>]
    };
    let store = || event_store::<ParkingLot>(&app, Snapshots::Never).with_upcasters(upcaster());

    // Without the upcaster the old shape does not load: the test is about the upcaster.
    let plain = event_store::<ParkingLot>(&app, Snapshots::Never);
    assert!(plain.load_aggregate(&lot_id).await.is_err());

    let lot = store()
        .load_aggregate(&lot_id)
        .await
        .unwrap()
        .aggregate
        .registered
        .unwrap();
    assert_eq!(lot.details.name, "Old Garage");
    assert_eq!(lot.details.hourly_rate.minor, 180);
    assert_eq!(lot.owner_id, owner);

    // New commands build on the old history; the stored old event is left as it was.
    let bus = Bus::new(store(), ());
    let actor = Actor {
        user_id: owner,
        role: Role::ParkingOwner,
    };
    let ctx = CommandContext::for_request(Some(actor), "test".into(), Utc::now());
    let rename = LotCommand::Update {
        actor,
        changes: LotChanges {
            name: Some("New Garage".into()),
            ..LotChanges::default()
        },
    };
    bus.execute(&lot_id, rename, &ctx).await.unwrap();
    let lot = store()
        .load_aggregate(&lot_id)
        .await
        .unwrap()
        .aggregate
        .registered
        .unwrap();
    assert_eq!(
        (lot.details.name.as_str(), lot.details.hourly_rate.minor),
        ("New Garage", 180)
    );
    let stored: String = sqlx::query_scalar(
        "SELECT event_version FROM events WHERE aggregate_id = $1 AND sequence = 1",
    )
    .bind(&lot_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(stored, "0", "history is never rewritten");
}

#[tokio::test]
async fn several_streams_load_in_one_call_exactly_as_each_alone() {
    let app = spawn_app().await;
    let snapshots = EVERY_FIVE;
    let busy = busy_slot(&app, snapshots).await;
    let other = busy_slot(&app, Snapshots::Never).await;
    let unknown = Uuid::new_v4().to_string();
    let store = event_store::<Slot>(&app, snapshots);

    let ids = [other.clone(), unknown.clone(), busy.clone()];
    let together = store.load_many(&ids).await.unwrap();
    assert_eq!(together.len(), 3);
    for (id, loaded) in ids.iter().zip(&together) {
        let alone = store.load_aggregate(id).await.unwrap();
        assert_eq!(&loaded.aggregate_id, id);
        assert_eq!(loaded.aggregate, alone.aggregate, "{id}");
        assert_eq!(loaded.current_sequence, alone.current_sequence, "{id}");
        assert_eq!(loaded.current_snapshot, alone.current_snapshot, "{id}");
    }
    assert!(
        together[2].current_snapshot.is_some(),
        "the busy slot's snapshot was used"
    );
    assert_eq!(
        together[1].current_sequence, 0,
        "an unknown stream loads empty"
    );
    assert_eq!(together[1].aggregate, Slot::default());
    assert!(store.load_many(&[]).await.unwrap().is_empty());
}

/// A slot with many reservations ahead has a snapshot large enough to be compressed: it is
/// stored with LZ4 (migration 0010) and loads as a full replay does.
#[tokio::test]
async fn a_large_snapshot_is_compressed_with_lz4_and_loads_as_a_replay() {
    let app = spawn_app().await;
    let (bus, slot_id, ctx) = registered_slot(&app, EVERY_FIVE).await;
    // 60 hours booked ahead, none ended: the calendar, and so the snapshot, holds them all.
    for hour in 1..=60i64 {
        let reserve = SlotCommand::Reserve {
            booking_id: Uuid::new_v4(),
            range: TimeRange::new(at(hour), at(hour + 1)).unwrap(),
            hold_until: None,
            now: at(0),
        };
        bus.execute(&slot_id, reserve, &ctx).await.unwrap();
    }

    let (size, compression): (i32, Option<String>) = sqlx::query_as(
        "SELECT octet_length(payload::text), pg_column_compression(payload)::text
           FROM aggregate_snapshots WHERE aggregate_id = $1",
    )
    .bind(&slot_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(
        size > 4096,
        "a snapshot of {size} bytes is too small to compress"
    );
    assert_eq!(compression.as_deref(), Some("lz4"));

    let from_snapshot = event_store::<Slot>(&app, EVERY_FIVE)
        .load_aggregate(&slot_id)
        .await
        .unwrap();
    let replayed = event_store::<Slot>(&app, Snapshots::Never)
        .load_aggregate(&slot_id)
        .await
        .unwrap();
    assert_eq!(from_snapshot.current_snapshot, Some(60));
    assert_eq!(from_snapshot.aggregate, replayed.aggregate);
    assert_eq!(from_snapshot.aggregate.reservations.len(), 60);
}
