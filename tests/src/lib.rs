//! # parking-tests
//!
//! End-to-end tests: each starts the real application (`Application::build`, the same code as
//! `parking-api serve`) on a free port against its own fresh PostgreSQL database, and talks to
//! it over HTTP like any client. Nothing of ours is mocked.
//!
//! `TEST_DATABASE_URL` points at the server to create databases on (default: the local one).
//! Each test database is named `parking_test_<uuid>`; `scripts/test.sh` drops them.
#![forbid(unsafe_code)]

pub mod history;
pub mod kafka;
pub mod load;
pub mod stripe;
pub mod vision;
pub mod ws;

use std::collections::HashMap;

use chrono::{DateTime, Duration, DurationRound, Utc};
use parking_api::Application;
use parking_infra::{Config, EventLog};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

pub const JWT_SECRET: &str = "test-secret-of-a-decent-length-0123456789";
pub const PASSWORD: &str = "correct horse battery";

pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// A pool on the test's own database, to look at what the app stored.
    pub db: PgPool,
    pub database_url: String,
    /// The event log of a server started in this process (one listener on the database keeps
    /// its head); `None` for a server in a process of its own.
    pub log: Option<EventLog>,
    /// The highest `X-Event-Position` this client was answered with. Its `GET`s send it as
    /// `X-Min-Position`, as a client app that reads its own writes does: writes answer once
    /// recorded, and the read models follow.
    seen: std::sync::atomic::AtomicI64,
}

/// A response: status, headers we care about, and the JSON body (or `Null`).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub content_type: String,
    pub request_id: Option<String>,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn id(&self) -> Uuid {
        self.body["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no id in {self:?}"))
    }

    /// The `X-Event-Position` of a write's answer.
    pub fn position(&self) -> Option<i64> {
        self.headers
            .get("x-event-position")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// Asserts a problem+json answer with this status and code.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.content_type, "application/problem+json", "{self:?}");
        assert_eq!(self.code(), code, "{self:?}");
        assert_eq!(self.body["status"], status, "{self:?}");
        assert!(
            self.body["type"]
                .as_str()
                .is_some_and(|t| t.ends_with(code)),
            "{self:?}"
        );
        assert!(self.body["detail"].as_str().is_some(), "{self:?}");
    }
}

/// Starts the app on a fresh database and returns once it listens.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// [`spawn_app`] with extra configuration variables.
pub async fn spawn_app_with(settings: &[(&'static str, &str)]) -> TestApp {
    spawn_node(fresh_database().await, settings).await
}

/// [`spawn_app_with`], with the configuration then changed by `configure` (for what no
/// variable sets).
pub async fn spawn_app_configured(
    settings: &[(&'static str, &str)],
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    spawn_node_configured(fresh_database().await, settings, configure).await
}

/// Another node of the same deployment: a second server on `app`'s database, with its own
/// projector and relay.
pub async fn spawn_second_node(app: &TestApp, settings: &[(&'static str, &str)]) -> TestApp {
    spawn_node(app.database_url.clone(), settings).await
}

async fn spawn_node(database_url: String, settings: &[(&'static str, &str)]) -> TestApp {
    spawn_node_configured(database_url, settings, |_| {}).await
}

async fn spawn_node_configured(
    database_url: String,
    settings: &[(&'static str, &str)],
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let vars: HashMap<&str, String> = server_settings(&database_url, "127.0.0.1:0")
        .into_iter()
        .chain(settings.iter().map(|(k, v)| (*k, v.to_string())))
        .collect();
    let mut config = Config::from_lookup(|name| vars.get(name).cloned()).expect("test config");
    configure(&mut config);
    parking_infra::telemetry::init(parking_infra::telemetry::LogFormat::Pretty);
    let app = Application::build(&config).await.expect("build app");
    let address = format!("http://127.0.0.1:{}", app.port());
    let log = app.log().clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        log: Some(log),
        ..TestApp::connect(address, database_url).await
    }
}

impl TestApp {
    /// The value of a counter or gauge on the server's `/metrics` (`name` with its labels, if
    /// it has any: `name{label="value"}`).
    pub async fn metric(&self, name: &str) -> u64 {
        self.metric_if_any(name)
            .await
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    /// [`TestApp::metric`], or `None` while the server has not reported it (a label set
    /// appears when first counted).
    pub async fn metric_if_any(&self, name: &str) -> Option<u64> {
        let url = format!("{}/metrics", self.address);
        let text = self.client.get(url).send().await.unwrap().text().await;
        let text = text.unwrap();
        let line = text.lines().find(|l| l.starts_with(&format!("{name} ")))?;
        Some(line.rsplit(' ').next().unwrap().parse().unwrap())
    }
}

/// A new database (`parking_test_<uuid>`) with every migration applied; returns its URL.
///
/// It is a copy of a template database that the first test of a run migrates
/// (`migrated_template`): copying a database is a file copy in the server, several times
/// cheaper than running the migrations for every test.
pub async fn fresh_database() -> String {
    let server = server_url();
    let mut admin = PgConnection::connect(&format!("{server}/postgres"))
        .await
        .expect("connect to Postgres");
    let template = migrated_template(&mut admin, &server).await;
    let db_name = format!("parking_test_{}", Uuid::new_v4().simple());
    sqlx::query(&format!(
        r#"CREATE DATABASE "{db_name}" TEMPLATE "{template}""#
    ))
    .execute(&mut admin)
    .await
    .expect("create test database");
    format!("{server}/{db_name}")
}

/// The name of a database holding exactly this build's migrations, made if missing:
/// `parking_test_template_<digest of the migrations>`, so a changed migration gets a template
/// of its own. Test processes run in parallel and any may be first: each builds under a name of
/// its own and renames it into place, which only one can do; the others drop theirs. (Named
/// `parking_test_*`, it is dropped with the test databases by `scripts/test.sh`.)
async fn migrated_template(admin: &mut PgConnection, server: &str) -> String {
    let name = format!("parking_test_template_{:016x}", migrations_digest());
    if database_exists(admin, &name).await {
        return name;
    }
    let building = format!("parking_test_building_{}", Uuid::new_v4().simple());
    sqlx::query(&format!(r#"CREATE DATABASE "{building}""#))
        .execute(&mut *admin)
        .await
        .expect("create the template database");
    let pool = PgPool::connect(&format!("{server}/{building}"))
        .await
        .expect("connect to the template database");
    parking_infra::db::migrate(&pool)
        .await
        .expect("migrate the template database");
    // A database is copied, and renamed, only with no one connected to it. A closed pool's
    // backends may take a moment to go, or linger (a connection handed back after the close),
    // and PostgreSQL waits 5 s for them at each try: the building database is this process's
    // alone, so whatever is still connected to it is ended first.
    pool.close().await;
    let rename = format!(r#"ALTER DATABASE "{building}" RENAME TO "{name}""#);
    let end_lingering = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                          WHERE datname = $1 AND pid <> pg_backend_pid()";
    let mut renamed = Ok(Default::default());
    for _ in 0..20 {
        let _: Result<i64, _> = sqlx::query_scalar(end_lingering)
            .bind(&building)
            .fetch_one(&mut *admin)
            .await;
        renamed = sqlx::query(&rename).execute(&mut *admin).await;
        let still_in_use = matches!(&renamed, Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55006"));
        if !still_in_use {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if renamed.is_err() {
        sqlx::query(&format!(r#"DROP DATABASE "{building}" WITH (FORCE)"#))
            .execute(&mut *admin)
            .await
            .expect("drop a template that lost the race");
        assert!(database_exists(admin, &name).await, "{renamed:?}");
    }
    name
}

async fn database_exists(admin: &mut PgConnection, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(admin)
        .await
        .expect("look up a database")
}

/// FNV-1a over every migration's version and checksum: stable across builds and processes.
fn migrations_digest() -> u64 {
    let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
    for migration in parking_infra::db::MIGRATOR.iter() {
        let version = migration.version.to_le_bytes();
        for byte in version.iter().chain(migration.checksum.iter()) {
            digest = (digest ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    digest
}

/// The configuration every test server gets.
fn server_settings(database_url: &str, bind: &str) -> HashMap<&'static str, String> {
    HashMap::from([
        ("DATABASE_URL", database_url.to_owned()),
        ("DATABASE_MAX_CONNECTIONS", "10".to_owned()),
        ("BIND_ADDR", bind.to_owned()),
        ("JWT_SECRET", JWT_SECRET.to_owned()),
        ("BCRYPT_COST", "4".to_owned()),
    ])
}

/// The `parking-api` binary, built with the workspace: next to a benchmark's binary
/// (`target/release/`), or above a test's (`target/debug/deps/`).
pub fn parking_api() -> std::process::Command {
    let exe = std::env::current_exe().expect("the running executable");
    let binary = (exe.ancestors().skip(1).take(2))
        .map(|dir| dir.join("parking-api"))
        .find(|path| path.exists())
        .expect("parking-api is built with the workspace's tests (cargo nextest run --workspace)");
    std::process::Command::new(binary)
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// SIGTERM to `process`, as an orchestrator stops a container; waits at most `patience` for
/// it to exit. Whether it exited successfully, or `None` if it still runs.
pub fn terminate(process: &mut std::process::Child, patience: std::time::Duration) -> Option<bool> {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &process.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
    let deadline = std::time::Instant::now() + patience;
    loop {
        if let Some(exit) = process.try_wait().expect("wait for the process") {
            return Some(exit.success());
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The `parking-api` binary run as a separate process, for tests that kill it.
pub struct ServerProcess {
    process: std::process::Child,
    pub address: String,
    /// Where the process's stdout and stderr go.
    log: std::path::PathBuf,
}

impl ServerProcess {
    /// Starts `parking-api serve` (built next to the tests) on a free port and waits until it
    /// answers `/health`.
    pub async fn start(database_url: &str, settings: &[(&str, &str)]) -> Self {
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("parking-api-{port}-{}.log", Uuid::new_v4()));
        let out = std::fs::File::create(&log).expect("create the server's log file");
        let err = out.try_clone().expect("share the server's log file");
        let process = parking_api()
            .arg("serve")
            .envs(server_settings(database_url, &bind))
            // TEST_SERVER_LOG shows the server's own log lines (e.g. `parking_infra=info`);
            // a test's own RUST_LOG setting wins.
            .env(
                "RUST_LOG",
                std::env::var("TEST_SERVER_LOG").unwrap_or_else(|_| "error".into()),
            )
            .envs(settings.iter().copied())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start parking-api");
        let address = format!("http://{bind}");
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while client
            .get(format!("{address}/health"))
            .send()
            .await
            .map_or(true, |r| !r.status().is_success())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "parking-api did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Self {
            process,
            address,
            log,
        }
    }

    /// The process id (to read its `/proc` entries).
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// What the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as an orchestrator stops a container; waits (at most `patience`) for the
    /// process to exit and returns whether it exited successfully.
    pub fn terminate(&mut self, patience: std::time::Duration) -> bool {
        terminate(&mut self.process, patience)
            .unwrap_or_else(|| panic!("parking-api still runs {patience:?} after SIGTERM"))
    }

    /// SIGKILL: no shutdown of any kind.
    pub fn kill(mut self) {
        self.process.kill().expect("kill parking-api");
        self.process.wait().expect("reap parking-api");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- log of parking-api at {}:\n{}",
                self.address,
                self.log()
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Rebuilds every read model from the event store and checks the result equals what the
/// projections had built, row for row.
/// The log of a test database, as a process of the deployment reads it (its personal data
/// revealed with the key the database keeps, as servers without `DATA_KEY_FILE` do).
pub fn event_log(db: &PgPool) -> EventLog {
    EventLog::new(
        db.clone(),
        parking_infra::personal::DataKeys::new(db.clone(), None),
    )
}

pub async fn assert_read_models_equal_a_rebuild(db: &PgPool) {
    let live = read_model_rows(db).await;
    for model in parking_projections::all() {
        parking_projections::rebuild::rebuild(&event_log(db), model.as_ref(), |_| {})
            .await
            .expect("rebuild");
    }
    assert_eq!(
        live,
        read_model_rows(db).await,
        "read models differ from a rebuild"
    );
}

/// Every read-model table, as JSON rows in a stable order.
pub async fn read_model_rows(db: &PgPool) -> Vec<(String, Value)> {
    let mut all = Vec::new();
    let models = parking_projections::all();
    for table in models.iter().flat_map(|m| m.tables().iter()) {
        let rows: Value = sqlx::query_scalar(&format!(
            "SELECT COALESCE(json_agg(row_to_json(t) ORDER BY row_to_json(t)::text), '[]'::json) FROM {table} t"
        ))
        .fetch_one(db)
        .await
        .unwrap();
        all.push((table.to_string(), rows));
    }
    all
}

/// A whole hour, fixed at the first call of the process, plus `hours`: future, minute-aligned,
/// and the same base for every call of a test even when the clock passes an hour meanwhile.
pub fn hours_from_now(hours: i64) -> DateTime<Utc> {
    static BASE: std::sync::OnceLock<DateTime<Utc>> = std::sync::OnceLock::new();
    let base = BASE.get_or_init(|| {
        Utc::now().duration_trunc(Duration::hours(1)).unwrap() + Duration::hours(1)
    });
    *base + Duration::hours(hours)
}

impl TestApp {
    /// A client of the server at `address` using the database at `database_url`.
    pub async fn connect(address: String, database_url: String) -> Self {
        TestApp {
            address,
            client: reqwest::Client::new(),
            db: PgPool::connect(&database_url)
                .await
                .expect("connect to test database"),
            database_url,
            seen: std::sync::atomic::AtomicI64::new(0),
            log: None,
        }
    }

    /// The highest `X-Event-Position` this client has been answered with.
    pub fn seen_position(&self) -> i64 {
        self.seen.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads `response`, noting its `X-Event-Position`.
    async fn answer(&self, response: reqwest::Response) -> Reply {
        let reply = Self::reply(response).await;
        if let Some(position) = reply.position() {
            self.seen
                .fetch_max(position, std::sync::atomic::Ordering::Relaxed);
        }
        reply
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let seen = self.seen_position();
        let reads = method == Method::GET;
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if reads && seen > 0 {
            request = request.header("x-min-position", seen.to_string());
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.answer(request.send().await.expect("request sent"))
            .await
    }

    pub async fn reply(response: reqwest::Response) -> Reply {
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type").unwrap_or_default();
        let headers = response.headers().clone();
        let request_id = header("x-request-id");
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            content_type,
            request_id,
            headers,
        }
    }

    /// POSTs JSON with an `Idempotency-Key`.
    pub async fn post_idempotent(
        &self,
        path: &str,
        token: Option<&str>,
        key: &str,
        body: Value,
    ) -> Reply {
        let mut request = self
            .client
            .post(format!("{}{path}", self.address))
            .header("idempotency-key", key)
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.answer(request.send().await.expect("request sent"))
            .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.request(Method::GET, path, token, None).await
    }

    /// GETs once the read models have reached `position` (`X-Min-Position`).
    pub async fn get_at(&self, path: &str, token: Option<&str>, position: i64) -> Reply {
        let mut request = self
            .client
            .get(format!("{}{path}", self.address))
            .header("x-min-position", position.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.answer(request.send().await.expect("request sent"))
            .await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.request(Method::POST, path, token, Some(body)).await
    }

    /// POSTs raw bytes as JSON (for malformed bodies).
    pub async fn post_raw(&self, path: &str, token: Option<&str>, body: &'static str) -> Reply {
        let mut request = self
            .client
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.answer(request.send().await.expect("request sent"))
            .await
    }

    pub async fn register(&self, email: &str, role: &str) -> Reply {
        let body =
            json!({"email": email, "password": PASSWORD, "full_name": "Test Person", "role": role});
        self.post("/api/v1/auth/register", None, body).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": password}),
        )
        .await
    }

    /// Registers a user with `role` and returns their token and id.
    pub async fn signed_in(&self, role: &str) -> (String, Uuid) {
        let email = format!("{}@example.com", Uuid::new_v4().simple());
        let registered = self.register(&email, role).await;
        assert_eq!(registered.status, StatusCode::CREATED, "{registered:?}");
        let login = self.login(&email, PASSWORD).await;
        assert_eq!(login.status, StatusCode::OK, "{login:?}");
        (
            login.body["access_token"].as_str().unwrap().to_owned(),
            registered.id(),
        )
    }

    /// An admin, made as an operator would: through the command layer, not self-registration.
    pub async fn admin(&self) -> (String, Uuid) {
        self.operator_made(parking_domain::Role::Admin).await
    }

    /// An auditor, made as an operator would.
    pub async fn auditor(&self) -> (String, Uuid) {
        self.operator_made(parking_domain::Role::Auditor).await
    }

    /// A machine client (the vision service), made as an operator would.
    pub async fn service_account(&self) -> (String, Uuid) {
        self.operator_made(parking_domain::Role::Service).await
    }

    /// A machine client's e-mail address and password, for a program that signs in itself.
    pub async fn service_credentials(&self) -> (String, &'static str) {
        let (email, _) = self.operator_made_as(parking_domain::Role::Service).await;
        (email, PASSWORD)
    }

    /// A user with `role`, made through the command layer (`parking-api create-user`).
    async fn operator_made(&self, role: parking_domain::Role) -> (String, Uuid) {
        let (email, id) = self.operator_made_as(role).await;
        // Signing in reads the write side: no need to wait for the server's projector.
        let login = self.login(&email, PASSWORD).await;
        (login.body["access_token"].as_str().unwrap().to_owned(), id)
    }

    /// A user with `role` made as `operator_made` does: its address and id.
    async fn operator_made_as(&self, role: parking_domain::Role) -> (String, Uuid) {
        let vars = HashMap::from([
            ("DATABASE_URL", self.database_url.clone()),
            ("BCRYPT_COST", "4".to_owned()),
        ]);
        let config = Config::from_lookup(|n| vars.get(n).cloned()).unwrap();
        let email = format!("{}-{}@example.com", role.as_str(), Uuid::new_v4().simple());
        // The app's own log if it runs in this process: it knows the app's master key.
        let log = self.log.clone().unwrap_or_else(|| event_log(&self.db));
        let commands = parking_api::startup::commands(&log, &config).unwrap();
        let ctx = parking_commands::CommandContext::system("test-setup".into(), Utc::now());
        let new = parking_commands::NewUser {
            email: parking_domain::user::Email::parse(&email).unwrap(),
            password: PASSWORD.into(),
            full_name: "Operator-made".to_owned(),
            role,
        };
        let id = commands
            .register_user(&ctx, new)
            .await
            .expect("user created");
        (email, id)
    }

    pub fn lot_body(&self) -> Value {
        json!({
            "name": "Central Garage", "address": "1 Main Street", "city": "Lyon",
            "latitude": 45.7640, "longitude": 4.8357,
            "hourly_rate_cents": 250, "currency": "EUR"
        })
    }

    /// A parking owner with one lot (250 ¢/h) holding one standard slot.
    pub async fn lot_with_slot(&self) -> Fixture {
        let (owner_token, owner_id) = self.signed_in("parking_owner").await;
        let lot = self
            .post("/api/v1/lots", Some(&owner_token), self.lot_body())
            .await;
        assert_eq!(lot.status, StatusCode::CREATED, "{lot:?}");
        let lot_id = lot.id();
        let slot = self
            .post(
                &format!("/api/v1/lots/{lot_id}/slots"),
                Some(&owner_token),
                json!({"label": "A1", "slot_type": "standard"}),
            )
            .await;
        assert_eq!(slot.status, StatusCode::CREATED, "{slot:?}");
        Fixture {
            owner_token,
            owner_id,
            lot_id,
            slot_id: slot.id(),
        }
    }

    pub async fn book(
        &self,
        token: &str,
        slot_id: Uuid,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Reply {
        let body = json!({"slot_id": slot_id, "start_time": start, "end_time": end, "vehicle_number": "AB-123-CD"});
        self.post("/api/v1/bookings", Some(token), body).await
    }

    /// Books `slot_id` for the hour starting `hour` hours from now; the booking must be made.
    pub async fn booked_hour(&self, token: &str, slot_id: Uuid, hour: i64) -> Reply {
        let booked = self
            .book(
                token,
                slot_id,
                hours_from_now(hour),
                hours_from_now(hour + 1),
            )
            .await;
        assert_eq!(booked.status, StatusCode::CREATED, "{booked:?}");
        booked
    }

    /// Rows of the event store, in (aggregate_type, event_type) pairs, oldest first per stream.
    pub async fn event_types(&self) -> Vec<(String, String)> {
        sqlx::query_as("SELECT aggregate_type, event_type FROM events ORDER BY recorded_at, aggregate_id, sequence")
            .fetch_all(&self.db)
            .await
            .expect("read events")
    }
}

pub struct Fixture {
    pub owner_token: String,
    pub owner_id: Uuid,
    pub lot_id: Uuid,
    pub slot_id: Uuid,
}
