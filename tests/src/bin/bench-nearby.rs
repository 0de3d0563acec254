//! Benchmark of nearby search at 100k lots, and of occupancy observations, over HTTP:
//!
//! 1. `GET /api/v1/lots/nearby` (5 km, 20 lots) at `BENCH_LOTS` lots (default 100,000) spread
//!    over a country the size of France (70 % around 60 towns, 30 % anywhere), each lot with 8
//!    slots, asked at towns and anywhere: the box query (`NEARBY_SEARCH=box`) and the PostGIS
//!    query (`NEARBY_SEARCH=postgis`), two servers on one database, alternating in
//!    `BENCH_ROUNDS` rounds: p50, p99, max and requests/s for each, and how many answers
//!    differ between the two (none expected).
//! 2. `POST /api/v1/slots/{slot_id}/occupancy` by the vision service, observations that change
//!    the slot (each records an event) and observations that repeat its state (none does):
//!    accepted per second.
//!
//! The lots are written straight into the read models (`rm_lots`, `rm_slots`): the search reads
//! only those, and a history of 100k registrations would take minutes to make. The slots of
//! part 2 are made through the API, since observations are decided on their aggregates.
//! Needs PostGIS on the database server (`scripts/test.sh` installs it).
//!
//! Run: `cargo run --release --locked --bin bench-nearby` (`BENCH_SECONDS`, default 10;
//! `BENCH_ROUNDS`, default 2; `BENCH_CLIENTS`, default 1 for search (latency), and
//! `BENCH_OBSERVERS`, default 8, for observations; `BENCH_LOTS`, default 100000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use parking_tests::load::{env, Client};
use parking_tests::{spawn_app_with, spawn_second_node, TestApp};
use serde_json::json;
use uuid::Uuid;

/// xorshift64*: the same lots and questions every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.next()
    }
}

/// The country: latitudes and longitudes of a box the size of France.
const SOUTH: f64 = 42.5;
const NORTH: f64 = 51.0;
const WEST: f64 = -4.5;
const EAST: f64 = 8.0;

struct Country {
    towns: Vec<(f64, f64)>,
}

impl Country {
    fn new(rng: &mut Rng) -> Self {
        let towns = (0..60)
            .map(|_| (rng.between(SOUTH, NORTH), rng.between(WEST, EAST)))
            .collect();
        Self { towns }
    }

    /// 70 % within about 15 km of a town, 30 % anywhere.
    fn place(&self, rng: &mut Rng) -> (f64, f64) {
        if rng.next() < 0.7 {
            let (lat, lng) = self.towns[(rng.next() * self.towns.len() as f64) as usize];
            // The sum of three uniforms: denser at the centre.
            let spread = |rng: &mut Rng| (rng.next() + rng.next() + rng.next() - 1.5) * 0.1;
            (lat + spread(rng), lng + spread(rng) * 1.4)
        } else {
            (rng.between(SOUTH, NORTH), rng.between(WEST, EAST))
        }
    }
}

async fn fill(app: &TestApp, country: &Country, rng: &mut Rng, lots: u64) -> anyhow::Result<()> {
    let owner = Uuid::new_v4();
    for chunk in 0..lots.div_ceil(10_000) {
        let n = (lots - chunk * 10_000).min(10_000) as usize;
        let (mut ids, mut lats, mut lngs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let (lat, lng) = country.place(rng);
            ids.push(Uuid::new_v4());
            lats.push(lat);
            lngs.push(lng);
        }
        sqlx::query(
            "INSERT INTO rm_lots (id, owner_id, name, address, city, latitude, longitude,
                 hourly_rate_cents, currency, is_active, created_at, updated_at, version)
             SELECT n.id, $4, 'Lot ' || n.id, '1 Bench Street', 'Benchville', n.lat, n.lng,
                    250, 'EUR', true, now(), now(), 1
               FROM UNNEST($1::uuid[], $2::float8[], $3::float8[]) AS n(id, lat, lng)",
        )
        .bind(&ids)
        .bind(&lats)
        .bind(&lngs)
        .bind(owner)
        .execute(&app.db)
        .await?;
    }
    sqlx::query(
        "INSERT INTO rm_slots (id, lot_id, label, slot_type, created_at, version)
         SELECT gen_random_uuid(), l.id, 'S' || s, 'standard', now(), 1
           FROM rm_lots l, generate_series(1, 8) s",
    )
    .execute(&app.db)
    .await?;
    sqlx::query("ANALYZE rm_lots").execute(&app.db).await?;
    sqlx::query("ANALYZE rm_slots").execute(&app.db).await?;
    Ok(())
}

/// Questions: 70 % at a town, 30 % anywhere.
fn questions(country: &Country, rng: &mut Rng, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let (lat, lng) = if rng.next() < 0.7 {
                let (lat, lng) = country.towns[(rng.next() * country.towns.len() as f64) as usize];
                (
                    lat + rng.between(-0.05, 0.05),
                    lng + rng.between(-0.05, 0.05),
                )
            } else {
                (rng.between(SOUTH, NORTH), rng.between(WEST, EAST))
            };
            format!("/api/v1/lots/nearby?lat={lat:.5}&lng={lng:.5}&radius_km=5&limit=20")
        })
        .collect()
}

#[derive(Default)]
struct Latencies(Vec<Duration>);

impl Latencies {
    fn quantile(&mut self, q: f64) -> f64 {
        self.0.sort();
        let i = ((self.0.len() as f64 - 1.0) * q).round() as usize;
        self.0.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    }
}

/// `clients` clients ask `questions` round robin for `seconds`; every answer's latency.
async fn search(
    address: &str,
    questions: &Arc<Vec<String>>,
    clients: u64,
    seconds: f64,
) -> Latencies {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut workers = Vec::new();
    for c in 0..clients as usize {
        let (address, questions) = (address.to_owned(), questions.clone());
        workers.push(tokio::spawn(async move {
            let mut client = Client::connect(&address, "").await;
            let mut seen = Vec::new();
            let mut i = c * 7919;
            while Instant::now() < deadline {
                let started = Instant::now();
                let answer = client.get(&questions[i % questions.len()], None).await;
                assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
                seen.push(started.elapsed());
                i += 1;
            }
            seen
        }));
    }
    let mut all = Latencies::default();
    for worker in workers {
        all.0.extend(worker.await.expect("a search client"));
    }
    all
}

/// The ids a nearby answer lists, in order.
async fn ids(client: &mut Client, question: &str) -> Vec<String> {
    let answer = client.get(question, None).await;
    let body: serde_json::Value = serde_json::from_slice(&answer.body).expect("JSON");
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|lot| lot["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Observations accepted per second by `observers` clients over their own slots, changing the
/// slot's state each time or repeating it.
async fn observations(
    app: &TestApp,
    slots: &Arc<Vec<Uuid>>,
    token: &str,
    observers: u64,
    seconds: f64,
    change: bool,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut workers = Vec::new();
    for o in 0..observers as usize {
        let (address, token, slots) = (app.address.clone(), token.to_owned(), slots.clone());
        workers.push(tokio::spawn(async move {
            let mut client = Client::connect(&address, &token).await;
            let mine: Vec<Uuid> = slots.iter().skip(o).step_by(observers as usize).copied().collect();
            let mut done = 0u64;
            while Instant::now() < deadline {
                let slot = mine[done as usize % mine.len()];
                let lap = done / mine.len() as u64;
                let occupied = !change || lap.is_multiple_of(2);
                let body = json!({"occupied": occupied, "confidence": 0.9, "observed_at": chrono::Utc::now()});
                let path = format!("/api/v1/slots/{slot}/occupancy");
                let answer = client.send(Method::POST, &path, None, serde_json::to_vec(&body).unwrap().into()).await;
                assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for worker in workers {
        total += worker.await.expect("an observer");
    }
    total as f64 / seconds
}

fn main() -> anyhow::Result<()> {
    parking_tests::load::bench_main(run)
}

async fn run() -> anyhow::Result<()> {
    let seconds = env("BENCH_SECONDS", 10) as f64;
    let rounds = env("BENCH_ROUNDS", 2).max(1);
    let clients = env("BENCH_CLIENTS", 1).max(1);
    let observers = env("BENCH_OBSERVERS", 8).max(1);
    let lots = env("BENCH_LOTS", 100_000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let country = Country::new(&mut rng);

    let boxed = spawn_app_with(&[]).await;
    let started = Instant::now();
    fill(&boxed, &country, &mut rng, lots).await?;
    println!(
        "{lots} lots with 8 slots each written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let postgis = spawn_second_node(&boxed, &[("NEARBY_SEARCH", "postgis")]).await;
    println!(
        "PostGIS column and GiST index made in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let questions = Arc::new(questions(&country, &mut rng, 5_000));
    let (mut box_client, mut gis_client) = (
        Client::connect(&boxed.address, "").await,
        Client::connect(&postgis.address, "").await,
    );
    let mut differ = 0;
    for question in questions.iter().take(500) {
        if ids(&mut box_client, question).await != ids(&mut gis_client, question).await {
            differ += 1;
        }
    }
    // Warm both servers' connection pools and PostgreSQL's caches.
    search(&boxed.address, &questions, clients, 1.0).await;
    search(&postgis.address, &questions, clients, 1.0).await;

    let share = seconds / rounds as f64 / 2.0;
    let (mut box_all, mut gis_all) = (Latencies::default(), Latencies::default());
    for _ in 0..rounds {
        box_all
            .0
            .extend(search(&boxed.address, &questions, clients, share).await.0);
        gis_all
            .0
            .extend(search(&postgis.address, &questions, clients, share).await.0);
    }
    let span = seconds / 2.0;
    println!("nearby search, {lots} lots, radius 5 km, 20 lots, {clients} client(s):");
    for (name, all) in [
        ("box (NEARBY_SEARCH=box)", &mut box_all),
        ("PostGIS (NEARBY_SEARCH=postgis)", &mut gis_all),
    ] {
        let count = all.0.len();
        println!(
            "  {name:<32}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {:.0} requests/s",
            all.quantile(0.5),
            all.quantile(0.99),
            all.quantile(1.0),
            count as f64 / span
        );
    }
    println!("  answers that differ between the two, of 500: {differ}");

    // Observations: a lot of 64 slots made through the API.
    let fx = boxed.lot_with_slot().await;
    let mut slots = vec![fx.slot_id];
    for n in 1..64 {
        let slot = boxed
            .post(
                &format!("/api/v1/lots/{}/slots", fx.lot_id),
                Some(&fx.owner_token),
                json!({"label": format!("B{n}"), "slot_type": "standard"}),
            )
            .await;
        slots.push(slot.id());
    }
    let slots = Arc::new(slots);
    let (service, _) = boxed.service_account().await;
    observations(&boxed, &slots, &service, observers, 1.0, true).await;
    let changed = observations(&boxed, &slots, &service, observers, seconds / 2.0, true).await;
    let unchanged = observations(&boxed, &slots, &service, observers, seconds / 2.0, false).await;
    println!("occupancy observations over HTTP, {observers} clients, 64 slots:");
    println!("  changing the slot (one event each)  : {changed:.0} accepted/s");
    println!("  repeating its state (no event)      : {unchanged:.0} accepted/s");
    Ok(())
}
