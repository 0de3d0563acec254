//! A real Stripe-protocol server per test, for end-to-end payment tests: localstripe (a fake
//! Stripe API in Python, installed once per machine by `scripts/test.sh`, see
//! `scripts/lib.sh`), with the calls a client app makes when the customer pays with a card.
//! And [`RecordingProxy`], put between the app and that server: it records every call and loses
//! the answer to one, which shows that a call whose answer was lost is retried with the same
//! `Idempotency-Key` (and so is not done twice).
//!
//! Each test gets its own server on a free loopback port, its state in memory: payments and
//! webhooks of one test are never seen by another.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::free_port;

/// The secret key the tests use (`STRIPE_SECRET_KEY`): localstripe takes any `sk_test_` key.
pub const SECRET_KEY: &str = "sk_test_local";

/// The Python that has localstripe: `$LOCALSTRIPE_PYTHON` (set by `scripts/test.sh`), else
/// the venv `scripts/lib.sh` makes in the machine-wide cache.
fn python() -> PathBuf {
    let path = std::env::var_os("LOCALSTRIPE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("parking-tools/localstripe-1.15.10/bin/python")
        });
    assert!(
        path.exists(),
        "no localstripe at {}: run scripts/test.sh first (it installs it once per machine)",
        path.display()
    );
    path
}

/// The program Python runs: localstripe's app on loopback only. localstripe also pickles its
/// whole state after every change to a fixed `/tmp/localstripe.pickle` (not under TMPDIR),
/// shared by every server of the machine and only read back by its own `main`, not used here:
/// that writing is switched off.
fn program(port: u16) -> String {
    format!(
        "from aiohttp import web\n\
         import localstripe.resources\n\
         localstripe.resources.Store.dump_to_disk = lambda self: None\n\
         from localstripe.server import app\n\
         web.run_app(app, host='127.0.0.1', port={port})\n"
    )
}

/// A client that never goes through a proxy of the environment: everything here is loopback.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

/// `application/x-www-form-urlencoded`, as the Stripe API takes it.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut body = String::new();
    for (index, (name, value)) in pairs.iter().enumerate() {
        if index > 0 {
            body.push('&');
        }
        percent_encode(&mut body, name);
        body.push('=');
        percent_encode(&mut body, value);
    }
    body
}

fn percent_encode(out: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// A directory of its own under the system's temp directory, removed on drop.
struct StateDir(PathBuf);

impl StateDir {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("parking-localstripe-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create localstripe's directory");
        Self(dir)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One localstripe server, killed on drop.
pub struct LocalStripe {
    /// `http://127.0.0.1:<port>`: `STRIPE_API_BASE` for the app.
    pub url: String,
    client: reqwest::Client,
    process: Child,
    /// TMPDIR of the process and its log (`localstripe.log`, shown when it does not start).
    state: StateDir,
}

impl LocalStripe {
    /// Starts a server on a free loopback port and waits until it answers the API.
    pub async fn start() -> Self {
        let port = free_port();
        let state = StateDir::new();
        let log =
            std::fs::File::create(state.0.join("localstripe.log")).expect("create localstripe.log");
        let process = Command::new(python())
            .arg("-c")
            .arg(program(port))
            .env("TMPDIR", &state.0)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("localstripe.log"))
            .stderr(log)
            .spawn()
            .expect("start localstripe");
        let mut stripe = Self {
            url: format!("http://127.0.0.1:{port}"),
            client: http_client(),
            process,
            state,
        };
        stripe.wait_until_ready().await;
        stripe
    }

    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answered = self
                .client
                .get(format!("{}/v1/payment_intents", self.url))
                .bearer_auth(SECRET_KEY)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok();
            if answered {
                return;
            }
            if let Ok(Some(status)) = self.process.try_wait() {
                panic!(
                    "localstripe exited ({status}) before answering:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "localstripe did not answer within 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.0.join("localstripe.log")).unwrap_or_default()
    }

    /// POSTs a form to the server, with the secret key.
    async fn post_form(&self, path: &str, pairs: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.url))
            .bearer_auth(SECRET_KEY)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(pairs))
            .send()
            .await
            .unwrap_or_else(|error| panic!("POST {path} to localstripe: {error}"))
    }

    /// Registers the webhook endpoint `id`: the server will POST its events to `url`, signed
    /// with `secret` (`whsec_...`), about a second after they happen.
    pub async fn register_webhook(&self, id: &str, url: &str, secret: &str) {
        let response = self
            .post_form(
                &format!("/_config/webhooks/{id}"),
                &[("url", url), ("secret", secret)],
            )
            .await;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            panic!("localstripe refused the webhook {id} ({status}): {body}");
        }
    }

    /// What the client app does when the customer enters a card: attaches the payment method
    /// `pm` (e.g. `pm_card_visa`, or `pm_card_visa_chargeDeclined` for a declined card) to the
    /// payment intent. Separate from [`Self::confirm`]: localstripe answers 500 to a `confirm`
    /// that carries `payment_method`.
    pub async fn set_payment_method(&self, intent_id: &str, pm: &str) {
        let response = self
            .post_form(
                &format!("/v1/payment_intents/{intent_id}"),
                &[("payment_method", pm)],
            )
            .await;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            panic!("localstripe refused payment method {pm} for {intent_id} ({status}): {body}");
        }
    }

    /// What the client app does when the customer pays: confirms the payment intent. The
    /// server's answer, whatever it is (a declined card is a 402).
    pub async fn confirm(&self, intent_id: &str) -> StatusCode {
        self.post_form(&format!("/v1/payment_intents/{intent_id}/confirm"), &[])
            .await
            .status()
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// One request the proxy received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    /// Without the query string.
    pub path: String,
    pub idempotency_key: Option<String>,
}

/// A tiny HTTP/1.1 reverse proxy on a free loopback port, in front of a server (`upstream`):
/// it records every request and forwards it unchanged, answering with the upstream's status,
/// content type and body, except the first `POST` to one path: that one is forwarded (the
/// upstream does it) and its connection closed with no answer, as when a network fails after
/// the call was made. One request per connection (`Connection: close`); bodies must come with
/// a `Content-Length`. Stops on drop.
pub struct RecordingProxy {
    /// `http://127.0.0.1:<port>`: `STRIPE_API_BASE` for the app.
    pub url: String,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

struct Shared {
    upstream: String,
    drop_first_answer_to: String,
    answer_lost: AtomicBool,
    requests: Mutex<Vec<Recorded>>,
    client: reqwest::Client,
}

impl RecordingProxy {
    /// Starts a proxy to `upstream` (a base URL such as `http://127.0.0.1:8420`) that loses the
    /// answer to the first `POST` to the path `drop_first_answer_to` (e.g.
    /// `/v1/payment_intents`).
    pub async fn start(upstream: &str, drop_first_answer_to: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            drop_first_answer_to: drop_first_answer_to.to_owned(),
            answer_lost: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            client: http_client(),
        });
        let for_connections = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(handle(Arc::clone(&for_connections), stream));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        Self {
            url,
            shared,
            accept,
        }
    }

    /// Every request received so far, in the order they arrived.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Whether the `POST` to `drop_first_answer_to` whose answer is lost has arrived (its
    /// connection is closed once the upstream has answered it).
    pub fn answer_lost(&self) -> bool {
        self.shared.answer_lost.load(Ordering::SeqCst)
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One request as read off the connection.
struct Request {
    method: String,
    /// Path and query.
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

async fn handle(shared: Arc<Shared>, mut stream: TcpStream) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    shared.requests.lock().unwrap().push(Recorded {
        method: request.method.clone(),
        path: request.path().to_owned(),
        idempotency_key: request.header("idempotency-key").map(str::to_owned),
    });
    if request.header("transfer-encoding").is_some() {
        let text = b"the recording proxy reads Content-Length bodies only";
        let answer = response(StatusCode::NOT_IMPLEMENTED, Some("text/plain"), text);
        let _ = stream.write_all(&answer).await;
        return;
    }
    let lose_answer = request.method == "POST"
        && request.path() == shared.drop_first_answer_to
        && !shared.answer_lost.swap(true, Ordering::SeqCst);
    let answer = forward(&shared, &request).await;
    if lose_answer {
        // The upstream has done it and answered; the caller never hears of it.
        return;
    }
    let _ = stream.write_all(&answer).await;
    let _ = stream.shutdown().await;
}

/// Reads the head up to the blank line, then `Content-Length` bytes of body. `None` when the
/// connection ends first or the head is not HTTP.
async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break at;
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = std::str::from_utf8(&buffer[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect();
    let mut request = Request {
        method,
        target,
        headers,
        body: buffer[head_end + 4..].to_vec(),
    };
    let length: usize = match request.header("content-length") {
        Some(value) => value.parse().ok()?,
        None => 0,
    };
    while request.body.len() < length {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        request.body.extend_from_slice(&chunk[..read]);
    }
    request.body.truncate(length);
    Some(request)
}

/// Sends `request` to the upstream as it came (but for the headers about this connection) and
/// makes the answer to send back.
async fn forward(shared: &Shared, request: &Request) -> Vec<u8> {
    let Ok(method) = reqwest::Method::from_bytes(request.method.as_bytes()) else {
        return response(StatusCode::BAD_REQUEST, Some("text/plain"), b"bad method");
    };
    let mut outgoing = shared
        .client
        .request(method, format!("{}{}", shared.upstream, request.target));
    for (name, value) in &request.headers {
        let per_connection = ["host", "connection", "keep-alive", "content-length"]
            .iter()
            .any(|skipped| name.eq_ignore_ascii_case(skipped));
        if !per_connection {
            outgoing = outgoing.header(name.as_str(), value.as_str());
        }
    }
    let answer = match outgoing.body(request.body.clone()).send().await {
        Ok(answer) => answer,
        Err(error) => {
            let text = format!("the upstream did not answer: {error}");
            return response(StatusCode::BAD_GATEWAY, Some("text/plain"), text.as_bytes());
        }
    };
    let status = answer.status();
    let content_type = answer
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    match answer.bytes().await {
        Ok(body) => response(status, content_type.as_deref(), &body),
        Err(error) => {
            let text = format!("the upstream's answer broke off: {error}");
            response(StatusCode::BAD_GATEWAY, Some("text/plain"), text.as_bytes())
        }
    }
}

/// An HTTP/1.1 response, the connection closed after it.
fn response(status: StatusCode, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    if let Some(content_type) = content_type {
        let _ = write!(head, "Content-Type: {content_type}\r\n");
    }
    let _ = write!(
        head,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}
