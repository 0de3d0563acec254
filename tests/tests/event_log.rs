//! The global log: commit-ordered positions that no late commit can land behind, and
//! read-your-writes over HTTP with `X-Event-Position` / `X-Min-Position`.

use std::collections::HashMap;

use parking_infra::append::{append_all, NewEvent};
use parking_infra::log::read_after;
use parking_tests::{spawn_app, spawn_app_with};
use serde_json::json;
use sqlx::PgExecutor;

/// Appends one event as postgres-es does (no position: the sequencer gives it later).
async fn append(db: impl PgExecutor<'_>, stream: &str, sequence: i64) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('test', $1, $2, 'Happened', '1', '{}', '{}')",
    )
    .bind(stream)
    .bind(sequence)
    .execute(db)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_transaction_that_commits_late_is_read_after_what_committed_before_it() {
    let app = spawn_app().await;
    let log = parking_tests::event_log(&app.db);
    let start = log.sequence().await.unwrap();

    // One append starts first and stays open...
    let mut slow = app.db.begin().await.unwrap();
    append(&mut *slow, "slow", 1).await;
    // ... while later ones commit and are numbered.
    for i in 0..5 {
        append(&app.db, &format!("fast-{i}"), 1).await;
        log.sequence().await.unwrap();
    }
    let mut reader = app.db.acquire().await.unwrap();
    let first = read_after(&mut reader, start, 1000).await.unwrap();
    let streams: Vec<&str> = first.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(streams, ["fast-0", "fast-1", "fast-2", "fast-3", "fast-4"]);
    let positions: Vec<i64> = first.iter().map(|e| e.global_position).collect();
    assert_eq!(positions, (start + 1..=start + 5).collect::<Vec<_>>());
    let checkpoint = start + 5;

    // The slow append commits now. A reader that numbered rows at insert time would have given
    // it a position below the ones already read, and skipped it; here it comes next.
    slow.commit().await.unwrap();
    assert_eq!(log.sequence().await.unwrap(), checkpoint + 1);
    let next = read_after(&mut reader, checkpoint, 1000).await.unwrap();
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(
        (next[0].aggregate_id.as_str(), next[0].global_position),
        ("slow", checkpoint + 1)
    );

    // It really did start before the others: the hazard was there.
    let order: Vec<String> = sqlx::query_scalar(
        "SELECT aggregate_id FROM events WHERE aggregate_type = 'test' ORDER BY transaction_id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(order[0], "slow");
}

#[tokio::test]
async fn an_append_numbers_its_events_after_every_append_that_committed_before_it() {
    let app = spawn_app().await;
    let log = parking_tests::event_log(&app.db);
    let start = log.sequence().await.unwrap();
    let event = |stream: &str| NewEvent {
        aggregate_type: "test",
        aggregate_id: stream.to_owned(),
        sequence: 1,
        event_type: "Happened".to_owned(),
        event_version: "1".to_owned(),
        payload: "{}".to_owned(),
        metadata: "{}".to_owned(),
    };

    // One append is inside a transaction that stays open (as a slow commit would)...
    let mut slow = app.db.begin().await.unwrap();
    let slow_head: i64 = sqlx::query_scalar(
        "SELECT parking_append_events('{test}', '{slow}', '{1}', '{Happened}', '{1}', '{\"{}\"}', '{\"{}\"}')",
    )
    .fetch_one(&mut *slow)
    .await
    .unwrap();
    assert_eq!(slow_head, start + 1);
    // ... so a later append waits for it instead of taking a position a reader could pass.
    let fast = tokio::spawn({
        let db = app.db.clone();
        async move { append_all(&db, &[event("fast")]).await.unwrap() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !fast.is_finished(),
        "the later append went ahead of an open one"
    );
    let mut reader = app.db.acquire().await.unwrap();
    assert!(read_after(&mut reader, start, 10).await.unwrap().is_empty());

    slow.commit().await.unwrap();
    assert_eq!(fast.await.unwrap(), start + 2);
    let read = read_after(&mut reader, start, 10).await.unwrap();
    let order: Vec<(&str, i64)> = read
        .iter()
        .map(|e| (e.aggregate_id.as_str(), e.global_position))
        .collect();
    assert_eq!(order, [("slow", start + 1), ("fast", start + 2)]);
}

#[tokio::test]
async fn concurrent_appends_get_dense_positions_in_each_streams_order() {
    let app = spawn_app().await;
    let log = parking_tests::event_log(&app.db);
    let start = log.sequence().await.unwrap();
    let writers = (0..8).map(|w| {
        let (db, log) = (app.db.clone(), log.clone());
        tokio::spawn(async move {
            for sequence in 1..=40 {
                append(&db, &format!("stream-{w}"), sequence).await;
                // Half the appenders number their own events; the others rely on anyone else.
                if w % 2 == 0 {
                    log.sequence().await.unwrap();
                }
            }
        })
    });
    for writer in futures::future::join_all(writers).await {
        writer.unwrap();
    }
    let head = log.sequence().await.unwrap();
    assert_eq!(head, start + 320);

    let mut db = app.db.acquire().await.unwrap();
    let events = read_after(&mut db, start, 10_000).await.unwrap();
    let positions: Vec<i64> = events.iter().map(|e| e.global_position).collect();
    assert_eq!(
        positions,
        (start + 1..=head).collect::<Vec<_>>(),
        "dense, once each"
    );
    let mut last_sequence: HashMap<&str, i64> = HashMap::new();
    for event in &events {
        let last = last_sequence.entry(&event.aggregate_id).or_default();
        assert_eq!(
            event.sequence,
            *last + 1,
            "{} out of order",
            event.aggregate_id
        );
        *last = event.sequence;
    }
}

#[tokio::test]
async fn writes_tell_their_position_and_reads_can_wait_for_it() {
    let app = spawn_app_with(&[("READ_WAIT_MS", "300")]).await;
    let (owner, _) = app.signed_in("parking_owner").await;
    let created = app.post("/api/v1/lots", Some(&owner), app.lot_body()).await;
    assert_eq!(created.status.as_u16(), 201, "{created:?}");
    let position = created.position().expect("X-Event-Position on a write");
    assert!(position > 0);
    let timing = created.headers["server-timing"].to_str().unwrap();
    assert!(timing.starts_with("read-models;dur="), "{timing}");

    let path = format!("/api/v1/lots/{}", created.id());
    let read = app.get_at(&path, Some(&owner), position).await;
    assert_eq!(read.status.as_u16(), 200, "{read:?}");
    assert_eq!(read.body["name"], created.body["name"]);
    assert!(read.position().is_none(), "a read writes nothing");

    // A position beyond the end of the log cannot be waited for.
    let ahead = app.get_at(&path, Some(&owner), position + 1_000).await;
    ahead.assert_problem(400, "invalid_min_position");

    // An event the lots projection cannot apply stops it there (it never skips): a read that
    // needs it waits READ_WAIT_MS, then gets 503 with a retry hint.
    append(&app.db, "not-a-uuid", 1).await;
    sqlx::query(
        "UPDATE events SET aggregate_type = 'lot', event_type = 'LotRegistered',
                payload = '{\"LotRegistered\": {\"bogus\": true}}'
          WHERE aggregate_id = 'not-a-uuid'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let poison = parking_tests::event_log(&app.db).sequence().await.unwrap();
    let started = std::time::Instant::now();
    let stuck = app.get_at(&path, Some(&owner), poison).await;
    stuck.assert_problem(503, "read_model_lagging");
    assert!(stuck.headers.contains_key("retry-after"), "{stuck:?}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    // Reads that do not need it are not held up.
    let fresh = app.get_at(&path, Some(&owner), position).await;
    assert_eq!(fresh.status.as_u16(), 200, "{fresh:?}");

    for bad in ["-1", "soon", "1.5"] {
        let reply = app
            .client
            .get(format!("{}{path}", app.address))
            .header("x-min-position", bad)
            .send()
            .await
            .unwrap();
        parking_tests::TestApp::reply(reply)
            .await
            .assert_problem(400, "invalid_min_position");
    }

    // A refused write records nothing and tells no position.
    let refused = app
        .post("/api/v1/lots", Some(&owner), json!({"name": ""}))
        .await;
    assert!(refused.status.is_client_error());
    assert!(refused.position().is_none(), "{refused:?}");
}

#[tokio::test]
async fn a_replayed_answer_carries_the_original_position() {
    let app = spawn_app().await;
    let (owner, _) = app.signed_in("parking_owner").await;
    let first = app
        .post_idempotent("/api/v1/lots", Some(&owner), "lot-once", app.lot_body())
        .await;
    assert_eq!(first.status.as_u16(), 201, "{first:?}");
    // Something else happens in between.
    app.post("/api/v1/lots", Some(&owner), app.lot_body()).await;
    let again = app
        .post_idempotent("/api/v1/lots", Some(&owner), "lot-once", app.lot_body())
        .await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.position(), first.position());
}
