//! Benchmark of the audit's hash chain (docs/audit.md), on a fresh database:
//!
//! 1. **Appending.** `BENCH_EVENTS` events (default 1,000,000) shaped as bookings are (a
//!    `BookingCreated` and its slot's `SlotReserved`, with the command layer's metadata),
//!    appended `BENCH_APPEND` at a time (default 1,000) through the real append, which chains
//!    them: events/s.
//! 2. **Verifying.** The whole chain walked from the first event (`history verify --full`'s
//!    walk, `parking_infra::audit::verify`): events/s; the share of it that is hashing
//!    (`chain_hash` over rows already in memory, timed apart); and a verification resumed from
//!    the signed checkpoint the first one left, after 1,000 more events.
//!
//! What tamper evidence and sealing cost the booking path is measured by
//! `BENCH_AUDIT_BASELINE=1 cargo run --release --locked --bin bench-pipeline`.
//!
//! Run: `cargo run --release --locked --bin bench-audit`

use std::time::Instant;

use chrono::Utc;
use parking_infra::append::{append_all, NewEvent};
use parking_infra::audit::{self, ChainRow, GENESIS};
use parking_infra::keys::MasterKey;
use parking_tests::load::{bench_main, env};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

fn main() -> anyhow::Result<()> {
    bench_main(run)
}

/// A booking's two events, as the booking desk records them.
fn booking(slot: Uuid, n: i64) -> [NewEvent; 2] {
    let (booking, driver) = (Uuid::new_v4(), Uuid::new_v4());
    let start = Utc::now() + chrono::Duration::hours(n);
    let range = json!({"start": start, "end": start + chrono::Duration::hours(1)});
    let metadata = json!({
        "causation_id": Uuid::new_v4(), "correlation_id": Uuid::new_v4(),
        "occurred_at": Utc::now(), "request_id": Uuid::new_v4(), "role": "user",
        "user_id": driver,
    })
    .to_string();
    let reserved = json!({"SlotReserved": {
        "booking_id": booking, "range": range, "hold_until": start, "reserved_at": Utc::now(),
    }});
    let created = json!({"BookingCreated": {
        "user_id": driver, "lot_id": Uuid::new_v4(), "lot_owner_id": Uuid::new_v4(),
        "slot_id": slot, "range": range,
        "vehicle_number": {"sealed": format!("{driver}:{}", "x".repeat(48))},
        "price": {"minor": 250, "currency": "EUR"}, "hold_until": start,
        "created_at": Utc::now(),
    }});
    let event = |aggregate_type, id: Uuid, sequence, payload: serde_json::Value| NewEvent {
        aggregate_type,
        aggregate_id: id.to_string(),
        sequence,
        event_type: payload
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .expect("tagged"),
        event_version: "1".into(),
        payload: payload.to_string(),
        metadata: metadata.clone(),
    };
    [
        event("slot", slot, n + 1, reserved),
        event("booking", booking, 1, created),
    ]
}

async fn run() -> anyhow::Result<()> {
    let total = env("BENCH_EVENTS", 1_000_000) as i64;
    let per_append = env("BENCH_APPEND", 1_000) as i64;
    let url = parking_tests::fresh_database().await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await?;
    let key = MasterKey::generate();

    // 1. Appending, chained by the append itself. A slot per append, its sequence running on.
    let started = Instant::now();
    let mut appended = 0;
    while appended < total {
        let slot = Uuid::new_v4();
        let events: Vec<NewEvent> = (0..per_append.min(total - appended) / 2)
            .flat_map(|n| booking(slot, n))
            .collect();
        appended += events.len() as i64;
        append_all(&pool, &events).await?;
    }
    let append_seconds = started.elapsed().as_secs_f64();
    sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;

    // 2. The whole walk, then the hashing alone over rows in memory.
    let started = Instant::now();
    let full = audit::verify(&pool, Some(&key), true, |_| {}).await?;
    let verify_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(full.intact, "the chain is broken: {full:?}");
    let rows: Vec<ChainRow> = sqlx::query_as(
        "SELECT global_position, aggregate_type, aggregate_id, sequence, event_type, event_version,
                payload::text AS payload, metadata::text AS metadata, recorded_at, hash
           FROM events ORDER BY global_position LIMIT 100000",
    )
    .fetch_all(&pool)
    .await?;
    let started = Instant::now();
    let mut previous = GENESIS;
    for row in &rows {
        previous = audit::chain_hash(&previous, row);
    }
    let hash_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        rows.last().and_then(|r| r.hash.as_deref()) == Some(previous.as_slice()),
        "Rust and SQL disagree on the chain"
    );
    let bytes: usize = rows
        .iter()
        .map(|r| r.payload.len() + r.metadata.len())
        .sum();

    // A verification resumed from the checkpoint the full one left.
    let events: Vec<NewEvent> = (0..500).flat_map(|n| booking(Uuid::new_v4(), n)).collect();
    append_all(&pool, &events).await?;
    let started = Instant::now();
    let resumed = audit::verify(&pool, Some(&key), false, |_| {}).await?;
    let resumed_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(resumed.intact && resumed.from_position == full.head.position);

    println!("events: {total}, appended {per_append} at a time");
    println!(
        "append (chained inside it)        : {:>9.0} events/s ({append_seconds:.1} s)",
        total as f64 / append_seconds
    );
    println!(
        "verify, whole chain               : {:>9.0} events/s ({verify_seconds:.1} s for {})",
        full.checked as f64 / verify_seconds,
        full.checked
    );
    println!(
        "  of which hashing (in memory)    : {:>9.0} events/s ({:.0} bytes of JSON a row)",
        rows.len() as f64 / hash_seconds,
        bytes as f64 / rows.len() as f64
    );
    println!(
        "verify, resumed from a checkpoint : {:>9.3} s for {} events after position {}",
        resumed_seconds, resumed.checked, resumed.from_position
    );
    println!("(database {url} is left for inspection; scripts/test.sh drops it)");
    Ok(())
}
