//! The booking desk's pipelined appends (migration 0009, ADR 0013): appends sent one after
//! another on one connection run in that order, and an append that follows one that was not
//! recorded records nothing. Against the real database; through HTTP, a desk whose connection
//! is cut answers 503, not 500, and connects again.

use parking_infra::append::{AppendError, AppendTarget, Appender, Chain, NewEvent};
use parking_tests::{hours_from_now, spawn_app};
use sqlx::Connection;
use uuid::Uuid;

fn event(stream: &str, sequence: i64) -> NewEvent {
    NewEvent {
        aggregate_type: "test",
        aggregate_id: stream.to_owned(),
        sequence,
        event_type: "Happened".to_owned(),
        event_version: "1".to_owned(),
        payload: format!(r#"{{"n":{sequence}}}"#),
        metadata: "{}".to_owned(),
    }
}

fn chain(after: Option<Uuid>) -> Chain {
    Chain {
        after,
        batch: Uuid::new_v4(),
    }
}

async fn streams(app: &parking_tests::TestApp) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT aggregate_id, global_position FROM events WHERE aggregate_type = 'test'
          ORDER BY global_position",
    )
    .fetch_all(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn pipelined_appends_run_in_order_and_one_after_a_failed_append_records_nothing() {
    let app = spawn_app().await;
    let target = AppendTarget::parse(&app.database_url.clone().into()).unwrap();
    let mut appender = Appender::new(target);

    // Three appends sent before any has answered: they run in the order sent.
    let (a, b, c) = (chain(None), chain(None), chain(None));
    let b = Chain {
        after: Some(a.batch),
        ..b
    };
    let c = Chain {
        after: Some(b.batch),
        ..c
    };
    let sent_a = appender.send(&[&event("a", 1)], &[], a).await;
    let sent_b = appender
        .send(&[&event("b", 1), &event("b", 2)], &[], b)
        .await;
    let sent_c = appender.send(&[&event("c", 1)], &[], c).await;
    let (head_a, head_b, head_c) = (
        sent_a.await.unwrap(),
        sent_b.await.unwrap(),
        sent_c.await.unwrap(),
    );
    assert_eq!((head_b, head_c), (head_a + 2, head_a + 3));

    // One that loses a race on a stream (stream a has its first event), then one that follows
    // it, sent before the first has failed: neither records anything.
    let lost = chain(Some(c.batch));
    let follower = chain(Some(lost.batch));
    let sent_lost = appender
        .send(&[&event("d", 1), &event("a", 1)], &[], lost)
        .await;
    let sent_follower = appender.send(&[&event("e", 1)], &[], follower).await;
    assert!(matches!(sent_lost.await, Err(AppendError::Conflict)));
    assert!(matches!(sent_follower.await, Err(AppendError::Conflict)));

    // The connection goes on; what was last recorded is still the one to follow.
    let after_c = appender
        .send(&[&event("f", 1)], &[], chain(Some(c.batch)))
        .await;
    assert_eq!(after_c.await.unwrap(), head_c + 1);
    assert_eq!(
        streams(&app).await,
        [
            ("a".to_owned(), head_a),
            ("b".to_owned(), head_a + 1),
            ("b".to_owned(), head_a + 2),
            ("c".to_owned(), head_c),
            ("f".to_owned(), head_c + 1),
        ]
    );
}

#[tokio::test]
async fn a_desk_whose_connection_was_cut_answers_503_and_connects_again() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (token, _) = app.signed_in("user").await;
    app.booked_hour(&token, fx.slot_id, 1).await;

    // The database takes no new connection, and the desk's is cut. Whether the next booking
    // finds its connection closed (and cannot connect again) or sends on it before it knows, it
    // fails on the database: 503 with a retry hint, never 500, and nothing recorded.
    // (A database is closed to connections from another one.)
    let allow = |allowed: bool| {
        let sql = format!(
            "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS {allowed}",
            app.database_url.rsplit('/').next().unwrap()
        );
        async move {
            let admin = format!("{}/postgres", parking_tests::server_url());
            let mut admin = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(&sql).execute(&mut admin).await.unwrap();
        }
    };
    allow(false).await;
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = 'parking-booking-desk' AND datname = current_database()",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(cut, [true], "the desk has one connection of its own");
    let next = app
        .book(&token, fx.slot_id, hours_from_now(2), hours_from_now(3))
        .await;
    allow(true).await;
    next.assert_problem(503, "service_unavailable");
    assert!(next.headers.contains_key("retry-after"), "{next:?}");

    // The one after connects again.
    app.booked_hour(&token, fx.slot_id, 4).await;
    let booked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'booking' AND event_type = 'BookingCreated'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(booked, 2);
}
