//! A WebSocket client of `GET /ws`, as a client app would use it (tokio-tungstenite).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::WebSocketStream;

/// How a connection attempt was refused before the upgrade: the HTTP status and its
/// problem+json body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
}

/// What came next on a socket.
#[derive(Debug)]
pub enum Frame {
    /// A JSON text message.
    Json(Value),
    /// The server's close frame: code and reason.
    Closed(u16, String),
    /// The connection ended without a close frame (reset, or EOF).
    Ended,
}

pub struct Socket {
    stream: WebSocketStream<TcpStream>,
}

/// Options of a connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Connect<'a> {
    /// Sent as `Authorization: Bearer`.
    pub token: Option<&'a str>,
    /// The query string, without `?` (`token=...`, `after=...`, `subscribe=...`).
    pub query: &'a str,
    /// A small receive buffer (4 KiB) for a client that is to fall behind.
    pub small_window: bool,
}

impl Socket {
    /// Connects to `GET /ws` of the server at `address` (`http://host:port`).
    pub async fn connect(address: &str, options: Connect<'_>) -> Result<Socket, Refused> {
        let host = address.trim_start_matches("http://");
        let mut request = format!("ws://{host}/ws?{}", options.query)
            .into_client_request()
            .expect("a WebSocket URL");
        if let Some(token) = options.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
            request.headers_mut().insert("authorization", value);
        }
        let socket = TcpSocket::new_v4().unwrap();
        if options.small_window {
            socket.set_recv_buffer_size(4096).unwrap();
        }
        let tcp = socket.connect(host.parse().unwrap()).await.unwrap();
        match tokio_tungstenite::client_async(request, tcp).await {
            Ok((stream, _)) => Ok(Socket { stream }),
            Err(Error::Http(response)) => Err(Refused {
                status: response.status().as_u16(),
                body: (response.body().as_deref())
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null),
            }),
            Err(e) => panic!("WebSocket handshake failed: {e}"),
        }
    }

    /// Connects, and panics if refused.
    pub async fn open(address: &str, options: Connect<'_>) -> Socket {
        Self::connect(address, options)
            .await
            .unwrap_or_else(|r| panic!("refused: {r:?}"))
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.stream.send(Message::text(text)).await.unwrap();
    }

    /// The next frame within `patience` (pings are answered and skipped); `None` if none came.
    pub async fn next_frame(&mut self, patience: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()?;
            return Some(match next {
                Some(Ok(Message::Text(text))) => {
                    Frame::Json(serde_json::from_str(text.as_str()).expect("JSON messages"))
                }
                Some(Ok(Message::Close(frame))) => match frame {
                    Some(f) => Frame::Closed(u16::from(f.code), f.reason.to_string()),
                    None => Frame::Closed(1005, String::new()),
                },
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Frame::Ended,
            });
        }
    }

    /// The next JSON message within `patience`; panics on anything else.
    pub async fn next(&mut self, patience: Duration) -> Value {
        match self.next_frame(patience).await {
            Some(Frame::Json(message)) => message,
            other => panic!("expected a message within {patience:?}, got {other:?}"),
        }
    }

    /// The next message that is made of an event, skipping control messages (whose types
    /// are lower-case; events' are their names, `SlotReserved`).
    pub async fn next_event(&mut self, patience: Duration) -> Value {
        loop {
            let message = self.next(patience).await;
            let kind = message["type"].as_str().unwrap_or_default();
            if kind.starts_with(|c: char| c.is_ascii_uppercase()) {
                return message;
            }
        }
    }

    /// Reads until the server closes (or the connection ends); returns the close code, or
    /// `None` if it ended without one. Panics if it is still open after `patience`.
    pub async fn closed(&mut self, patience: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame(left).await {
                Some(Frame::Json(_)) => continue,
                Some(Frame::Closed(code, _)) => return Some(code),
                Some(Frame::Ended) => return None,
                None => panic!("still open after {patience:?}"),
            }
        }
    }
}
