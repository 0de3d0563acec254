//! The live hub (`GET /ws`) end to end, with a real WebSocket client: authentication before
//! the upgrade, subscriptions, a change made over HTTP arriving at once, across two server
//! processes, private messages, slow clients, catch-up, and the ways a connection ends.

use std::time::{Duration, Instant};

use chrono::Utc;
use jwt_simple::prelude::*;
use parking_tests::ws::{Connect, Frame, Socket};
use parking_tests::{spawn_app_with, Reply, ServerProcess, TestApp, JWT_SECRET};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

const SECOND: Duration = Duration::from_secs(1);
const PATIENCE: Duration = Duration::from_secs(10);

async fn open(app: &TestApp, token: &str, query: &str) -> Socket {
    let mut socket = Socket::open(
        &app.address,
        Connect {
            token: Some(token),
            query,
            ..Connect::default()
        },
    )
    .await;
    let connected = socket.next(PATIENCE).await;
    assert_eq!(connected["type"], "connected", "{connected}");
    socket
}

async fn subscribe(socket: &mut Socket, lot_id: Uuid) -> i64 {
    socket
        .send(json!({"subscribe": format!("lot:{lot_id}")}))
        .await;
    let reply = socket.next(PATIENCE).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["topic"], format!("lot:{lot_id}"));
    reply["position"].as_i64().unwrap()
}

/// Books the slot from now for an hour: its status turns `reserved` at once.
async fn book_now(app: &TestApp, token: &str, slot_id: Uuid) -> Reply {
    let now = Utc::now();
    let booked = app
        .book(token, slot_id, now, now + chrono::Duration::hours(1))
        .await;
    assert_eq!(booked.status, StatusCode::CREATED, "{booked:?}");
    booked
}

async fn observe(app: &TestApp, token: &str, slot_id: Uuid, occupied: bool) -> Reply {
    let body = json!({"occupied": occupied, "confidence": 0.9, "observed_at": Utc::now()});
    let path = format!("/api/v1/slots/{slot_id}/occupancy");
    let observed = app.post(&path, Some(token), body).await;
    assert_eq!(observed.status, StatusCode::OK, "{observed:?}");
    observed
}

fn id(value: &Value) -> Uuid {
    value.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_connection_needs_a_valid_token_before_the_upgrade() {
    let app = spawn_app_with(&[]).await;
    let (token, _) = app.signed_in("user").await;
    let address = app.address.as_str();
    let refused = |options| async move { Socket::connect(address, options).await.err() };

    let none = refused(Connect::default()).await.expect("refused");
    assert_eq!(
        (none.status, none.body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let bad = refused(Connect {
        token: Some("not-a-token"),
        ..Connect::default()
    })
    .await
    .expect("refused");
    assert_eq!(
        (bad.status, bad.body["code"].as_str()),
        (401, Some("invalid_token"))
    );
    let in_query = refused(Connect {
        query: "token=not-a-token",
        ..Connect::default()
    })
    .await
    .expect("refused");
    assert_eq!(in_query.status, 401);
    let expired = mint_token(&app, -120).await;
    let late = refused(Connect {
        token: Some(&expired),
        ..Connect::default()
    })
    .await
    .expect("refused");
    assert_eq!(
        (late.status, late.body["code"].as_str()),
        (401, Some("token_expired"))
    );

    // A good token, a bad request: 4xx problems before any upgrade.
    let query = format!("token={token}&subscribe=lot:{}", Uuid::new_v4());
    let unknown = refused(Connect {
        query: &query,
        ..Connect::default()
    })
    .await
    .expect("refused");
    assert_eq!(
        (unknown.status, unknown.body["code"].as_str()),
        (404, Some("unknown_lot"))
    );
    let beyond = refused(Connect {
        token: Some(&token),
        query: "after=1000000",
        ..Connect::default()
    })
    .await
    .expect("refused");
    assert_eq!(
        (beyond.status, beyond.body["code"].as_str()),
        (400, Some("invalid_after"))
    );
    let plain = app.get(&format!("/ws?token={token}"), None).await;
    plain.assert_problem(400, "not_a_websocket");

    // The token in the query string works as in the header.
    let query = format!("token={token}");
    let mut by_query = Socket::open(
        &app.address,
        Connect {
            query: &query,
            ..Connect::default()
        },
    )
    .await;
    let connected = by_query.next(PATIENCE).await;
    assert_eq!(connected["type"], "connected");
    let mut by_header = open(&app, &token, "").await;
    assert_eq!(
        by_header
            .next_frame(Duration::from_millis(100))
            .await
            .map(|_| ()),
        None
    );
    assert_eq!(app.metric("parking_ws_connections").await, 2);
}

#[tokio::test]
async fn a_change_made_over_http_reaches_the_lots_subscribers_within_a_second() {
    let app = spawn_app_with(&[("WS_MAX_SUBSCRIPTIONS", "1")]).await;
    let fx = app.lot_with_slot().await;
    let (driver, driver_id) = app.signed_in("user").await;
    let (watcher, _) = app.signed_in("user").await;
    let mut socket = open(&app, &watcher, "").await;
    let from = subscribe(&mut socket, fx.lot_id).await;

    let booked = book_now(&app, &driver, fx.slot_id).await;
    let answered = Instant::now();
    let message = socket.next_event(SECOND).await;
    assert!(answered.elapsed() < SECOND, "{:?}", answered.elapsed());
    assert_eq!(message["type"], "SlotReserved", "{message}");
    assert_eq!(message["topic"], format!("lot:{}", fx.lot_id));
    assert_eq!(id(&message["lot_id"]), fx.lot_id);
    assert_eq!(id(&message["slot_id"]), fx.slot_id);
    assert_eq!(message["status"], "reserved");
    assert_eq!(
        (
            message["available_slots"].as_i64(),
            message["total_slots"].as_i64()
        ),
        (Some(0), Some(1))
    );
    let position = message["position"].as_i64().unwrap();
    assert!(
        position > from && position <= booked.position().unwrap(),
        "{message}"
    );
    // A watcher is told nothing of who booked.
    assert!(
        message.get("booking").is_none() && !message.to_string().contains(&driver_id.to_string())
    );

    // Lot changes, with what a list of lots shows.
    let path = format!("/api/v1/lots/{}", fx.lot_id);
    let body = json!({"hourly_rate_cents": 300});
    let updated = app
        .request(
            reqwest::Method::PATCH,
            &path,
            Some(&fx.owner_token),
            Some(body),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{updated:?}");
    let message = socket.next_event(SECOND).await;
    assert_eq!(message["type"], "LotUpdated", "{message}");
    assert_eq!(
        (
            message["hourly_rate_cents"].as_i64(),
            message["is_active"].as_bool()
        ),
        (Some(300), Some(true))
    );
    assert_eq!(message["available_slots"], 0);

    // Requests that are refused say why, and change nothing.
    let refusals = [
        (
            json!({"subscribe": format!("lot:{}", Uuid::new_v4())}),
            "unknown_lot",
        ),
        (json!({"subscribe": "user:me"}), "bad_topic"),
        (json!({"listen": "lot:1"}), "bad_json"),
    ];
    for (request, code) in refusals {
        socket.send(request).await;
        let reply = socket.next(PATIENCE).await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some(code)),
            "{reply}"
        );
    }
    socket.send_text("{not json".into()).await;
    assert_eq!(socket.next(PATIENCE).await["code"], "bad_json");
    let other = app.lot_with_slot().await;
    socket
        .send(json!({"subscribe": format!("lot:{}", other.lot_id)}))
        .await;
    let reply = socket.next(PATIENCE).await;
    assert_eq!(reply["code"], "too_many_subscriptions", "{reply}");

    // Unsubscribed, the lot's changes stop: the next message is the other lot's, though the
    // first lot changed before it (messages come in log order).
    socket
        .send(json!({"unsubscribe": format!("lot:{}", fx.lot_id)}))
        .await;
    assert_eq!(socket.next(PATIENCE).await["type"], "unsubscribed");
    subscribe(&mut socket, other.lot_id).await;
    let (service, _) = app.service_account().await;
    observe(&app, &service, fx.slot_id, true).await;
    observe(&app, &service, other.slot_id, true).await;
    loop {
        // (The other lot's creation may still be on its way: it came after `subscribed`.)
        let message = socket.next_event(PATIENCE).await;
        assert_eq!(id(&message["lot_id"]), other.lot_id, "{message}");
        if message["type"] == "SlotOccupancyObserved" {
            assert_eq!(id(&message["slot_id"]), other.slot_id);
            assert_eq!(message["status"], "occupied");
            break;
        }
    }
}

#[tokio::test]
async fn a_user_is_told_of_their_own_bookings_and_of_nobody_elses() {
    let app = spawn_app_with(&[]).await;
    let fx = app.lot_with_slot().await;
    let second = app.lot_with_slot().await;
    let (alice, alice_id) = app.signed_in("user").await;
    let (bob, bob_id) = app.signed_in("user").await;
    let mut alices = open(&app, &alice, "").await;
    let mut bobs = open(&app, &bob, "").await;

    let booked = app.booked_hour(&alice, fx.slot_id, 3).await;
    let message = alices.next_event(SECOND).await;
    assert_eq!(message["type"], "BookingCreated", "{message}");
    assert_eq!(message["topic"], format!("user:{alice_id}"));
    assert_eq!(id(&message["booking"]["id"]), booked.id());
    assert_eq!(message["booking"]["status"], "pending");
    assert_eq!(message["booking"]["slot_id"], booked.body["slot_id"]);
    assert_eq!(
        message["booking"]["price_cents"],
        booked.body["price_cents"]
    );
    let path = format!("/api/v1/bookings/{}/cancel", booked.id());
    let cancelled = app.post(&path, Some(&alice), json!({})).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{cancelled:?}");
    let message = alices.next_event(SECOND).await;
    assert_eq!(
        (
            message["type"].as_str(),
            message["booking"]["status"].as_str()
        ),
        (Some("BookingCancelled"), Some("cancelled"))
    );
    // The booking as its GET shows it.
    let read = app
        .get(&format!("/api/v1/bookings/{}", booked.id()), Some(&alice))
        .await;
    assert_eq!(message["booking"], read.body);

    // Bob's first message is his own booking, made after Alice's: hers never reached him.
    let his = app.booked_hour(&bob, second.slot_id, 3).await;
    let message = bobs.next_event(SECOND).await;
    assert_eq!(message["topic"], format!("user:{bob_id}"), "{message}");
    assert_eq!(id(&message["booking"]["id"]), his.id());
    assert!(!message.to_string().contains(&alice_id.to_string()));
}

#[tokio::test]
async fn a_client_of_one_server_process_receives_a_change_made_through_another() {
    let app = spawn_app_with(&[]).await;
    let other = ServerProcess::start(&app.database_url, &[]).await;
    let fx = app.lot_with_slot().await;
    let (driver, driver_id) = app.signed_in("user").await;
    let (watcher, _) = app.signed_in("user").await;
    let there = TestApp::connect(other.address.clone(), app.database_url.clone()).await;
    let mut watching = open(&there, &watcher, &format!("subscribe=lot:{}", fx.lot_id)).await;
    let mut own = open(&there, &driver, "").await;

    // Through this process; the clients are on the other.
    book_now(&app, &driver, fx.slot_id).await;
    let answered = Instant::now();
    let message = watching.next_event(SECOND).await;
    assert_eq!(
        (message["type"].as_str(), message["status"].as_str()),
        (Some("SlotReserved"), Some("reserved")),
        "{message}"
    );
    let message = own.next_event(SECOND).await;
    assert_eq!(
        (message["type"].as_str(), message["topic"].as_str()),
        (
            Some("BookingCreated"),
            Some(format!("user:{driver_id}").as_str())
        )
    );
    assert!(answered.elapsed() < SECOND);
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_dropped_and_the_others_get_everything() {
    // Small kernel buffers on both sides (left to autotuning they take megabytes), so that
    // a few hundred messages fill them and then the hub's buffer of 16.
    let app = spawn_app_with(&[
        ("WS_BUFFER_MESSAGES", "16"),
        ("WS_SEND_BUFFER_BYTES", "8192"),
    ])
    .await;
    let fx = app.lot_with_slot().await;
    let (watcher, _) = app.signed_in("user").await;
    let (service, _) = app.service_account().await;
    let query = format!("subscribe=lot:{}", fx.lot_id);
    let mut slow = Socket::open(
        &app.address,
        Connect {
            token: Some(&watcher),
            query: &query,
            small_window: true,
        },
    )
    .await;
    let mut fast = open(&app, &watcher, &query).await;
    let (until, mut last_wanted) = tokio::sync::watch::channel(i64::MAX);
    let reader = tokio::spawn(async move {
        let mut positions = Vec::new();
        while positions
            .last()
            .is_none_or(|p| p < &*last_wanted.borrow_and_update())
        {
            match fast.next_frame(Duration::from_millis(200)).await {
                Some(Frame::Json(message)) if message["type"] == "SlotOccupancyObserved" => {
                    positions.push(message["position"].as_i64().unwrap());
                }
                None | Some(Frame::Json(_)) => {}
                other => panic!("the reading client lost its connection: {other:?}"),
            }
        }
        positions
    });

    // Changes, until the server says it dropped the client that reads nothing.
    let dropped = "parking_ws_clients_dropped_total{reason=\"too_slow\"}";
    let mut last = 0;
    for change in 0..5000 {
        let observed = observe(&app, &service, fx.slot_id, change % 2 == 0).await;
        last = observed.position().unwrap();
        if change % 50 == 49 && app.metric_if_any(dropped).await == Some(1) {
            break;
        }
    }
    assert_eq!(
        app.metric_if_any(dropped).await,
        Some(1),
        "the slow client was never dropped"
    );
    assert_eq!(app.metric("parking_ws_connections").await, 1);
    until.send(last).unwrap();

    // The reading client got every change, in order.
    let expected: Vec<i64> = sqlx::query_scalar(
        "SELECT global_position FROM events
          WHERE event_type = 'SlotOccupancyObserved' ORDER BY global_position",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let received = tokio::time::timeout(PATIENCE, reader)
        .await
        .expect("all received")
        .unwrap();
    assert_eq!(received, expected);
    assert!(received.len() > 16);

    // The slow client finds what it was sent, then the close, or, if even the close frame
    // could not be written, the end of the connection.
    let code = slow.closed(PATIENCE).await;
    assert!(matches!(code, Some(4002) | None), "{code:?}");
}

#[tokio::test]
async fn reconnecting_with_after_gets_exactly_the_missed_messages_in_order() {
    let app = spawn_app_with(&[]).await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    let (service, _) = app.service_account().await;
    let query = format!("subscribe=lot:{}", fx.lot_id);
    // Connected throughout: what was sent live.
    let mut witness = open(&app, &driver, &query).await;
    let mut client = open(&app, &driver, &query).await;

    observe(&app, &service, fx.slot_id, true).await;
    let seen = client.next_event(PATIENCE).await;
    assert_eq!(witness.next_event(PATIENCE).await, seen);
    drop(client);

    // Missed: slot changes on the lot, and the driver's own booking.
    observe(&app, &service, fx.slot_id, false).await;
    app.booked_hour(&driver, fx.slot_id, 5).await;
    observe(&app, &service, fx.slot_id, true).await;
    let mut missed = Vec::new();
    while missed.len() < 4 {
        missed.push(witness.next_event(PATIENCE).await);
    }
    let mut types: Vec<&str> = missed.iter().map(|m| m["type"].as_str().unwrap()).collect();
    types.sort();
    assert_eq!(
        types,
        [
            "BookingCreated",
            "SlotOccupancyObserved",
            "SlotOccupancyObserved",
            "SlotReserved"
        ]
    );

    let after = seen["position"].as_i64().unwrap();
    let mut back = Socket::open(
        &app.address,
        Connect {
            token: Some(&driver),
            query: &format!("after={after}&{query}"),
            ..Connect::default()
        },
    )
    .await;
    let mut caught_up = Vec::new();
    loop {
        let message = back.next(PATIENCE).await;
        if message["type"] == "connected" {
            assert!(
                message["position"].as_i64().unwrap() >= missed[3]["position"].as_i64().unwrap()
            );
            break;
        }
        caught_up.push(message);
    }
    assert_eq!(caught_up, missed);

    // Then live, with nothing twice.
    let next = observe(&app, &service, fx.slot_id, false).await;
    let message = back.next_event(PATIENCE).await;
    assert_eq!(message["position"].as_i64(), next.position());
    assert_eq!(message, witness.next_event(PATIENCE).await);
}

#[tokio::test]
async fn a_client_too_far_behind_is_told_to_resync() {
    let app = spawn_app_with(&[("WS_CATCH_UP_POSITIONS", "3")]).await;
    let fx = app.lot_with_slot().await;
    let (service, _) = app.service_account().await;
    let (driver, _) = app.signed_in("user").await;
    let mut last = 0;
    for change in 0..5 {
        last = observe(&app, &service, fx.slot_id, change % 2 == 0)
            .await
            .position()
            .unwrap();
    }
    // The hub has sent up to `last` once a subscriber saw it.
    let mut witness = open(&app, &driver, &format!("subscribe=lot:{}", fx.lot_id)).await;
    let _ = witness.next_frame(Duration::from_millis(200)).await;
    while app.metric("parking_ws_hub_position").await < last as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut socket = Socket::open(
        &app.address,
        Connect {
            token: Some(&driver),
            query: "after=1",
            ..Connect::default()
        },
    )
    .await;
    let resync = socket.next(PATIENCE).await;
    assert_eq!(resync["type"], "resync", "{resync}");
    assert_eq!(resync["position"].as_i64(), Some(last));
    assert_eq!(socket.next(PATIENCE).await["type"], "connected");
}

/// A token for a new user of `app`, signed as the server signs them, expiring in `seconds`
/// (in the past if negative).
async fn mint_token(app: &TestApp, seconds: i64) -> String {
    let (_, user_id) = app.signed_in("user").await;
    let key = HS256Key::from_bytes(JWT_SECRET.as_bytes());
    let mut claims = Claims::with_custom_claims(
        json!({"role": "user"}),
        jwt_simple::prelude::Duration::from_secs(60),
    )
    .with_subject(user_id);
    let now = Clock::now_since_epoch().as_secs() as i64;
    claims.issued_at = Some(UnixTimeStamp::from_secs((now - 600) as u64));
    claims.expires_at = Some(UnixTimeStamp::from_secs((now + seconds) as u64));
    key.authenticate(claims).unwrap()
}

#[tokio::test]
async fn connections_end_on_token_expiry_silence_oversized_messages_and_the_caps() {
    let app = spawn_app_with(&[
        ("WS_PING_SECONDS", "1"),
        ("WS_IDLE_SECONDS", "2"),
        ("WS_MAX_CONNECTIONS", "3"),
    ])
    .await;
    let (token, _) = app.signed_in("user").await;

    let soon = mint_token(&app, 3).await;
    let mut expiring = open(&app, &soon, "").await;
    let started = Instant::now();
    // It answers pings (it reads), so only the token ends it.
    assert_eq!(expiring.closed(PATIENCE).await, Some(4001));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    let mut silent = open(&app, &token, "").await;
    let mut talkative = open(&app, &token, "").await;
    let mut third = open(&app, &token, "").await;
    let over = Socket::connect(
        &app.address,
        Connect {
            token: Some(&token),
            ..Connect::default()
        },
    )
    .await
    .err()
    .expect("over the cap");
    assert_eq!(
        (over.status, over.body["code"].as_str()),
        (503, Some("too_many_connections"))
    );

    third.send_text("x".repeat(5000)).await;
    assert_eq!(third.closed(PATIENCE).await, Some(1009));

    // Not reading, `silent` answers no ping; `talkative` reads, and its client answers them.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert!(talkative
            .next_frame(Duration::from_millis(100))
            .await
            .is_none());
    }
    assert_eq!(silent.closed(PATIENCE).await, Some(4003));
    assert_eq!(
        app.metric("parking_ws_clients_dropped_total{reason=\"idle_timeout\"}")
            .await,
        1
    );
    assert_eq!(
        app.metric("parking_ws_clients_dropped_total{reason=\"token_expired\"}")
            .await,
        1
    );
    assert_eq!(app.metric("parking_ws_connections").await, 1);
}

#[tokio::test]
async fn a_stopping_server_closes_its_websockets_with_1001() {
    let app = spawn_app_with(&[]).await;
    let (token, _) = app.signed_in("user").await;
    let mut server = ServerProcess::start(&app.database_url, &[]).await;
    let there = TestApp::connect(server.address.clone(), app.database_url.clone()).await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(open(&there, &token, "").await);
    }
    let exited = tokio::task::spawn_blocking(move || {
        let exited = server.terminate(Duration::from_secs(10));
        (exited, server)
    });
    for socket in &mut sockets {
        assert_eq!(socket.closed(PATIENCE).await, Some(1001));
    }
    let (exited, _server) = exited.await.unwrap();
    assert!(exited, "parking-api exits cleanly on SIGTERM");
}
