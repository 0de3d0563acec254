//! Benchmark of the event pipeline, end to end, in one run:
//!
//! 1. booking commands per second over HTTP at 16 clients, next to raw single-row PostgreSQL
//!    inserts at 16 connections measured in the same run on the same database server (ratio;
//!    each inserting client holds its connection, so an insert is one round trip);
//! 2. the lag from a booking's acknowledgement to the read models showing it (p50/p99): every
//!    25th booking, its client reads it back with `X-Min-Position` at once and times the
//!    interval from the 201 to that answer (so the figure includes one `GET` under load);
//! 3. the relay's rate publishing the whole log to a fresh Kafka-protocol broker;
//! 4. the rate of rebuilding each read model from the whole log.
//!
//! The server is the real `Application` (in this process, on a free port), against a fresh
//! database, with the relay publishing to a tansu broker started for the run (`.tools/`, see
//! `scripts/broker.sh`). 16 clients, each on an HTTP/1.1 connection of its own (`Client`),
//! book their own slots back to back (no conflicts), so the booking figure is the command
//! path's cost: HTTP, JWT, two aggregates (slot calendar, booking) decided and recorded with
//! their numbering, answered once recorded; the read models follow in the background. Client, server, broker and database share this machine's cores.
//!
//! Run: `cargo run --release --locked --bin bench-pipeline`
//! (`BENCH_SECONDS`, default 5; `BENCH_CLIENTS`, default 16; `BENCH_ROUNDS`, default 1: the
//! raw inserts and the bookings alternate in that many rounds sharing `BENCH_SECONDS` each, and
//! each round's ratio is printed too; `BENCH_NO_RELAY=1`: no relay during the first booking
//! load; `BENCH_AUDIT_BASELINE=1`: each round also books on a second server whose database
//! appends without the hash chain and which records personal data in clear, to measure what
//! tamper evidence and erasure cost the booking path; neither server runs a relay then;
//! `BENCH_AUDIT_BASELINE=2`: the same with the chain kept, for what sealing alone costs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hyper::{Method, StatusCode};
use parking_infra::config::KafkaConfig;
use parking_infra::relay::Relay;
use parking_tests::kafka::Broker;
use parking_tests::load::{env, Answer, Client};
use parking_tests::{hours_from_now, spawn_app_with};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// The server's allocator, as `parking-api` has it (`api/src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// CPU time (user + system, seconds) used by this process (client and server), by the
/// machine's PostgreSQL processes and by the broker, from `/proc` (zero where unreadable).
/// Differences over a load, divided by what it did, give its cost per operation: far steadier
/// than rates on a shared machine.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    app: f64,
    database: f64,
    broker: f64,
}

/// What every process of interest had used at one moment, by pid: a process that ends before
/// the next sample (a connection's backend) must not count as negative time.
struct CpuSample {
    app: f64,
    /// pid → (a PostgreSQL process, not the broker; seconds used).
    others: std::collections::HashMap<String, (bool, f64)>,
}

impl CpuSample {
    fn now() -> Self {
        // utime and stime, fields 14 and 15 of /proc/<pid>/stat, in USER_HZ (100 on Linux).
        let seconds = |stat: &str| -> Option<(String, f64)> {
            let (head, tail) = stat.rsplit_once(") ")?;
            let comm = head.split_once(" (")?.1.to_owned();
            let fields: Vec<&str> = tail.split(' ').collect();
            let ticks: f64 =
                fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some((comm, ticks / 100.0))
        };
        let app = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(seconds)
            .map_or(0.0, |(_, used)| used);
        let mut others = std::collections::HashMap::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let pid = entry.file_name().to_string_lossy().into_owned();
            match seconds(&stat) {
                Some((comm, used)) if comm.starts_with("postgres") => {
                    others.insert(pid, (true, used));
                }
                Some((comm, used)) if comm.starts_with("tansu") => {
                    others.insert(pid, (false, used));
                }
                _ => {}
            }
        }
        Self { app, others }
    }

    /// What was used from `before` to this sample by the processes alive now (those started
    /// since count whole; those that ended meanwhile are not seen).
    fn since(&self, before: &CpuSample) -> Cpu {
        let mut cpu = Cpu {
            app: self.app - before.app,
            ..Cpu::default()
        };
        for (pid, (database, used)) in &self.others {
            let earlier = before.others.get(pid).map_or(0.0, |(_, used)| *used);
            if *database {
                cpu.database += used - earlier;
            } else {
                cpu.broker += used - earlier;
            }
        }
        cpu
    }
}

impl Cpu {
    fn plus(self, other: Cpu) -> Cpu {
        Cpu {
            app: self.app + other.app,
            database: self.database + other.database,
            broker: self.broker + other.broker,
        }
    }

    /// Milliseconds per operation, for `count` operations.
    fn per(self, count: f64) -> String {
        let ms = |s: f64| s * 1000.0 / count.max(1.0);
        format!(
            "{:.3} ms ({:.3} this process, {:.3} PostgreSQL, {:.3} broker)",
            ms(self.app + self.database + self.broker),
            ms(self.app),
            ms(self.database),
            ms(self.broker)
        )
    }
}

/// A booking request's body, printed straight from its fields.
#[derive(serde::Serialize)]
struct BookingBody {
    slot_id: Uuid,
    start_time: DateTime<Utc>,
    end_time: DateTime<Utc>,
    vehicle_number: &'static str,
}

/// `POST /api/v1/bookings` of `slot_id` over `start..end`.
async fn book(
    client: &mut Client,
    slot_id: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Answer {
    let body = BookingBody {
        slot_id,
        start_time: start,
        end_time: end,
        vehicle_number: "AB-123-CD",
    };
    let body = serde_json::to_vec(&body).expect("a booking's body");
    client
        .send(Method::POST, "/api/v1/bookings", None, body.into())
        .await
}

/// Inserts/s, and the CPU they used.
async fn raw_inserts(database_url: &str, clients: u64, seconds: u64) -> anyhow::Result<(f64, Cpu)> {
    let pool = PgPoolOptions::new()
        .max_connections(clients as u32)
        .connect(database_url)
        .await?;
    sqlx::query("CREATE TABLE bench_raw (id uuid PRIMARY KEY, payload jsonb NOT NULL)")
        .execute(&pool)
        .await?;
    let done = Arc::new(AtomicU64::new(0));
    let started = CpuSample::now();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (pool, done) = (pool.clone(), done.clone());
            tokio::spawn(async move {
                // Held for the whole load: through the pool, each insert would also pay the
                // ping sqlx sends before handing out a connection (`test_before_acquire`).
                let mut db = pool.acquire().await.expect("a connection");
                while Instant::now() < deadline {
                    sqlx::query("INSERT INTO bench_raw (id, payload) VALUES ($1, $2)")
                        .bind(Uuid::new_v4())
                        .bind(serde_json::json!({"kind": "bench", "n": 1}))
                        .execute(&mut *db)
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
    let used = CpuSample::now().since(&started);
    // Leave nothing behind for the next load to pay for: no table for autovacuum to work on,
    // no dirty pages for a checkpoint to write in the middle of it.
    sqlx::query("DROP TABLE bench_raw").execute(&pool).await?;
    if let Err(e) = sqlx::query("CHECKPOINT").execute(&pool).await {
        eprintln!(
            "no CHECKPOINT between the loads ({e}): the next one may pay for this one's writes"
        );
    }
    // Its connections end here, not during the next load.
    pool.close().await;
    Ok((done.load(Ordering::Relaxed) as f64 / seconds as f64, used))
}

fn main() -> anyhow::Result<()> {
    // Per-request logs would measure the terminal. Set before any thread exists.
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "error,librdkafka=off,rdkafka=off");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let seconds = env("BENCH_SECONDS", 5);
    let clients = env("BENCH_CLIENTS", 16);
    let broker = Broker::start().await;
    let kafka = KafkaConfig {
        brokers: broker.address(),
        relay_in_server: false,
        observations_consumer: false,
        projections_from_kafka: false,
        partitions: 6,
        replication_factor: 1,
        linger_ms: 20,
        client_properties: Default::default(),
    };
    let app = Arc::new(
        spawn_app_with(&[
            ("KAFKA_BROKERS", &kafka.brokers),
            ("RELAY_ENABLED", "false"),
            ("DATABASE_MAX_CONNECTIONS", "40"),
        ])
        .await,
    );
    // The server's own log, as its in-server relay would follow it, not a second one with a
    // listener of its own (`RELAY_ENABLED=false` leaves the relay to this bench, which starts
    // it again on a fresh broker for 3.).
    let log = app.log.clone().expect("a server in this process");
    // BENCH_NO_RELAY=1 leaves the relay (and the broker's work) out of the booking load, to see
    // what publishing costs the command path.
    // BENCH_AUDIT_BASELINE=1 compares with a server without the hash chain and sealing, and
    // without a relay on either side (the baseline has no broker of its own).
    // (BENCH_AUDIT_BASELINE=2: the baseline keeps the chain, and only records personal data in
    // clear: what sealing alone costs.)
    let audit_baseline = env("BENCH_AUDIT_BASELINE", 0);
    let live_relay = (env("BENCH_NO_RELAY", 0) == 0 && audit_baseline == 0)
        .then(|| tokio::spawn(Relay::new(log.clone(), kafka.clone()).run()));
    let baseline = match audit_baseline {
        0 => None,
        kind => Some(Arc::new(baseline_app(kind == 1).await?)),
    };

    // The baseline and the booking load alternate, in rounds, so that a machine whose speed
    // drifts during the run (this shared one does, by 10 % and more) weighs on both alike; each
    // round gives its own ratio.
    let rounds = env("BENCH_ROUNDS", 1).clamp(1, seconds.max(1));
    let slice = seconds / rounds;
    let mut drivers = Drivers::prepare(&app, clients).await;
    let mut baseline_drivers = match &baseline {
        Some(baseline) => Some(Drivers::prepare(baseline, clients).await),
        None => None,
    };
    let mut raws = Vec::new();
    let mut loads = Vec::new();
    let mut baseline_loads = Vec::new();
    for round in 0..rounds {
        raws.push(raw_inserts(&app.database_url, clients, slice).await?);
        // With a baseline, the two servers take turns going first, and each load starts on a
        // quiet database (the one before it caught up and checkpointed).
        let baseline_first = round % 2 == 1;
        if let (Some(baseline), Some(drivers), true) =
            (&baseline, &mut baseline_drivers, baseline_first)
        {
            baseline_loads.push(bookings(baseline, drivers, slice).await);
            quiesce(baseline).await?;
        }
        loads.push(bookings(&app, &mut drivers, slice).await);
        if let (Some(baseline), Some(drivers), false) =
            (&baseline, &mut baseline_drivers, baseline_first)
        {
            quiesce(&app).await?;
            baseline_loads.push(bookings(baseline, drivers, slice).await);
        }
    }
    let audit_ratios: Vec<f64> = loads
        .iter()
        .zip(&baseline_loads)
        .map(|(with, without)| with.per_second / without.per_second)
        .collect();
    let baseline_load = (!baseline_loads.is_empty()).then(|| Load::combined(baseline_loads));
    let round_ratios: Vec<f64> = raws
        .iter()
        .zip(&loads)
        .map(|((raw, _), load)| load.per_second / raw)
        .collect();
    let raw = raws.iter().map(|(raw, _)| raw).sum::<f64>() / rounds as f64;
    let raw_cpu = raws
        .iter()
        .fold(Cpu::default(), |sum, (_, cpu)| sum.plus(*cpu));
    let store_fed = Load::combined(loads);
    let seconds = slice * rounds;
    let reads = booking_reads(&app, clients, seconds).await;

    // The same load with the read models fed from Kafka (ADR 0012), on a database and a
    // broker of its own (a relay refuses topics that hold another database's events).
    // Its broker lives as long as its server (to the end of the run): stopped earlier, the
    // server's projections would report a lost broker for the rest of the run.
    let (kafka_fed, _kafka_fed_broker) = {
        let broker = Broker::start().await;
        let app = Arc::new(
            spawn_app_with(&[
                ("KAFKA_BROKERS", &broker.address()),
                ("PROJECTION_SOURCE", "kafka"),
                ("DATABASE_MAX_CONNECTIONS", "40"),
            ])
            .await,
        );
        let mut drivers = Drivers::prepare(&app, clients).await;
        (bookings(&app, &mut drivers, seconds).await, broker)
    };

    // The relay: publish the whole log again, from position 0, to a fresh broker.
    if let Some(live_relay) = live_relay {
        live_relay.abort();
        let _ = live_relay.await;
    }
    let fresh = Broker::start().await;
    sqlx::query("UPDATE log_checkpoints SET position = 0 WHERE consumer = 'relay:kafka'")
        .execute(&app.db)
        .await?;
    let head = log.recorded_head().await?;
    let relay = tokio::spawn(
        Relay::new(
            log.clone(),
            KafkaConfig {
                brokers: fresh.address(),
                ..kafka.clone()
            },
        )
        .run(),
    );
    // Timed from its first checkpoint (leadership, topics and recovery take ~0.4 s before it)
    // to the head: whole batches, each acknowledged by the broker.
    let mut first: Option<(i64, Instant)> = None;
    loop {
        let at: i64 = sqlx::query_scalar(
            "SELECT COALESCE((SELECT position FROM log_checkpoints WHERE consumer = 'relay:kafka'), 0)",
        )
        .fetch_one(&app.db)
        .await?;
        if at > 0 && first.is_none() {
            first = Some((at, Instant::now()));
        }
        if at >= head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (from, since) = first.expect("the relay moved");
    let relayed = head - from;
    let relay_seconds = since.elapsed().as_secs_f64();
    relay.abort();

    // Rebuilds, one projection at a time, with the server still running.
    let mut rebuilds = Vec::new();
    for model in parking_projections::all() {
        let rebuilt = parking_projections::rebuild::rebuild(
            &parking_tests::event_log(&app.db),
            model.as_ref(),
            |_| {},
        )
        .await?;
        rebuilds.push((model.name(), rebuilt));
    }

    println!(
        "{clients} clients, {seconds} s each ({rounds} alternating rounds), same PostgreSQL server"
    );
    println!("raw single-row INSERT transactions/s : {raw:>8.0}");
    println!(
        "HTTP booking commands/s (201s)       : {:>8.0}  (failed: {}; {:.1} per desk batch)",
        store_fed.per_second, store_fed.failed, store_fed.batch
    );
    if store_fed.intervals.len() > 1 {
        let rates: Vec<String> = store_fed
            .intervals
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect();
        println!(
            "bookings/s per {} s of the load       : {}",
            INTERVAL.as_secs(),
            rates.join(", ")
        );
    }
    println!(
        "CPU per raw insert                   : {}",
        raw_cpu.per(raw * seconds as f64)
    );
    println!(
        "CPU per booking                      : {}",
        store_fed.cpu.per(store_fed.per_second * seconds as f64)
    );
    println!(
        "ratio booking / raw insert           : {:>8.2}",
        store_fed.per_second / raw
    );
    if rounds > 1 {
        let mut sorted = round_ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let each: Vec<String> = round_ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "ratio in each of {rounds} rounds of {slice} s : {} (median {:.2})",
            each.join(", "),
            sorted[sorted.len() / 2]
        );
    }
    println!(
        "HTTP GET of one booking/s (reference) : {reads:>7.0}  (booking / GET: {:.2})",
        store_fed.per_second / reads
    );
    println!("acknowledged -> read shows it (ms)   : {}", store_fed.lag());
    if let Some(without) = &baseline_load {
        let each: Vec<String> = audit_ratios.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "baseline (without them)              : {:>8.0} bookings/s (failed: {})",
            without.per_second, without.failed
        );
        println!(
            "CPU per booking without them         : {}",
            without.cpu.per(without.per_second * seconds as f64)
        );
        println!(
            "bookings/s with / without them       : {:>8.3} (each round: {})",
            store_fed.per_second / without.per_second,
            each.join(", ")
        );
        println!("acknowledged -> read, without them (ms): {}", without.lag());
    }
    println!(
        "with PROJECTION_SOURCE=kafka         : {:>8.0} bookings/s (failed: {}); acknowledged -> read shows it (ms): {}",
        kafka_fed.per_second,
        kafka_fed.failed,
        kafka_fed.lag()
    );
    println!(
        "relay, whole log to a fresh broker   : {:>8.0} events/s ({relayed} events in {relay_seconds:.2} s after the first batch)",
        relayed as f64 / relay_seconds
    );
    for (name, rebuilt) in rebuilds {
        println!(
            "rebuild {name:<10}                   : {:>8.0} events/s ({} events in {:.2} s)",
            rebuilt.events as f64 / rebuilt.seconds,
            rebuilt.events,
            rebuilt.seconds
        );
    }
    println!(
        "(database {} is left for inspection; scripts/test.sh drops it)",
        app.database_url
    );
    Ok(())
}

/// A second server, on a database of its own which records personal data in clear and, if
/// `unchained`, whose appends do not chain their events (the append of migration 0009, before
/// migration 0018 added the hash chain): the booking path without tamper evidence and erasure.
async fn baseline_app(unchained: bool) -> anyhow::Result<parking_tests::TestApp> {
    let app =
        parking_tests::spawn_app_configured(&[("DATABASE_MAX_CONNECTIONS", "40")], |config| {
            config.seal_personal_data = false
        })
        .await;
    const BEFORE_CHAIN: &str =
        include_str!("../../../infra/migrations/0009_append_chained_batches.sql");
    let start = BEFORE_CHAIN
        .find("CREATE FUNCTION parking_append_events(")
        .expect("migration 0009 creates the append");
    let end = start + BEFORE_CHAIN[start..].find("$$;").expect("its body ends") + 3;
    let before_chain =
        BEFORE_CHAIN[start..end].replacen("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1);
    if unchained {
        sqlx::query(&before_chain).execute(&app.db).await?;
    }
    Ok(app)
}

/// Lets `app`'s read models catch up with its log, then checkpoints the database server: the
/// next load does not pay for this one's work.
async fn quiesce(app: &parking_tests::TestApp) -> anyhow::Result<()> {
    let head = parking_infra::log::recorded_head(&app.db).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM log_checkpoints WHERE consumer LIKE 'projection:%' AND position < $1",
        )
        .bind(head)
        .fetch_one(&app.db)
        .await?;
        if behind == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sqlx::query("CHECKPOINT").execute(&app.db).await?;
    Ok(())
}

/// The interval of the booking rates `Load::intervals`.
const INTERVAL: Duration = Duration::from_secs(5);

/// Every this many bookings, a client measures the lag of its booking (`Load::lags`).
const LAG_PROBE_EVERY: i64 = 25;

/// What one booking load measured.
struct Load {
    per_second: f64,
    failed: u64,
    /// Milliseconds from a booking's 201 being received to a read of it with
    /// `X-Min-Position` answered (every `LAG_PROBE_EVERY`-th booking), ascending: the lag from
    /// acknowledgement to visibility, plus one `GET` of the booking under the same load.
    lags: Vec<f64>,
    /// Mean bookings per batch of the booking desk.
    batch: f64,
    /// Bookings made.
    bookings: f64,
    /// Bookings/s over each `INTERVAL` of the load.
    intervals: Vec<f64>,
    /// CPU used during the load.
    cpu: Cpu,
}

impl Load {
    /// Several loads (rounds of equal length) as one.
    fn combined(loads: Vec<Load>) -> Load {
        let rounds = loads.len().max(1) as f64;
        let batches: f64 = loads.iter().map(|l| l.bookings / l.batch.max(1.0)).sum();
        let mut all = Load {
            per_second: loads.iter().map(|l| l.per_second).sum::<f64>() / rounds,
            failed: loads.iter().map(|l| l.failed).sum(),
            lags: loads.iter().flat_map(|l| l.lags.iter().copied()).collect(),
            batch: 0.0,
            bookings: loads.iter().map(|l| l.bookings).sum(),
            intervals: loads
                .iter()
                .flat_map(|l| l.intervals.iter().copied())
                .collect(),
            cpu: loads.iter().fold(Cpu::default(), |sum, l| sum.plus(l.cpu)),
        };
        all.batch = all.bookings / batches.max(1.0);
        all.lags.sort_by(f64::total_cmp);
        all
    }

    fn lag(&self) -> String {
        let at = |p: f64| {
            let i = ((self.lags.len() as f64 * p) as usize).min(self.lags.len().saturating_sub(1));
            self.lags.get(i).copied().unwrap_or(f64::NAN)
        };
        format!(
            "p50 {:.2}, p99 {:.2}, max {:.2} ({} writes)",
            at(0.50),
            at(0.99),
            self.lags.last().copied().unwrap_or(f64::NAN),
            self.lags.len()
        )
    }
}

/// The booking desk's batches and the requests in them so far (`/metrics`).
async fn desk(app: &parking_tests::TestApp) -> (f64, f64) {
    let text = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("parking_booking_batches_total"),
        value("parking_booking_batched_requests_total"),
    )
}

/// The floor under any booking: `clients` drivers each read one of their bookings back to back
/// for `seconds` (`GET /api/v1/bookings/{id}`: token check, one indexed read, JSON). Reads/s.
async fn booking_reads(app: &Arc<parking_tests::TestApp>, clients: u64, seconds: u64) -> f64 {
    let fx = app.lot_with_slot().await;
    let mut readers = Vec::new();
    for c in 0..clients as i64 {
        let (token, _) = app.signed_in("user").await;
        let booked = app
            .book(&token, fx.slot_id, hours_from_now(c), hours_from_now(c + 1))
            .await;
        readers.push((token, format!("/api/v1/bookings/{}", booked.id())));
    }
    // Writes answer before the read models show them: wait for them once (`X-Min-Position`).
    for (token, path) in &readers {
        let reply = app.get(path, Some(token)).await;
        assert!(reply.status.is_success(), "{reply:?}");
    }
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for (token, path) in readers {
        let mut client = Client::connect(&app.address, &token).await;
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                // A plain read, without `X-Min-Position`.
                let read = client.get(&path, None).await;
                assert!(
                    read.status.is_success(),
                    "{:?}: {:?}",
                    read.status,
                    read.body
                );
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for worker in workers {
        worker.await.expect("a reading client");
    }
    done.load(Ordering::Relaxed) as f64 / seconds as f64
}

/// Drivers, each with 8 slots of its own to book.
struct Drivers {
    drivers: Vec<Driver>,
}

#[derive(Clone)]
struct Driver {
    token: String,
    slots: Vec<Uuid>,
    /// Bookings this driver attempted so far: where its next one goes.
    attempted: i64,
}

impl Drivers {
    const SLOTS_EACH: usize = 8;

    /// `clients` drivers on a lot of their own, with their slots.
    async fn prepare(app: &parking_tests::TestApp, clients: u64) -> Self {
        let owner = app.lot_with_slot().await;
        let mut slots = vec![owner.slot_id];
        for n in 1..clients as usize * Self::SLOTS_EACH {
            let path = format!("/api/v1/lots/{}/slots", owner.lot_id);
            let body = serde_json::json!({"label": format!("S{n}"), "slot_type": "standard"});
            slots.push(app.post(&path, Some(&owner.owner_token), body).await.id());
        }
        let mut drivers = Vec::new();
        for mine in slots.chunks(Self::SLOTS_EACH) {
            drivers.push(Driver {
                token: app.signed_in("user").await.0,
                slots: mine.to_vec(),
                attempted: 0,
            });
        }
        Self { drivers }
    }
}

/// Every driver books back to back for `seconds`, each where it left off.
async fn bookings(app: &Arc<parking_tests::TestApp>, drivers: &mut Drivers, seconds: u64) -> Load {
    let desk_before = desk(app).await;
    let started = CpuSample::now();
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let lags = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for driver in drivers.drivers.iter().cloned() {
        let mut client = Client::connect(&app.address, &driver.token).await;
        let (done, failed, lags) = (done.clone(), failed.clone(), lags.clone());
        workers.push(tokio::spawn(async move {
            let Driver {
                slots: mine,
                attempted: mut n,
                ..
            } = driver;
            while Instant::now() < deadline {
                // Round-robin over the driver's slots, one hour later per lap: never overlapping.
                let slot = mine[n as usize % mine.len()];
                let hour = n / mine.len() as i64;
                let booked = book(
                    &mut client,
                    slot,
                    hours_from_now(hour),
                    hours_from_now(hour + 1),
                )
                .await;
                if booked.status == StatusCode::CREATED {
                    done.fetch_add(1, Ordering::Relaxed);
                    if n % LAG_PROBE_EVERY == 0 {
                        let acknowledged = Instant::now();
                        let position = booked.position.expect("X-Event-Position");
                        let path = format!("/api/v1/bookings/{}", booked.id());
                        let read = client.get(&path, Some(position)).await;
                        assert!(
                            read.status.is_success(),
                            "{:?}: {:?}",
                            read.status,
                            read.body
                        );
                        lags.lock()
                            .unwrap()
                            .push(acknowledged.elapsed().as_secs_f64() * 1000.0);
                    }
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            n
        }));
    }
    // The rate over each interval of the load, to see whether it holds up as the data grows.
    let intervals = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut rates = Vec::new();
            let mut before = 0;
            while Instant::now() + INTERVAL <= deadline {
                tokio::time::sleep(INTERVAL).await;
                let now = done.load(Ordering::Relaxed);
                rates.push((now - before) as f64 / INTERVAL.as_secs_f64());
                before = now;
            }
            rates
        })
    };
    for (driver, worker) in drivers.drivers.iter_mut().zip(workers) {
        driver.attempted = worker.await.expect("a booking client");
    }
    let intervals = intervals.await.expect("interval rates");
    let cpu = CpuSample::now().since(&started);
    let desk_after = desk(app).await;
    let mut lags = lags.lock().unwrap().clone();
    lags.sort_by(f64::total_cmp);
    let made = done.load(Ordering::Relaxed) as f64;
    Load {
        per_second: made / seconds as f64,
        failed: failed.load(Ordering::Relaxed),
        lags,
        batch: (desk_after.1 - desk_before.1) / (desk_after.0 - desk_before.0).max(1.0),
        bookings: made,
        cpu,
        intervals,
    }
}
