//! One WebSocket connection: the client's requests and replies, its messages from the hub,
//! heartbeats, and the reasons it ends.

use std::sync::Arc;
use std::time::Duration;

use actix_ws::{CloseCode, CloseReason, Message, MessageStream, ProtocolError, Session};
use bytestring::ByteString;
use futures::SinkExt;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use super::messages::{Connected, ErrorMessage, Resync, Subscribed, Unsubscribed};
use super::{Close, Hub, Inbox, Joined, Missed, Note, Topic};

/// The largest client message accepted; a larger frame closes the connection with 1009.
pub const MAX_CLIENT_MESSAGE: usize = 4096;

/// How long a closing handshake may take before the connection is simply dropped (a client
/// that reads nothing never takes the close frame).
const CLOSE_PATIENCE: Duration = Duration::from_secs(1);

/// What a client may send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
enum Request {
    #[serde(rename = "subscribe")]
    Subscribe(String),
    #[serde(rename = "unsubscribe")]
    Unsubscribe(String),
}

/// Why the loop stopped.
enum End {
    /// The server closes, for this reason.
    Close(Close),
    /// The client closed: its close frame is echoed, as RFC 6455 asks.
    ClientClosed(Option<CloseReason>),
    /// The client went away.
    Client,
}

/// What woke the connection.
enum Turn {
    End(End),
    Frame(Option<Result<Message, ProtocolError>>),
    Note(Arc<Note>),
    Ping,
}

/// Everything a connection needs once upgraded.
pub(crate) struct Connection {
    pub hub: Arc<Hub>,
    pub pool: PgPool,
    pub joined: Joined,
    pub user: Uuid,
    pub lots: Vec<Uuid>,
    /// From `?after=`.
    pub after: Option<i64>,
    /// When the token expires.
    pub expires: Instant,
}

/// Runs the connection to its end, then leaves the hub.
pub(crate) async fn serve(connection: Connection, session: Session, stream: MessageStream) {
    let Connection {
        hub,
        pool,
        joined,
        user,
        lots,
        after,
        expires,
    } = connection;
    let Joined {
        id,
        inbox,
        live_after,
        missed,
    } = joined;
    let mut live = Live {
        hub: hub.clone(),
        pool,
        id,
        session,
        inbox,
        // The hub sends only what follows `live_after`; a client that had more (from a node
        // further ahead) gets nothing twice.
        had_up_to: after.unwrap_or(live_after).max(live_after),
        heard_until: Instant::now() + hub.settings().idle_timeout,
    };
    let end = live
        .run(stream, opening(user, &lots, live_after, missed), expires)
        .await;
    hub.leave(id);
    let frame = match end {
        End::Client => return,
        End::ClientClosed(reason) => reason,
        End::Close(reason) => {
            if !matches!(reason, Close::TooSlow) {
                // Dropped for lag: counted by the hub when it dropped it.
                hub.metrics().dropped(reason);
            }
            Some(CloseReason {
                code: CloseCode::Other(reason.code()),
                description: Some(reason.reason().to_owned()),
            })
        }
    };
    let _ = tokio::time::timeout(CLOSE_PATIENCE, live.session.close(frame)).await;
}

/// What a connection sends first: what it missed (or `resync`), then `connected`.
fn opening(user: Uuid, lots: &[Uuid], live_after: i64, missed: Missed) -> Vec<ByteString> {
    let mut texts: Vec<ByteString> = match missed {
        Missed::Notes(notes) => notes.into_iter().map(|n| n.text.clone()).collect(),
        Missed::TooFarBack => vec![text(&Resync {
            kind: "resync",
            position: live_after,
            detail: "the messages after `after` are no longer kept here: reload over HTTP \
                     with X-Min-Position, then apply the messages that follow",
        })],
    };
    let topics = std::iter::once(Topic::User(user))
        .chain(lots.iter().map(|l| Topic::Lot(*l)))
        .map(|t| t.to_string())
        .collect();
    texts.push(text(&Connected {
        kind: "connected",
        position: live_after,
        user_id: user,
        topics,
    }));
    texts
}

fn text(message: &impl Serialize) -> ByteString {
    ByteString::from(serde_json::to_string(message).expect("messages serialize"))
}

struct Live {
    hub: Arc<Hub>,
    pool: PgPool,
    id: u64,
    session: Session,
    inbox: Arc<Inbox>,
    /// The client has every message up to this position.
    had_up_to: i64,
    /// Silent until then, the client is closed (4003).
    heard_until: Instant,
}

impl Live {
    async fn run(
        &mut self,
        mut stream: MessageStream,
        opening: Vec<ByteString>,
        expires: Instant,
    ) -> End {
        for text in opening {
            if let Err(end) = self.send(text).await {
                return end;
            }
        }
        let settings = self.hub.settings().clone();
        let mut ping = tokio::time::interval_at(
            Instant::now() + settings.ping_interval,
            settings.ping_interval,
        );
        // One timer for both: the client's silence and the token's expiry.
        let deadline = tokio::time::sleep_until(self.heard_until.min(expires));
        tokio::pin!(deadline);
        let inbox = self.inbox.clone();
        loop {
            let turn = tokio::select! {
                biased;
                next = inbox.next() => match next {
                    Ok(note) => Turn::Note(note),
                    Err(reason) => Turn::End(End::Close(reason)),
                },
                () = &mut deadline => Turn::End(End::Close(if Instant::now() >= expires {
                    Close::TokenExpired
                } else {
                    Close::IdleTimeout
                })),
                frame = stream.recv() => Turn::Frame(frame),
                _ = ping.tick() => Turn::Ping,
            };
            let step = match turn {
                Turn::End(end) => Err(end),
                Turn::Frame(frame) => {
                    self.heard_until = Instant::now() + settings.idle_timeout;
                    deadline.as_mut().reset(self.heard_until.min(expires));
                    self.frame(frame).await
                }
                Turn::Note(note) => self.deliver(note).await,
                Turn::Ping => {
                    let ping = Message::Ping(Default::default());
                    self.write(ping).await
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Sends a message from the hub, unless the client has it already.
    async fn deliver(&mut self, note: Arc<Note>) -> Result<(), End> {
        // (Several messages may share a position: a check-in tells its driver and the lot.)
        if note.position <= self.had_up_to {
            return Ok(());
        }
        self.send(note.text.clone()).await
    }

    /// Sends one text.
    async fn send(&mut self, text: ByteString) -> Result<(), End> {
        self.write(Message::Text(text)).await?;
        self.hub.metrics().sent.inc();
        Ok(())
    }

    /// Writes one frame. It waits only while the client does not read what it was sent: a
    /// close from the hub (its inbox overflowed meanwhile) or the client's silence ends the wait.
    async fn write(&mut self, message: Message) -> Result<(), End> {
        tokio::select! {
            biased;
            reason = self.inbox.closed() => Err(End::Close(reason)),
            written = self.session.send(message) => written.map_err(|_| End::Client),
            () = tokio::time::sleep_until(self.heard_until) => Err(End::Close(Close::IdleTimeout)),
        }
    }

    async fn frame(&mut self, frame: Option<Result<Message, ProtocolError>>) -> Result<(), End> {
        match frame {
            None => Err(End::Client),
            Some(Ok(Message::Close(reason))) => Err(End::ClientClosed(reason)),
            Some(Err(ProtocolError::Overflow)) => Err(End::Close(Close::TooBig)),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "WebSocket protocol error");
                Err(End::Close(Close::ProtocolError))
            }
            Some(Ok(Message::Ping(bytes))) => self.write(Message::Pong(bytes)).await,
            Some(Ok(Message::Pong(_) | Message::Nop)) => Ok(()),
            Some(Ok(Message::Text(request))) => {
                let reply = self.request(&request).await;
                self.send(reply).await
            }
            Some(Ok(Message::Binary(_) | Message::Continuation(_))) => {
                let error = ErrorMessage::new(
                    "bad_message",
                    "send JSON requests as single text frames",
                    None,
                );
                self.send(text(&error)).await
            }
        }
    }

    /// Carries out a client's request; returns the reply.
    async fn request(&mut self, raw: &str) -> ByteString {
        let request = match serde_json::from_str::<Request>(raw) {
            Ok(request) => request,
            Err(e) => {
                return text(&ErrorMessage::new(
                    "bad_json",
                    format!(
                        "expected {{\"subscribe\": \"lot:<id>\"}} or {{\"unsubscribe\": \
                         \"lot:<id>\"}}: {e}"
                    ),
                    None,
                ))
            }
        };
        let (Request::Subscribe(topic) | Request::Unsubscribe(topic)) = &request;
        let Some(lot) = Topic::parse_lot(topic) else {
            return text(&ErrorMessage::new(
                "bad_topic",
                "topics are lot:<lot id>; your own bookings and payments come without \
                 subscribing",
                Some(topic.clone()),
            ));
        };
        match request {
            Request::Unsubscribe(topic) => {
                self.hub.unsubscribe(self.id, lot);
                text(&Unsubscribed {
                    kind: "unsubscribed",
                    topic,
                })
            }
            Request::Subscribe(topic) => {
                match parking_infra::log::existing_streams(&self.pool, "lot", &[lot.to_string()])
                    .await
                {
                    Ok(found) if found.is_empty() => {
                        return text(&ErrorMessage::new(
                            "unknown_lot",
                            "there is no lot with this id",
                            Some(topic),
                        ))
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "could not check a lot for a subscription");
                        return text(&ErrorMessage::new(
                            "unavailable",
                            "the lot could not be checked; try again",
                            Some(topic),
                        ));
                    }
                }
                let Some(position) = self.hub.subscribe(self.id, lot) else {
                    return text(&ErrorMessage::new(
                        "too_many_subscriptions",
                        format!(
                            "a connection follows at most {} lots",
                            self.hub.settings().max_subscriptions
                        ),
                        Some(topic),
                    ));
                };
                text(&Subscribed {
                    kind: "subscribed",
                    topic,
                    position,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_of_two_shapes() {
        let lot = Uuid::new_v4();
        let subscribe = format!(r#"{{"subscribe": "lot:{lot}"}}"#);
        assert!(matches!(
            serde_json::from_str::<Request>(&subscribe),
            Ok(Request::Subscribe(t)) if Topic::parse_lot(&t) == Some(lot)
        ));
        for bad in [
            r#"{"subscribe": "lot:1", "unsubscribe": "lot:2"}"#,
            r#"{"listen": "lot:1"}"#,
            r#"["subscribe"]"#,
            "subscribe",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
        assert_eq!(Topic::parse_lot("user:1"), None);
        assert_eq!(Topic::parse_lot("lot:not-a-uuid"), None);
    }
}
