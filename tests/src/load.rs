//! The benchmarks' HTTP client: cheap enough that the server's share of the CPU dominates.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use uuid::Uuid;

/// A benchmark's `main`: logs only errors unless `RUST_LOG` says otherwise (per-request logs
/// would measure the terminal; set before any thread exists), then `run` on a multi-threaded
/// runtime.
pub fn bench_main<F>(run: impl FnOnce() -> F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "error");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

/// A benchmark's numeric setting from the environment (`BENCH_SECONDS`, ...).
pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One client's connection to the server, held for the whole load, as a load generator (wrk,
/// say) holds it: plain HTTP/1.1 on one TCP connection, the request's fixed headers made once,
/// the answer's body read and parsed only where it is needed. Its CPU counts as this process's,
/// beside the server's, so it should spend as little as possible. A pooled client that parses URLs and every body into a
/// `serde_json::Value` (`reqwest`) would be about a fifth of this process.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: HeaderValue,
    /// `None`: an anonymous client.
    authorization: Option<HeaderValue>,
}

/// An answer: its status, its `X-Event-Position` and its body, unparsed.
pub struct Answer {
    pub status: StatusCode,
    pub position: Option<i64>,
    pub body: Bytes,
}

impl Answer {
    /// The `id` of the JSON object in the body.
    pub fn id(&self) -> Uuid {
        #[derive(serde::Deserialize)]
        struct Id {
            id: Uuid,
        }
        let body: Result<Id, _> = serde_json::from_slice(&self.body);
        body.unwrap_or_else(|e| panic!("no id in {:?}: {e}", self.body))
            .id
    }
}

impl Client {
    /// Connects to the server at `address` (`http://host:port`) as the holder of `token` (an
    /// empty one: anonymously).
    pub async fn connect(address: &str, token: &str) -> Self {
        let authority = address
            .strip_prefix("http://")
            .expect("the server's address is http://host:port");
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .expect("a connection to the server");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("an HTTP/1.1 connection");
        tokio::spawn(connection);
        Self {
            sender,
            host: HeaderValue::from_str(authority).expect("a host header"),
            authorization: (!token.is_empty()).then(|| {
                HeaderValue::from_str(&format!("Bearer {token}")).expect("an authorization header")
            }),
        }
    }

    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        extra: Option<(&'static str, String)>,
        body: Bytes,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        if !body.is_empty() {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some((name, value)) = extra {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(body)).expect("a request");
        self.sender.ready().await.expect("the connection is open");
        let response = self.sender.send_request(request).await.expect("an answer");
        let status = response.status();
        let position = response
            .headers()
            .get("x-event-position")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the answer's body")
            .to_bytes();
        Answer {
            status,
            position,
            body,
        }
    }

    /// `GET path`, with `X-Min-Position: at` if given.
    pub async fn get(&mut self, path: &str, at: Option<i64>) -> Answer {
        let at = at.map(|position| ("x-min-position", position.to_string()));
        self.send(Method::GET, path, at, Bytes::new()).await
    }
}
