//! Health, unknown routes, request ids, and the OpenAPI document.

use parking_tests::{hours_from_now, spawn_app};
use reqwest::StatusCode;
use std::collections::BTreeSet;

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let health = app.get("/health", None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "ok");
    let ready = app.get("/ready", None).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["database"], "ok");
}

#[tokio::test]
async fn unknown_routes_are_problem_json_404_with_a_request_id() {
    let app = spawn_app().await;
    let reply = app.get("/api/v1/nothing-here", None).await;
    reply.assert_problem(404, "route_not_found");
    let id = reply.request_id.clone().expect("x-request-id header");
    assert_eq!(reply.body["request_id"], id.as_str());
}

#[tokio::test]
async fn a_sane_incoming_request_id_is_kept() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/health", app.address))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-42");
    let response = app
        .client
        .get(format!("{}/health", app.address))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    assert_ne!(response.headers()["x-request-id"], "bad id with spaces");
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_served_operations() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json", None).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let mut operations = BTreeSet::new();
    for (path, item) in doc.body["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                operations.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let expected: BTreeSet<String> = [
        "GET /health",
        "GET /ready",
        "GET /metrics",
        "GET /ws",
        "POST /api/v1/auth/register",
        "POST /api/v1/auth/login",
        "GET /api/v1/auth/me",
        "POST /api/v1/lots",
        "GET /api/v1/lots",
        "GET /api/v1/lots/{lot_id}",
        "PATCH /api/v1/lots/{lot_id}",
        "DELETE /api/v1/lots/{lot_id}",
        "POST /api/v1/lots/{lot_id}/slots",
        "GET /api/v1/lots/{lot_id}/slots",
        "GET /api/v1/lots/nearby",
        "GET /api/v1/lots/{lot_id}/availability",
        "PATCH /api/v1/slots/{slot_id}",
        "POST /api/v1/slots/{slot_id}/occupancy",
        "PUT /api/v1/lots/{lot_id}/cameras/{camera_id}",
        "DELETE /api/v1/lots/{lot_id}/cameras/{camera_id}",
        "GET /api/v1/lots/{lot_id}/cameras",
        "POST /api/v1/lots/{lot_id}/cameras/{camera_id}/lighting",
        "POST /api/v1/bookings",
        "GET /api/v1/bookings",
        "GET /api/v1/bookings/{booking_id}",
        "POST /api/v1/bookings/{booking_id}/cancel",
        "POST /api/v1/bookings/{booking_id}/check-in",
        "POST /api/v1/bookings/{booking_id}/check-out",
        "POST /api/v1/payments/intents",
        "GET /api/v1/payments/{payment_id}",
        "POST /api/v1/payments/{payment_id}/refund",
        "POST /api/v1/payments/webhook",
        "GET /api/v1/feeds/datex2/parking",
        "POST /api/v1/lots/{lot_id}/reviews",
        "GET /api/v1/lots/{lot_id}/reviews",
        "GET /api/v1/lots/{lot_id}/safety",
        "DELETE /api/v1/lots/{lot_id}/reviews/{review_id}",
        "GET /api/v1/analytics/dashboard",
        "GET /api/v1/analytics/lots/{lot_id}",
        "GET /api/v1/lots/{lot_id}/forecast",
        "GET /api/v1/audit/events",
        "GET /api/v1/audit/streams/{aggregate_type}/{aggregate_id}",
        "GET /api/v1/audit/streams/{aggregate_type}/{aggregate_id}/state",
        "GET /api/v1/audit/verify",
        "POST /api/v1/users/{user_id}/erase",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(operations, expected);
    // The WebSocket's messages have their schemas.
    let upgrade = &doc.body["paths"]["/ws"]["get"]["responses"]["101"];
    assert!(
        upgrade["content"]["application/json"]["schema"].is_object(),
        "{upgrade}"
    );
    for schema in ["ServerMessage", "SlotMessage", "BookingMessage", "Resync"] {
        assert!(
            doc.body["components"]["schemas"][schema].is_object(),
            "{schema}"
        );
    }
    // Read-your-writes is documented where it applies.
    let get_lot = &doc.body["paths"]["/api/v1/lots/{lot_id}"]["get"];
    assert!(
        get_lot["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "X-Min-Position" && p["in"] == "header"),
        "{get_lot}"
    );
    let create_lot = &doc.body["paths"]["/api/v1/lots"]["post"];
    assert!(
        create_lot["responses"]["201"]["headers"]["X-Event-Position"].is_object(),
        "{create_lot}"
    );
    assert!(doc.body["components"]["schemas"]["Problem"].is_object());
    assert!(doc.body["components"]["securitySchemes"]["bearer"].is_object());

    // Every documented operation is really served: none answers route_not_found.
    for operation in &operations {
        let (method, path) = operation.split_once(' ').unwrap();
        let path = path
            .replace("{lot_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{booking_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{slot_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{camera_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{payment_id}", &uuid::Uuid::new_v4().to_string());
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let reply = app.request(method, &path, None, None).await;
        assert_ne!(
            reply.code(),
            "route_not_found",
            "{operation} is documented but not served"
        );
        assert!(
            !reply.status.is_server_error(),
            "{operation} fails: {reply:?}"
        );
    }
}

#[tokio::test]
async fn the_api_reference_page_is_served_with_its_assets() {
    let app = spawn_app().await;
    // /docs redirects to /docs/ (reqwest follows it).
    let page = app
        .client
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui-bundle.js"), "{html}");
    // The UI's script is compiled into the binary: no CDN is needed.
    let bundle = app
        .client
        .get(format!("{}/docs/swagger-ui-bundle.js", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), StatusCode::OK);
    assert!(bundle.bytes().await.unwrap().len() > 100_000);
    let init = app
        .client
        .get(format!("{}/docs/swagger-initializer.js", app.address))
        .send()
        .await
        .unwrap();
    assert!(init.text().await.unwrap().contains("/openapi.json"));
}

#[tokio::test]
async fn metrics_count_the_booking_desks_batches() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    assert_eq!(app.metric("parking_booking_batches_total").await, 0);

    for hour in 1..=3 {
        app.booked_hour(&driver, fx.slot_id, hour).await;
    }
    // One after the other: three batches of one.
    for (name, count) in [
        ("parking_booking_requests_received_total", 3),
        ("parking_booking_batches_total", 3),
        ("parking_booking_batched_requests_total", 3),
        ("parking_booking_batch_redecisions_total", 0),
    ] {
        assert_eq!(app.metric(name).await, count, "{name}");
    }
    // Counters only move forward between scrapes.
    assert_eq!(app.metric("parking_booking_batches_total").await, 3);
}

#[tokio::test]
async fn metrics_count_requests_by_route_pattern() {
    let app = spawn_app().await;
    let asked: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::new_v4()).collect();
    for id in &asked {
        app.get(&format!("/api/v1/lots/{id}"), None).await;
    }
    let response = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = response.text().await.unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("parking_http_requests_total{")
                && l.contains(r#"route="/api/v1/lots/{lot_id}""#)
        })
        .unwrap_or_else(|| panic!("no request counter in\n{text}"));
    assert!(
        line.contains(r#"status="404""#) && line.ends_with(" 3"),
        "{line}"
    );
    assert!(text.contains("parking_http_request_duration_seconds_bucket"));
    assert!(text.contains("parking_db_pool_connections"));
    // The log and its consumers: nothing written yet, so every projection is caught up.
    assert!(text.contains("parking_log_head_position 0"), "{text}");
    assert!(
        text.contains(r#"parking_log_consumer_lag_events{consumer="projection:bookings"} 0"#),
        "{text}"
    );
    for id in &asked {
        assert!(
            !text.contains(&id.to_string()),
            "raw paths must not become label values"
        );
    }
}

#[tokio::test]
async fn errors_made_by_the_framework_are_problem_json_too() {
    let app = spawn_app().await;
    let (token, _) = app.signed_in("parking_owner").await;
    // Over the JSON size limit: 413 from the body extractor.
    let huge = format!(r#"{{"name": "{}"}}"#, "x".repeat(100_000));
    let response = app
        .client
        .post(format!("{}/api/v1/lots", app.address))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    parking_tests::TestApp::reply(response)
        .await
        .assert_problem(413, "payload_too_large");
    // A cancellation body over the raw body limit, with an idempotency key (read by the middleware).
    let response = app
        .client
        .post(format!(
            "{}/api/v1/bookings/{}/cancel",
            app.address,
            uuid::Uuid::new_v4()
        ))
        .bearer_auth(&token)
        .header("idempotency-key", "big")
        .body(vec![b' '; 300_000])
        .send()
        .await
        .unwrap();
    let reply = parking_tests::TestApp::reply(response).await;
    assert_eq!(reply.status.as_u16(), 413, "{reply:?}");
    assert_eq!(reply.content_type, "application/problem+json");
}

#[tokio::test]
async fn a_database_outage_answers_503_and_the_service_recovers() {
    let app = spawn_app().await;
    let (token, _) = app.signed_in("parking_owner").await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    // Close this test's database to connections and cut the app's existing ones.
    let db_name = app.database_url.rsplit('/').next().unwrap().to_owned();
    let admin = sqlx::PgPool::connect(&format!("{}/postgres", parking_tests::server_url()))
        .await
        .unwrap();
    let allow = |yes: bool| format!(r#"ALTER DATABASE "{db_name}" ALLOW_CONNECTIONS {yes}"#);
    sqlx::query(&allow(false)).execute(&admin).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&db_name)
        .execute(&admin)
        .await
        .unwrap();

    let write = app.post("/api/v1/lots", Some(&token), app.lot_body()).await;
    write.assert_problem(503, "service_unavailable");
    assert_eq!(write.headers["retry-after"], "5");
    // A booking fails with its whole batch, and still says why.
    app.book(&driver, fx.slot_id, hours_from_now(1), hours_from_now(2))
        .await
        .assert_problem(503, "service_unavailable");
    app.get("/api/v1/lots", None)
        .await
        .assert_problem(503, "service_unavailable");
    // Sign-ins that could not be checked do not count against the account.
    for _ in 0..12 {
        let login = app
            .login("nobody-yet@example.com", "whatever password")
            .await;
        login.assert_problem(503, "service_unavailable");
    }
    let ready = app.get("/ready", None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ready.body["database"], "unreachable",
        "readiness keeps its own report: {ready:?}"
    );

    sqlx::query(&allow(true)).execute(&admin).await.unwrap();
    let recovered = app.post("/api/v1/lots", Some(&token), app.lot_body()).await;
    assert_eq!(recovered.status, StatusCode::CREATED, "{recovered:?}");
    assert_eq!(app.get("/ready", None).await.status, StatusCode::OK);
    app.login("nobody-yet@example.com", "whatever password")
        .await
        .assert_problem(401, "invalid_credentials");
    let lots: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'LotRegistered'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(lots, 2, "the refused write recorded nothing");
    let booked = app
        .book(&driver, fx.slot_id, hours_from_now(1), hours_from_now(2))
        .await;
    assert_eq!(booked.status, StatusCode::CREATED, "{booked:?}");
}
