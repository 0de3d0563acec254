//! Benchmark of the live hub (`GET /ws`), against `parking-api serve` in a process of its own
//! (the release build next to this binary) on a fresh database:
//!
//! 1. **Fan-out latency.** `BENCH_CLIENTS` WebSocket clients (default 1000) follow one lot;
//!    `BENCH_CHANGES` changes (default 200, one every 50 ms) are made over HTTP: a camera's
//!    observation flipping a slot, one event each. For every change and every client, the time
//!    from the HTTP answer of the change to the message's arrival at that client: p50, p99 and
//!    max, and per change the time until every client had it. First with one client: the
//!    baseline, measured in the same run.
//! 2. **Memory per idle connection.** The server's resident memory (`VmRSS`) with no
//!    WebSocket open, then with `BENCH_IDLE` idle ones (default 10,000): the difference per
//!    connection.
//!
//! Run: `cargo build --release --locked --bin parking-api --bin bench-ws && target/release/bench-ws`
//! (`ulimit -n` must allow `BENCH_IDLE` + 100 descriptors; it is 20000 on this machine kind).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hyper::{Method, StatusCode};
use parking_tests::load::{env, Client};
use parking_tests::{fresh_database, ServerProcess, TestApp};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

/// The part of a message the clients read.
#[derive(Deserialize)]
struct Positioned {
    position: Option<i64>,
    #[serde(rename = "type")]
    kind: String,
}

async fn socket(address: &str, token: &str, query: &str) -> WebSocketStream<TcpStream> {
    let host = address.trim_start_matches("http://");
    let mut request = format!("ws://{host}/ws?{query}")
        .into_client_request()
        .expect("a WebSocket URL");
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).expect("a header");
    request.headers_mut().insert("authorization", bearer);
    let tcp = TcpStream::connect(host).await.expect("a connection");
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    let (stream, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("the upgrade");
    stream
}

/// A subscriber: reads until it has the message at the position `last` names; returns when
/// each observation's message arrived, by position.
async fn subscriber(
    mut stream: WebSocketStream<TcpStream>,
    mut last: watch::Receiver<i64>,
) -> Vec<(i64, Instant)> {
    let mut arrivals = Vec::new();
    loop {
        if arrivals.last().is_some_and(|(p, _)| p >= &*last.borrow()) {
            return arrivals;
        }
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = last.changed() => continue,
        };
        let arrived = Instant::now();
        let Some(Ok(Message::Text(text))) = frame else {
            match frame {
                Some(Ok(_)) => continue,
                _ => panic!("a subscriber lost its connection"),
            }
        };
        let message: Positioned = serde_json::from_str(text.as_str()).expect("JSON");
        if let (Some(position), "SlotOccupancyObserved") = (message.position, message.kind.as_str())
        {
            arrivals.push((position, arrived));
        }
    }
}

struct Figures {
    /// Milliseconds, for every (change, client).
    each: Vec<f64>,
    /// Milliseconds until the last client had it, per change.
    all: Vec<f64>,
}

impl Figures {
    fn print(&mut self, name: &str) {
        let (each, all) = (&mut self.each, &mut self.all);
        println!(
            "  {name:<13}: p50 {:>6.1} ms, p99 {:>6.1} ms, max {:>6.1} ms; every client: p50 {:>6.1} ms, p99 {:>6.1} ms  ({} deliveries)",
            quantile(each, 0.5),
            quantile(each, 0.99),
            quantile(each, 1.0),
            quantile(all, 0.5),
            quantile(all, 0.99),
            each.len(),
        );
    }
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 - 1.0) * q).round() as usize;
    values[index]
}

/// What each test needs of the scene.
struct Scene {
    app: TestApp,
    watcher: String,
    service: String,
    lot_id: Uuid,
    slot_id: Uuid,
}

/// `clients` subscribers of the lot, `changes` flips of its slot: the latencies.
async fn fan_out(scene: &Scene, clients: u64, changes: u64) -> Figures {
    let query = format!("subscribe=lot:{}", scene.lot_id);
    let (last, watching) = watch::channel(i64::MAX);
    let mut readers = Vec::new();
    for _ in 0..clients {
        let mut stream = socket(&scene.app.address, &scene.watcher, &query).await;
        // `connected`: live from here.
        let _ = stream.next().await;
        readers.push(tokio::spawn(subscriber(stream, watching.clone())));
    }
    let mut http = Client::connect(&scene.app.address, &scene.service).await;
    let path = format!("/api/v1/slots/{}/occupancy", scene.slot_id);
    let mut answered = HashMap::new();
    let mut every = tokio::time::interval(Duration::from_millis(50));
    let mut position = 0;
    for change in 0..changes {
        every.tick().await;
        let body = json!({
            "occupied": change % 2 == 0, "confidence": 0.9, "observed_at": chrono::Utc::now()
        });
        let answer = http
            .send(Method::POST, &path, None, body.to_string().into())
            .await;
        let at = Instant::now();
        assert_eq!(answer.status, StatusCode::OK);
        position = answer.position.expect("a position");
        answered.insert(position, at);
    }
    last.send(position).expect("subscribers");
    let mut each = Vec::new();
    let mut everyone: HashMap<i64, Instant> = HashMap::new();
    for reader in readers {
        let arrivals = tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("every subscriber gets every change")
            .expect("a subscriber");
        assert_eq!(
            arrivals.len() as u64,
            changes,
            "a subscriber missed a change"
        );
        for (position, arrived) in arrivals {
            let sent = answered[&position];
            each.push(arrived.saturating_duration_since(sent).as_secs_f64() * 1e3);
            let latest = everyone.entry(position).or_insert(arrived);
            *latest = (*latest).max(arrived);
        }
    }
    let all = (everyone.iter())
        .map(|(p, at)| at.saturating_duration_since(answered[p]).as_secs_f64() * 1e3)
        .collect();
    Figures { each, all }
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    (status.lines())
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The server's memory per idle connection, in KiB, with `count` of them.
async fn idle_memory(scene: &Scene, pid: u32, count: u64) -> (u64, u64, f64) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(pid);
    let mut open = Vec::with_capacity(count as usize);
    let address = scene.app.address.clone();
    let mut pending = futures::stream::iter(0..count)
        .map(|_| {
            let (address, token) = (address.clone(), scene.watcher.clone());
            async move { socket(&address, &token, "").await }
        })
        .buffer_unordered(64);
    while let Some(stream) = pending.next().await {
        open.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 / count as f64;
    drop(open);
    (before, after, per)
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let clients = env("BENCH_CLIENTS", 1000);
    let changes = env("BENCH_CHANGES", 200);
    let idle = env("BENCH_IDLE", 10_000);
    let database_url = fresh_database().await;
    let limit = (idle + clients + 100).to_string();
    let server = ServerProcess::start(
        &database_url,
        &[
            ("WS_MAX_CONNECTIONS", limit.as_str()),
            ("RUST_LOG", "error"),
        ],
    )
    .await;
    let app = TestApp::connect(server.address.clone(), database_url).await;
    let fx = app.lot_with_slot().await;
    let (watcher, _) = app.signed_in("user").await;
    let (service, _) = app.service_account().await;
    let scene = Scene {
        app,
        watcher,
        service,
        lot_id: fx.lot_id,
        slot_id: fx.slot_id,
    };

    println!("live hub, {changes} changes (one every 50 ms), HTTP answer to arrival:");
    fan_out(&scene, 1, changes).await.print("1 client");
    fan_out(&scene, clients, changes)
        .await
        .print(&format!("{clients} clients"));

    let (before, after, per) = idle_memory(&scene, server.pid(), idle).await;
    println!(
        "memory: {before} KiB with no WebSocket, {after} KiB with {idle} idle ones: {per:.1} KiB per connection"
    );
    Ok(())
}
