//! Benchmark: does a slot's calendar stay fast to command as its history grows?
//!
//! Loading an aggregate replays its stream, so a slot booked for years would slow down with
//! every booking (the full-replay column below shows how much). The slot calendar
//! prunes ended reservations from its state and is snapshotted every 200 events; this measures
//! reservation commands per second on one slot with 0, 1,000 and 10,000 events of history,
//! with snapshots (as shipped) and without (full replay), against the fresh-slot baseline
//! measured in the same run.
//!
//! Run: `cargo run --release --locked --bin bench-slot-stream` (PostgreSQL on
//! `TEST_DATABASE_URL`, default 127.0.0.1; it creates
//! and drops its own database). `BENCH_COMMANDS` sets the commands per measurement (300).

use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use parking_commands::{Bus, CommandContext};
use parking_domain::lot::SlotType;
use parking_domain::slot::{Slot, SlotCommand};
use parking_domain::time::TimeRange;
use parking_infra::event_store::Snapshots;
use parking_infra::PgEventStore;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

const SNAPSHOTS: Snapshots = Snapshots::Every {
    every: 200,
    schema: 1,
};

/// One reservation an hour, each for the next two hours: old ones end as time moves on.
fn reserve(hour: i64) -> SlotCommand {
    let t0 = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let now = t0 + Duration::hours(hour);
    SlotCommand::Reserve {
        booking_id: Uuid::new_v4(),
        range: TimeRange::new(now + Duration::minutes(30), now + Duration::minutes(90)).unwrap(),
        hold_until: None,
        now,
    }
}

/// Registers a slot and gives it `history` reservation events.
async fn slot_with_history(pool: &PgPool, history: i64) -> (String, i64) {
    let bus = Bus::new(
        PgEventStore::<Slot>::new(
            pool.clone(),
            SNAPSHOTS,
            parking_tests::event_log(pool).keys().clone(),
        ),
        (),
    );
    let ctx = CommandContext::system("bench-seed".into(), Utc::now());
    let id = Uuid::new_v4().to_string();
    let register = SlotCommand::Register {
        lot_id: Uuid::new_v4(),
        label: "B1".into(),
        slot_type: SlotType::Standard,
    };
    bus.execute(&id, register, &ctx).await.expect("register");
    for hour in 0..history {
        bus.execute(&id, reserve(hour), &ctx)
            .await
            .expect("seed reservation");
    }
    (id, history)
}

/// A copy of slot `id`'s stream under a new id, without its snapshot: the same history for a
/// measurement that must not be helped (or changed) by the other one.
async fn clone_stream(pool: &PgPool, id: &str) -> anyhow::Result<String> {
    let copy = Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT aggregate_type, $2, sequence, event_type, event_version, payload, metadata
           FROM events WHERE aggregate_type = 'slot' AND aggregate_id = $1",
    )
    .bind(id)
    .bind(&copy)
    .execute(pool)
    .await?;
    Ok(copy)
}

/// Commands per second for `n` sequential reservations on slot `id`, starting at `hour`.
async fn measure(pool: &PgPool, snapshots: Snapshots, id: &str, hour: i64, n: i64) -> f64 {
    let bus = Bus::new(
        PgEventStore::<Slot>::new(
            pool.clone(),
            snapshots,
            parking_tests::event_log(pool).keys().clone(),
        ),
        (),
    );
    let ctx = CommandContext::system("bench".into(), Utc::now());
    let started = Instant::now();
    for i in 0..n {
        bus.execute(id, reserve(hour + i), &ctx)
            .await
            .expect("reservation");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: i64 = std::env::var("BENCH_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let server = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let db_name = format!("parking_bench_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&format!("{server}/postgres")).await?;
    sqlx::query(&format!(r#"CREATE DATABASE "{db_name}""#))
        .execute(&mut admin)
        .await?;
    let pool = PgPool::connect(&format!("{server}/{db_name}")).await?;
    parking_infra::db::migrate(&pool).await?;

    println!("reservation commands/s on one slot, {n} sequential commands per row, 1 client");
    println!(
        "{:>14} | {:>16} | {:>9} | {:>16} | {:>9}",
        "history events", "snapshots (c/s)", "vs fresh", "full replay (c/s)", "vs fresh"
    );
    let mut baseline = None;
    for history in [0i64, 1_000, 10_000] {
        let (id, next_hour) = slot_with_history(&pool, history).await;
        let replay_id = clone_stream(&pool, &id).await?;
        let with_snapshots = measure(&pool, SNAPSHOTS, &id, next_hour, n).await;
        // Full replay gets fewer commands at 10k: each one reads the whole stream.
        let replay_n = if history >= 10_000 { n / 10 } else { n };
        let replay = measure(&pool, Snapshots::Never, &replay_id, next_hour, replay_n).await;
        let base = *baseline.get_or_insert(with_snapshots);
        println!(
            "{history:>14} | {with_snapshots:>16.0} | {:>8.2}x | {replay:>16.0} | {:>8.2}x",
            with_snapshots / base,
            replay / base
        );
    }

    pool.close().await;
    sqlx::query(&format!(r#"DROP DATABASE "{db_name}" WITH (FORCE)"#))
        .execute(&mut admin)
        .await?;
    Ok(())
}
