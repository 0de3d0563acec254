//! Safety reviews end to end: who may review, revisions kept in the history, averages in the
//! lot and its search, an admin's removal, and a rebuild that gives the same rows.

use parking_tests::{assert_read_models_equal_a_rebuild, spawn_app, Reply, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

fn ratings(safety: i64, lighting: i64, security: i64, cleanliness: i64) -> Value {
    json!({
        "safety_rating": safety, "lighting_rating": lighting,
        "security_rating": security, "cleanliness_rating": cleanliness,
    })
}

async fn review(app: &TestApp, token: &str, lot_id: Uuid, body: Value) -> Reply {
    app.post(&format!("/api/v1/lots/{lot_id}/reviews"), Some(token), body)
        .await
}

async fn safety(app: &TestApp, lot_id: Uuid) -> Value {
    let answer = app
        .get(&format!("/api/v1/lots/{lot_id}/safety"), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    answer.body
}

#[tokio::test]
async fn drivers_who_parked_rate_a_lot_revise_and_the_lot_shows_the_averages() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;

    // Nobody reviews a lot they did not book.
    let refused = review(&app, &driver, fx.lot_id, ratings(5, 5, 5, 5)).await;
    refused.assert_problem(403, "no_booking_at_lot");
    let unknown = review(&app, &driver, Uuid::new_v4(), ratings(5, 5, 5, 5)).await;
    unknown.assert_problem(404, "lot_not_found");
    let empty = safety(&app, fx.lot_id).await;
    assert_eq!(empty["review_count"], 0);
    assert_eq!(empty["overall"], Value::Null);
    assert_eq!(empty["ai_safety_score"], Value::Null);

    app.booked_hour(&driver, fx.slot_id, 2).await;
    let comment = r#"<b>"Well lit"</b> & the guard's kind"#;
    let mut body = ratings(5, 4, 3, 2);
    body["comment"] = json!(comment);
    let first = review(&app, &driver, fx.lot_id, body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert_eq!(first.body["comment"], comment);
    assert_eq!(first.body["revised"], false);
    let review_id = first.body["review_id"].as_str().unwrap().to_owned();
    let rated = safety(&app, fx.lot_id).await;
    assert_eq!(
        (
            rated["review_count"].as_i64(),
            rated["safety_rating"].as_f64()
        ),
        (Some(1), Some(5.0))
    );
    assert_eq!(
        (
            rated["lighting_rating"].as_f64(),
            rated["cleanliness_rating"].as_f64()
        ),
        (Some(4.0), Some(2.0))
    );
    assert_eq!(rated["overall"].as_f64(), Some(3.5));
    let lot = app.get(&format!("/api/v1/lots/{}", fx.lot_id), None).await;
    assert_eq!(lot.body["average_rating"].as_f64(), Some(3.5));
    assert_eq!(lot.body["safety_score"].as_f64(), Some(62.5));

    // A revision replaces the figures; the history keeps both versions, newest first.
    let revised = review(&app, &driver, fx.lot_id, ratings(1, 1, 1, 1)).await;
    assert_eq!(revised.status, StatusCode::OK, "{revised:?}");
    assert_eq!(revised.body["revised"], true);
    assert_eq!(revised.body["review_id"], review_id.as_str());
    assert_eq!(revised.body["comment"], Value::Null);
    assert_eq!(safety(&app, fx.lot_id).await["overall"].as_f64(), Some(1.0));
    let path = format!("/api/v1/lots/{}/reviews", fx.lot_id);
    let history = app.get(&path, Some(&driver)).await;
    assert_eq!(history.body["total"], 2, "{history:?}");
    let items = history.body["items"].as_array().unwrap();
    assert_eq!(
        (items[0]["version"].as_i64(), items[0]["kind"].as_str()),
        (Some(2), Some("revised"))
    );
    assert_eq!(
        (items[1]["version"].as_i64(), items[1]["kind"].as_str()),
        (Some(1), Some("submitted"))
    );
    assert_eq!(items[1]["comment"], comment);
    assert_eq!(items[1]["safety_rating"], 5);
    assert!(items.iter().all(|i| i["mine"] == true
        && i["review_id"] == review_id.as_str()
        && i.get("user_id").is_none()));
    // Others see neither who wrote it nor the review's id (derived from its driver's).
    let anonymous = app.get(&path, None).await;
    let others = anonymous.body["items"].as_array().unwrap();
    assert!(others
        .iter()
        .all(|i| i["mine"] == false && i["review_id"].is_null()));

    // A second driver: the means are over both standing reviews.
    let (other, _) = app.signed_in("user").await;
    app.booked_hour(&other, fx.slot_id, 6).await;
    let second = review(&app, &other, fx.lot_id, ratings(5, 5, 5, 4)).await;
    assert_eq!(second.status, StatusCode::CREATED, "{second:?}");
    let both = safety(&app, fx.lot_id).await;
    assert_eq!(both["review_count"], 2);
    assert_eq!(both["safety_rating"].as_f64(), Some(3.0));
    assert_eq!(both["cleanliness_rating"].as_f64(), Some(2.5));
    assert_eq!(both["overall"].as_f64(), Some(2.875));

    // Search filters and sorts on it.
    let unrated = app.lot_with_slot().await;
    let app_ref = &app;
    let listed = |min: f64| {
        let path = format!("/api/v1/lots?min_rating={min}&per_page=100");
        async move {
            let page = app_ref.get(&path, None).await;
            (page.body["items"].as_array().unwrap().iter())
                .map(|l| l["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let rated_lot = fx.lot_id.to_string();
    assert_eq!(listed(2.8).await, std::slice::from_ref(&rated_lot));
    assert!(listed(2.9).await.is_empty());
    // Rated lots first, in both directions (no rating is no evidence).
    for sort in ["-rating", "rating"] {
        let sorted = app.get(&format!("/api/v1/lots?sort={sort}"), None).await;
        let ids: Vec<&str> = (sorted.body["items"].as_array().unwrap().iter())
            .map(|l| l["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [rated_lot.as_str(), &unrated.lot_id.to_string()]);
    }

    // An admin takes the first review down, with a reason.
    let remove = format!(
        "/api/v1/lots/{}/reviews/{review_id}?reason=offensive",
        fx.lot_id
    );
    let by_driver = app
        .request(Method::DELETE, &remove, Some(&driver), None)
        .await;
    by_driver.assert_problem(403, "forbidden");
    let (admin, _) = app.admin().await;
    let no_reason = format!("/api/v1/lots/{}/reviews/{review_id}", fx.lot_id);
    let refused = app
        .request(Method::DELETE, &no_reason, Some(&admin), None)
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{refused:?}");
    let removed = app
        .request(Method::DELETE, &remove, Some(&admin), None)
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{removed:?}");
    let after = safety(&app, fx.lot_id).await;
    assert_eq!(
        (after["review_count"].as_i64(), after["overall"].as_f64()),
        (Some(1), Some(4.75))
    );
    let history = app.get(&path, None).await;
    assert_eq!(history.body["total"], 1, "{history:?}");
    let again = app
        .request(Method::DELETE, &remove, Some(&admin), None)
        .await;
    again.assert_problem(404, "review_not_found");
    // Reviewing again starts a new review; the removed versions stay out of the history.
    let anew = review(&app, &driver, fx.lot_id, ratings(3, 3, 3, 3)).await;
    assert_eq!(anew.status, StatusCode::CREATED, "{anew:?}");
    let history = app.get(&path, Some(&driver)).await;
    assert_eq!(history.body["total"], 2, "{history:?}");
    let mine: Vec<_> = (history.body["items"].as_array().unwrap().iter())
        .filter(|i| i["mine"] == true)
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["kind"], "submitted");
    let unknown = app
        .get(&format!("/api/v1/lots/{}/reviews", Uuid::new_v4()), None)
        .await;
    unknown.assert_problem(404, "lot_not_found");

    assert_read_models_equal_a_rebuild(&app.db).await;
}

#[tokio::test]
async fn bad_reviews_are_refused_and_a_cancelled_booking_does_not_count() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    let booking = app.booked_hour(&driver, fx.slot_id, 2).await;

    for bad in [
        ratings(0, 3, 3, 3),
        ratings(3, 6, 3, 3),
        ratings(3, 3, -1, 3),
    ] {
        review(&app, &driver, fx.lot_id, bad)
            .await
            .assert_problem(422, "invalid_rating");
    }
    for comment in [
        "x".repeat(2001),
        "bell\u{7}".to_owned(),
        "two\nlines".to_owned(),
    ] {
        let mut body = ratings(3, 3, 3, 3);
        body["comment"] = json!(comment);
        review(&app, &driver, fx.lot_id, body)
            .await
            .assert_problem(422, "invalid_comment");
    }
    let missing = review(&app, &driver, fx.lot_id, json!({"safety_rating": 3})).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{missing:?}");
    assert_eq!(safety(&app, fx.lot_id).await["review_count"], 0);

    let cancel = format!("/api/v1/bookings/{}/cancel", booking.id());
    let cancelled = app.post(&cancel, Some(&driver), json!({})).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{cancelled:?}");
    review(&app, &driver, fx.lot_id, ratings(3, 3, 3, 3))
        .await
        .assert_problem(403, "no_booking_at_lot");
}
