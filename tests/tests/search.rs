//! Finding lots near a point, and slots free for a time range.

use parking_tests::{hours_from_now, spawn_app, Reply, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

async fn lot_at(app: &TestApp, token: &str, name: &str, latitude: f64, longitude: f64) -> Uuid {
    let mut body = app.lot_body();
    body["name"] = json!(name);
    body["latitude"] = json!(latitude);
    body["longitude"] = json!(longitude);
    let created = app.post("/api/v1/lots", Some(token), body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    created.id()
}

fn names(reply: &Reply) -> Vec<&str> {
    reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn nearby_lists_active_lots_within_the_radius_nearest_first() {
    nearby_finds_what_is_near(&spawn_app().await).await;
}

#[tokio::test]
async fn nearby_with_postgis_answers_the_same() {
    let app = parking_tests::spawn_app_with(&[("NEARBY_SEARCH", "postgis")]).await;
    nearby_finds_what_is_near(&app).await;
}

async fn nearby_finds_what_is_near(app: &parking_tests::TestApp) {
    let (owner, _) = app.signed_in("parking_owner").await;
    let (lat, lng) = (45.7640, 4.8357);
    lot_at(app, &owner, "Eleven km north", lat + 0.1, lng).await;
    lot_at(app, &owner, "Here", lat, lng).await;
    lot_at(app, &owner, "Paris", 48.8566, 2.3522).await;
    lot_at(app, &owner, "One km north", lat + 0.01, lng).await;
    let closed = lot_at(app, &owner, "Closed, here", lat, lng).await;
    app.request(
        Method::DELETE,
        &format!("/api/v1/lots/{closed}"),
        Some(&owner),
        None,
    )
    .await;

    let near = app
        .get(
            &format!("/api/v1/lots/nearby?lat={lat}&lng={lng}&radius_km=5"),
            None,
        )
        .await;
    assert_eq!(near.status, StatusCode::OK, "{near:?}");
    assert_eq!(names(&near), ["Here", "One km north"]);
    assert_eq!(near.body["total"], 2);
    let distances: Vec<f64> = near.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["distance_km"].as_f64().unwrap())
        .collect();
    assert!(distances[0] < 0.001, "{distances:?}");
    assert!((distances[1] - 1.112).abs() < 0.01, "{distances:?}");
    assert!(
        near.body["items"][0]["total_slots"].is_number(),
        "items are full lots"
    );

    let wider = app
        .get(
            &format!("/api/v1/lots/nearby?lat={lat}&lng={lng}&radius_km=20&limit=2"),
            None,
        )
        .await;
    assert_eq!(names(&wider), ["Here", "One km north"]);
    assert_eq!(wider.body["total"], 3);
    let default_radius = app
        .get(&format!("/api/v1/lots/nearby?lat={lat}&lng={lng}"), None)
        .await;
    assert_eq!(default_radius.body["total"], 2, "default radius is 5 km");
}

#[tokio::test]
async fn nearby_refuses_impossible_questions() {
    let app = spawn_app().await;
    app.get("/api/v1/lots/nearby?lat=123&lng=4", None)
        .await
        .assert_problem(422, "invalid_coordinates");
    app.get("/api/v1/lots/nearby?lat=45&lng=4&radius_km=0", None)
        .await
        .assert_problem(422, "invalid_radius");
    app.get("/api/v1/lots/nearby?lat=45&lng=4&radius_km=500", None)
        .await
        .assert_problem(422, "invalid_radius");
    app.get("/api/v1/lots/nearby?lat=45&lng=4&limit=101", None)
        .await
        .assert_problem(422, "invalid_limit");
    app.get("/api/v1/lots/nearby?lng=4", None)
        .await
        .assert_problem(400, "malformed_query");
}

#[tokio::test]
async fn availability_lists_slots_free_for_the_whole_range() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await; // A1, standard
    let slots = format!("/api/v1/lots/{}/slots", fx.lot_id);
    for (label, kind) in [("D1", "disabled"), ("E1", "ev_charging")] {
        let added = app
            .post(
                &slots,
                Some(&fx.owner_token),
                json!({"label": label, "slot_type": kind}),
            )
            .await;
        assert_eq!(added.status, StatusCode::CREATED);
    }
    let (driver, _) = app.signed_in("user").await;
    let booking = app
        .book(&driver, fx.slot_id, hours_from_now(2), hours_from_now(4))
        .await;
    assert_eq!(booking.status, StatusCode::CREATED);

    let ask = |from: i64, to: i64, kind: Option<&str>| {
        let mut path = format!(
            "/api/v1/lots/{}/availability?from={}&to={}",
            fx.lot_id,
            hours_from_now(from).to_rfc3339().replace('+', "%2B"),
            hours_from_now(to).to_rfc3339().replace('+', "%2B"),
        );
        if let Some(kind) = kind {
            path.push_str(&format!("&slot_type={kind}"));
        }
        let app = &app;
        async move { app.get(&path, None).await }
    };
    let labels = |reply: &Reply| -> Vec<String> {
        reply.body["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["label"].as_str().unwrap().to_owned())
            .collect()
    };

    let overlapping = ask(1, 3, None).await;
    assert_eq!(overlapping.status, StatusCode::OK, "{overlapping:?}");
    assert_eq!(
        (
            overlapping.body["available"].clone(),
            overlapping.body["total"].clone()
        ),
        (json!(2), json!(3))
    );
    assert_eq!(labels(&overlapping), ["D1", "E1"]);
    let standard = ask(1, 3, Some("standard")).await;
    assert_eq!(
        (
            standard.body["available"].clone(),
            standard.body["total"].clone()
        ),
        (json!(0), json!(1))
    );
    let adjacent = ask(4, 6, None).await;
    assert_eq!(
        labels(&adjacent),
        ["A1", "D1", "E1"],
        "a range starting at the booking's end is free"
    );

    app.post(
        &format!("/api/v1/bookings/{}/cancel", booking.id()),
        Some(&driver),
        json!({}),
    )
    .await;
    assert_eq!(ask(1, 3, None).await.body["available"], 3);

    ask(3, 3, None).await.assert_problem(422, "invalid_range");
    ask(1, 3, Some("boat"))
        .await
        .assert_problem(422, "invalid_slot_type");
    let unknown = format!(
        "/api/v1/lots/{}/availability?from=2030-01-01T00:00:00Z&to=2030-01-01T01:00:00Z",
        Uuid::new_v4()
    );
    app.get(&unknown, None)
        .await
        .assert_problem(404, "lot_not_found");
    let malformed = format!("/api/v1/lots/{}/availability?from=soon&to=later", fx.lot_id);
    app.get(&malformed, None)
        .await
        .assert_problem(400, "malformed_query");
}
