//! Benchmark: booking commands per second over HTTP, next to raw single-row PostgreSQL inserts
//! measured in the same run on the same database server.
//!
//! The server is the real `Application` (in this process, on a free port), against a fresh
//! database; 16 clients each book their own slots back to back (no conflicts), so the figure is
//! the command path's cost: HTTP, JWT, two aggregates (slot calendar, booking) with their
//! event appends and read-model updates, and the read-back of the answer. The baseline is 16
//! connections each inserting one row per transaction. Client, server and database share this
//! machine's cores.
//!
//! Run: `cargo run --release --locked --bin bench-http-bookings`
//! (`BENCH_SECONDS`, default 5; `BENCH_CLIENTS`, default 16).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_tests::{hours_from_now, spawn_app};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn raw_inserts(database_url: &str, clients: u64, seconds: u64) -> anyhow::Result<f64> {
    let pool = PgPoolOptions::new()
        .max_connections(clients as u32)
        .connect(database_url)
        .await?;
    sqlx::query("CREATE TABLE bench_raw (id uuid PRIMARY KEY, payload jsonb NOT NULL)")
        .execute(&pool)
        .await?;
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (pool, done) = (pool.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    sqlx::query("INSERT INTO bench_raw (id, payload) VALUES ($1, $2)")
                        .bind(Uuid::new_v4())
                        .bind(serde_json::json!({"kind": "bench", "n": 1}))
                        .execute(&pool)
                        .await
                        .expect("insert");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / seconds as f64)
}

fn main() -> anyhow::Result<()> {
    // Per-request logs would measure the terminal. Set before any thread exists.
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "error");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let seconds = env("BENCH_SECONDS", 5);
    let clients = env("BENCH_CLIENTS", 16);
    let app = Arc::new(spawn_app().await);

    let owner = app.lot_with_slot().await;
    let slots_per_client = 8;
    let mut slots = vec![owner.slot_id];
    for n in 1..clients * slots_per_client {
        let path = format!("/api/v1/lots/{}/slots", owner.lot_id);
        let body = serde_json::json!({"label": format!("S{n}"), "slot_type": "standard"});
        slots.push(app.post(&path, Some(&owner.owner_token), body).await.id());
    }
    let mut tokens = Vec::new();
    for _ in 0..clients {
        tokens.push(app.signed_in("user").await.0);
    }

    let raw = raw_inserts(&app.database_url, clients, seconds).await?;

    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..clients as usize)
        .map(|c| {
            let (app, done, failed) = (app.clone(), done.clone(), failed.clone());
            let token = tokens[c].clone();
            let mine: Vec<Uuid> =
                slots[c * slots_per_client as usize..(c + 1) * slots_per_client as usize].to_vec();
            tokio::spawn(async move {
                let mut n = 0i64;
                while Instant::now() < deadline {
                    // Round-robin over the client's slots, one hour later per lap: never overlapping.
                    let slot = mine[n as usize % mine.len()];
                    let hour = n / mine.len() as i64;
                    let reply = app
                        .book(&token, slot, hours_from_now(hour), hours_from_now(hour + 1))
                        .await;
                    if reply.status.is_success() {
                        done.fetch_add(1, Ordering::Relaxed)
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed)
                    };
                    n += 1;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let bookings = done.load(Ordering::Relaxed) as f64 / seconds as f64;

    println!("{clients} clients, {seconds} s each, same PostgreSQL server");
    println!("raw single-row INSERT transactions/s : {raw:>8.0}");
    println!(
        "HTTP booking commands/s (201s)       : {bookings:>8.0}  (failed: {})",
        failed.load(Ordering::Relaxed)
    );
    println!(
        "ratio booking / raw insert           : {:>8.2}",
        bookings / raw
    );
    println!(
        "(database {} is left for inspection; scripts/test.sh drops it)",
        app.database_url
    );
    Ok(())
}
