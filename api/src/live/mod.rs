//! The live hub behind `GET /ws` (docs/live.md, ADR 0016).
//!
//! Every process tails the global log itself: the hub reads each new batch of events, renders
//! the messages they make once (one shared text per message, whatever the number of
//! recipients), keeps those of the last `WS_CATCH_UP_POSITIONS` positions for clients that
//! reconnect, and hands each message to the bounded buffer of every connection following its
//! topic. It never waits for a client: a connection whose buffer is full is dropped, so a slow
//! client slows neither the others, nor the tail, nor the command path.

mod connection;
pub mod messages;
mod render;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytestring::ByteString;
use parking_infra::config::LiveConfig;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use uuid::Uuid;

pub(crate) use connection::{serve, Connection, MAX_CLIENT_MESSAGE};

use crate::state::AppState;

/// The least time between the starts of two batches: what arrives meanwhile is read, rendered
/// and sent as one batch (at most this much added latency).
const BATCH_INTERVAL: Duration = Duration::from_millis(20);

/// Under load, a batch starts no sooner than this many times the last one took after its
/// start: the hub keeps to about a fifth of the time (its queries, the database's share), and
/// its batches grow instead.
const BATCH_SPACING: u32 = 5;

/// Events read from the log at a time, at most: a batch is also never longer than a
/// connection's buffer (`WS_BUFFER_MESSAGES`), so that a client that reads its messages as they
/// come is never dropped for one burst, only for falling behind.
const BATCH_EVENTS: i64 = 1000;

/// What a message is about, and so who gets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Changes of a lot and its slots, for whoever subscribes.
    Lot(Uuid),
    /// A user's own bookings and payments, for that user's connections only.
    User(Uuid),
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Lot(id) => write!(f, "lot:{id}"),
            Topic::User(id) => write!(f, "user:{id}"),
        }
    }
}

impl Topic {
    /// A topic a client may subscribe to: `lot:<uuid>`.
    pub fn parse_lot(raw: &str) -> Option<Uuid> {
        raw.strip_prefix("lot:")?.parse().ok()
    }
}

/// One message, rendered once and shared by every recipient.
#[derive(Debug, Clone)]
pub struct Note {
    /// Its event's place in the global log.
    pub position: i64,
    pub topic: Topic,
    pub text: ByteString,
}

/// Why the server closes a connection; the codes are documented in docs/live.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// 1001: the process is shutting down; reconnect (to another node) with `?after=`.
    GoingAway,
    /// 1002: the client broke the WebSocket protocol.
    ProtocolError,
    /// 1009: a client message over the limit (`MAX_CLIENT_MESSAGE`).
    TooBig,
    /// 4001: the token expired; sign in again and reconnect with `?after=`.
    TokenExpired,
    /// 4002: the client did not read its messages fast enough (`WS_BUFFER_MESSAGES`).
    TooSlow,
    /// 4003: nothing heard from the client, not even a pong, for `WS_IDLE_SECONDS`.
    IdleTimeout,
}

impl Close {
    pub fn code(self) -> u16 {
        match self {
            Close::GoingAway => 1001,
            Close::ProtocolError => 1002,
            Close::TooBig => 1009,
            Close::TokenExpired => 4001,
            Close::TooSlow => 4002,
            Close::IdleTimeout => 4003,
        }
    }

    /// The close frame's reason, and the `reason` label of the dropped-clients metric.
    pub fn reason(self) -> &'static str {
        match self {
            Close::GoingAway => "going_away",
            Close::ProtocolError => "protocol_error",
            Close::TooBig => "message_too_big",
            Close::TokenExpired => "token_expired",
            Close::TooSlow => "too_slow",
            Close::IdleTimeout => "idle_timeout",
        }
    }
}

/// One connection's bounded queue of messages, and how the hub tells it to close. It takes no
/// memory for messages until one is queued: most connections are idle most of the time.
#[derive(Default)]
pub(crate) struct Inbox {
    queue: Mutex<VecDeque<Arc<Note>>>,
    /// Set once: why the hub closes the connection.
    closing: OnceLock<Close>,
    /// Woken on a message or a close.
    wake: Notify,
}

impl Inbox {
    /// Queues `note` unless `capacity` messages wait already; returns whether it did.
    fn offer(&self, note: &Arc<Note>, capacity: usize) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= capacity {
            return false;
        }
        queue.push_back(note.clone());
        drop(queue);
        self.wake.notify_one();
        true
    }

    fn close(&self, reason: Close) {
        if self.closing.set(reason).is_ok() {
            self.wake.notify_one();
        }
    }

    /// The next message, or why the connection is to close (that first).
    pub(crate) async fn next(&self) -> Result<Arc<Note>, Close> {
        loop {
            if let Some(reason) = self.closing.get() {
                return Err(*reason);
            }
            if let Some(note) = (self.queue.lock().unwrap_or_else(|e| e.into_inner())).pop_front() {
                return Ok(note);
            }
            self.wake.notified().await;
        }
    }

    /// Drops the queued messages of `topic`.
    fn forget(&self, topic: Topic) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.retain(|n| n.topic != topic);
    }

    /// Waits until the hub closes the connection; returns why.
    pub(crate) async fn closed(&self) -> Close {
        loop {
            if let Some(reason) = self.closing.get() {
                return *reason;
            }
            self.wake.notified().await;
        }
    }

    #[cfg(test)]
    fn queued(&self) -> Vec<i64> {
        let queue = self.queue.lock().unwrap();
        queue.iter().map(|n| n.position).collect()
    }
}

/// The hub's counters, registered in `crate::metrics::Metrics`.
#[derive(Clone, Default)]
pub struct HubMetrics {
    /// `parking_ws_connections`
    pub connections: Gauge,
    /// `parking_ws_messages_sent_total`
    pub sent: Counter,
    /// `parking_ws_clients_dropped_total{reason}`: closed by the server, by reason.
    pub dropped: Family<DropLabels, Counter>,
    /// `parking_ws_hub_position`: the log position the hub has sent everything up to.
    pub position: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct DropLabels {
    pub reason: &'static str,
}

impl HubMetrics {
    fn dropped(&self, reason: Close) {
        self.dropped
            .get_or_create(&DropLabels {
                reason: reason.reason(),
            })
            .inc();
    }
}

/// One open connection, as the hub knows it.
struct Member {
    /// Its own user topic first, then its lots. (Vectors here and in `followers`: a handful of
    /// entries each, and an idle connection's bytes count at 10,000 of them.)
    topics: Vec<Topic>,
    inbox: Arc<Inbox>,
    /// Its inbox overflowed during the current hand-out: dropped at its end.
    lagging: bool,
}

#[derive(Default)]
struct Registry {
    members: HashMap<u64, Member>,
    followers: HashMap<Topic, Vec<u64>>,
    next_id: u64,
    /// Every message up to this position has been handed out.
    sent_up_to: i64,
    /// The messages after `kept_after`, in log order: what a reconnecting client may catch up on.
    recent: VecDeque<Arc<Note>>,
    kept_after: i64,
    closing: bool,
}

impl Registry {
    fn follow(&mut self, id: u64, topic: Topic) {
        self.followers.entry(topic).or_default().push(id);
    }

    fn unfollow(&mut self, id: u64, topic: Topic) {
        if let Some(ids) = self.followers.get_mut(&topic) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.followers.remove(&topic);
            }
        }
    }

    fn remove(&mut self, id: u64) -> Option<Member> {
        let member = self.members.remove(&id)?;
        for topic in &member.topics {
            self.unfollow(id, *topic);
        }
        Some(member)
    }
}

/// Why a connection was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `WS_MAX_CONNECTIONS` are open.
    Full,
    /// The process is shutting down.
    Closing,
}

/// What a joining connection missed since the position it asked for.
pub enum Missed {
    /// The messages after it, of its topics, in order.
    Notes(Vec<Arc<Note>>),
    /// Further back than the hub keeps: the client reloads over HTTP.
    TooFarBack,
}

/// A connection let in.
pub(crate) struct Joined {
    pub id: u64,
    pub inbox: Arc<Inbox>,
    /// Every message after this position will arrive in `inbox`.
    pub live_after: i64,
    pub missed: Missed,
}

pub struct Hub {
    registry: Mutex<Registry>,
    settings: LiveConfig,
    metrics: HubMetrics,
}

impl Hub {
    /// A hub that starts at `position` of the log: what came before is for HTTP to tell.
    pub fn new(settings: LiveConfig, metrics: HubMetrics, position: i64) -> Self {
        metrics.position.set(position);
        Self {
            registry: Mutex::new(Registry {
                sent_up_to: position,
                kept_after: position,
                ..Registry::default()
            }),
            settings,
            metrics,
        }
    }

    pub fn settings(&self) -> &LiveConfig {
        &self.settings
    }

    pub(crate) fn metrics(&self) -> &HubMetrics {
        &self.metrics
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves consistent maps (no step spans two of them
        // half-done): carry on with them.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets a connection of `user` in, following its own topic and `lots`; with `after`, also
    /// returns what it missed since then.
    pub(crate) fn join(
        &self,
        user: Uuid,
        lots: &[Uuid],
        after: Option<i64>,
    ) -> Result<Joined, Refusal> {
        let mut registry = self.registry();
        if registry.closing {
            return Err(Refusal::Closing);
        }
        if registry.members.len() >= self.settings.max_connections {
            return Err(Refusal::Full);
        }
        let id = registry.next_id;
        registry.next_id += 1;
        let topics: Vec<Topic> = std::iter::once(Topic::User(user))
            .chain(lots.iter().map(|lot| Topic::Lot(*lot)))
            .collect();
        let missed = match after {
            Some(after) if after < registry.kept_after => Missed::TooFarBack,
            Some(after) => Missed::Notes(
                (registry.recent.iter())
                    .filter(|n| n.position > after && topics.contains(&n.topic))
                    .cloned()
                    .collect(),
            ),
            None => Missed::Notes(Vec::new()),
        };
        for topic in &topics {
            registry.follow(id, *topic);
        }
        let inbox = Arc::new(Inbox::default());
        registry.members.insert(
            id,
            Member {
                topics,
                inbox: inbox.clone(),
                lagging: false,
            },
        );
        self.metrics.connections.inc();
        Ok(Joined {
            id,
            inbox,
            live_after: registry.sent_up_to,
            missed,
        })
    }

    /// Follows `lot` too; returns the position after which its messages arrive, or `None`
    /// when the connection follows `WS_MAX_SUBSCRIPTIONS` lots already.
    pub(crate) fn subscribe(&self, id: u64, lot: Uuid) -> Option<i64> {
        let mut registry = self.registry();
        let sent_up_to = registry.sent_up_to;
        let member = registry.members.get_mut(&id)?;
        let topic = Topic::Lot(lot);
        if !member.topics.contains(&topic) {
            let lots = member.topics.len() - 1;
            if lots >= self.settings.max_subscriptions {
                return None;
            }
            member.topics.push(topic);
            registry.follow(id, topic);
        }
        Some(sent_up_to)
    }

    pub(crate) fn unsubscribe(&self, id: u64, lot: Uuid) {
        let mut registry = self.registry();
        let topic = Topic::Lot(lot);
        if let Some(member) = registry.members.get_mut(&id) {
            if member.topics.contains(&topic) {
                member.topics.retain(|t| *t != topic);
                // What was queued for it and not yet written is not sent either.
                member.inbox.forget(topic);
                registry.unfollow(id, topic);
            }
        }
    }

    /// The connection has ended (whoever closed it).
    pub(crate) fn leave(&self, id: u64) {
        if self.registry().remove(id).is_some() {
            self.metrics.connections.dec();
        }
    }

    /// Closes every connection with 1001 and lets no new one in.
    pub fn shut_down(&self) {
        let mut registry = self.registry();
        registry.closing = true;
        for member in registry.members.values() {
            member.inbox.close(Close::GoingAway);
        }
    }

    /// The connections open now.
    pub fn connections(&self) -> usize {
        self.registry().members.len()
    }

    /// Hands out `notes` (in log order), which cover the log up to `up_to`, and keeps them
    /// for catching up.
    fn publish(&self, notes: Vec<Note>, up_to: i64) {
        let mut guard = self.registry();
        let registry = &mut *guard;
        let mut lagging = Vec::new();
        for note in notes {
            let note = Arc::new(note);
            if let Some(ids) = registry.followers.get(&note.topic) {
                for id in ids {
                    let Some(member) = registry.members.get_mut(id) else {
                        continue;
                    };
                    if member.lagging {
                        continue;
                    }
                    if !member.inbox.offer(&note, self.settings.buffer) {
                        member.lagging = true;
                        lagging.push(*id);
                    }
                }
            }
            registry.recent.push_back(note);
        }
        registry.sent_up_to = registry.sent_up_to.max(up_to);
        registry.kept_after =
            (registry.kept_after).max(registry.sent_up_to - self.settings.catch_up_positions);
        let kept_after = registry.kept_after;
        while (registry.recent.front()).is_some_and(|n| n.position <= kept_after) {
            registry.recent.pop_front();
        }
        for id in lagging {
            if let Some(member) = registry.remove(id) {
                member.inbox.close(Close::TooSlow);
                self.metrics.connections.dec();
                self.metrics.dropped(Close::TooSlow);
            }
        }
        self.metrics.position.set(registry.sent_up_to);
    }
}

/// Tails the global log from `position` (where the hub started) for the life of the process,
/// feeding the hub. Survives database outages (it retries).
pub async fn run(hub: Arc<Hub>, state: Arc<AppState>, mut position: i64) {
    let mut head = state.log.subscribe();
    loop {
        if *head.borrow_and_update() <= position {
            if head.changed().await.is_err() {
                return;
            }
            continue;
        }
        let began = tokio::time::Instant::now();
        match advance(&hub, &state, position).await {
            Ok(reached) => position = reached,
            Err(e) => {
                tracing::warn!(error = %e, position, "live hub could not read the log; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let took = began.elapsed();
        tokio::time::sleep_until(began + BATCH_INTERVAL.max(took * BATCH_SPACING)).await;
    }
}

/// Reads, renders and hands out the next batch after `position`; returns where it ended.
async fn advance(hub: &Hub, state: &AppState, position: i64) -> Result<i64, render::RenderError> {
    let events = {
        let mut db = state.pool.acquire().await?;
        let limit = BATCH_EVENTS.min(hub.settings().buffer as i64);
        state.log.read_after(&mut db, position, limit).await?
    };
    let Some(last) = events.last().map(|e| e.global_position) else {
        return Ok(position);
    };
    let notes = render::render(state, &events).await?;
    hub.publish(notes, last);
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(buffer: usize, catch_up_positions: i64) -> LiveConfig {
        LiveConfig {
            max_connections: 2,
            max_subscriptions: 1,
            buffer,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            catch_up_positions,
            send_buffer: None,
        }
    }

    fn note(position: i64, topic: Topic) -> Note {
        Note {
            position,
            topic,
            text: ByteString::from(format!("{position}")),
        }
    }

    fn started(settings: LiveConfig) -> Hub {
        Hub::new(settings, HubMetrics::default(), 10)
    }

    #[test]
    fn a_connection_gets_its_topics_only() {
        let hub = started(settings(8, 100));
        let (me, lot, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let joined = hub.join(me, &[lot], None).unwrap();
        assert_eq!(joined.live_after, 10);
        hub.publish(
            vec![
                note(11, Topic::Lot(lot)),
                note(12, Topic::User(other)),
                note(13, Topic::User(me)),
                note(14, Topic::Lot(Uuid::new_v4())),
            ],
            14,
        );
        assert_eq!(joined.inbox.queued(), [11, 13]);
        // Unsubscribed, what was queued for the lot goes too, and nothing more comes.
        hub.unsubscribe(joined.id, lot);
        assert_eq!(joined.inbox.queued(), [13]);
        hub.publish(vec![note(15, Topic::Lot(lot))], 15);
        assert_eq!(joined.inbox.queued(), [13]);
    }

    #[test]
    fn catching_up_gives_what_was_missed_or_asks_for_a_resync() {
        let hub = started(settings(8, 3));
        let lot = Uuid::new_v4();
        let notes = (11..=15).map(|p| note(p, Topic::Lot(lot))).collect();
        hub.publish(notes, 15);
        // Positions after 12 are kept (15 - 3).
        let Missed::Notes(missed) = hub.join(Uuid::new_v4(), &[lot], Some(13)).unwrap().missed
        else {
            panic!("13 is kept");
        };
        assert_eq!(
            missed.iter().map(|n| n.position).collect::<Vec<_>>(),
            [14, 15]
        );
        let missed = hub.join(Uuid::new_v4(), &[lot], Some(11)).unwrap().missed;
        assert!(matches!(missed, Missed::TooFarBack));
    }

    #[test]
    fn a_full_buffer_drops_that_connection_only() {
        let hub = started(settings(1, 100));
        let lot = Uuid::new_v4();
        let slow = hub.join(Uuid::new_v4(), &[lot], None).unwrap();
        let fast = hub.join(Uuid::new_v4(), &[lot], None).unwrap();
        hub.publish(vec![note(11, Topic::Lot(lot))], 11);
        // The fast one reads its message; the slow one does not.
        assert!(fast.inbox.queue.lock().unwrap().pop_front().is_some());
        hub.publish(vec![note(12, Topic::Lot(lot))], 12);
        assert_eq!(slow.inbox.closing.get(), Some(&Close::TooSlow));
        assert_eq!(fast.inbox.closing.get(), None);
        assert_eq!(fast.inbox.queued(), [12]);
        assert_eq!(hub.connections(), 1);
    }

    #[test]
    fn caps_refuse_connections_and_subscriptions() {
        let hub = started(settings(8, 100));
        let first = hub.join(Uuid::new_v4(), &[], None).unwrap();
        hub.join(Uuid::new_v4(), &[], None).unwrap();
        assert!(matches!(
            hub.join(Uuid::new_v4(), &[], None),
            Err(Refusal::Full)
        ));
        assert_eq!(hub.subscribe(first.id, Uuid::new_v4()), Some(10));
        assert_eq!(hub.subscribe(first.id, Uuid::new_v4()), None);
        hub.shut_down();
        assert_eq!(first.inbox.closing.get(), Some(&Close::GoingAway));
    }
}
