//! Lots and slots.

use parking_tests::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn an_owner_registers_a_lot_and_reads_it_back() {
    let app = spawn_app().await;
    let (token, owner_id) = app.signed_in("parking_owner").await;
    let created = app.post("/api/v1/lots", Some(&token), app.lot_body()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_eq!(created.body["owner_id"], owner_id.to_string());
    assert_eq!(created.body["currency"], "EUR");
    assert_eq!(created.body["is_active"], true);
    assert_eq!(created.body["total_slots"], 0);

    let read = app
        .get(&format!("/api/v1/lots/{}", created.id()), None)
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, created.body);
}

#[tokio::test]
async fn a_plain_user_cannot_create_a_lot() {
    let app = spawn_app().await;
    let (token, _) = app.signed_in("user").await;
    app.post("/api/v1/lots", Some(&token), app.lot_body())
        .await
        .assert_problem(403, "forbidden");
    app.post("/api/v1/lots", None, app.lot_body())
        .await
        .assert_problem(401, "unauthenticated");
    let lots: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'lot'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(lots, 0);
}

#[tokio::test]
async fn a_latitude_of_123_is_rejected() {
    let app = spawn_app().await;
    let (token, _) = app.signed_in("parking_owner").await;
    let mut body = app.lot_body();
    body["latitude"] = json!(123.0);
    app.post("/api/v1/lots", Some(&token), body)
        .await
        .assert_problem(422, "invalid_coordinates");
}

#[tokio::test]
async fn bad_rates_currencies_and_names_are_rejected() {
    let app = spawn_app().await;
    let (token, _) = app.signed_in("parking_owner").await;
    let mut negative = app.lot_body();
    negative["hourly_rate_cents"] = json!(-1);
    app.post("/api/v1/lots", Some(&token), negative)
        .await
        .assert_problem(422, "invalid_rate");
    let mut currency = app.lot_body();
    currency["currency"] = json!("EURO");
    app.post("/api/v1/lots", Some(&token), currency)
        .await
        .assert_problem(422, "invalid_currency");
    let mut name = app.lot_body();
    name["name"] = json!("   ");
    app.post("/api/v1/lots", Some(&token), name)
        .await
        .assert_problem(422, "invalid_text");
}

#[tokio::test]
async fn broken_json_is_a_400() {
    let app = spawn_app().await;
    let (token, _) = app.signed_in("parking_owner").await;
    app.post_raw("/api/v1/lots", Some(&token), "{\"name\": ")
        .await
        .assert_problem(400, "malformed_body");
    let mut wrong_type = app.lot_body();
    wrong_type["latitude"] = json!("north");
    app.post("/api/v1/lots", Some(&token), wrong_type)
        .await
        .assert_problem(400, "malformed_body");
}

#[tokio::test]
async fn a_slot_of_an_unknown_type_is_rejected() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let path = format!("/api/v1/lots/{}/slots", fx.lot_id);
    let reply = app
        .post(
            &path,
            Some(&fx.owner_token),
            json!({"label": "B1", "slot_type": "helicopter"}),
        )
        .await;
    reply.assert_problem(422, "invalid_slot_type");
}

#[tokio::test]
async fn slot_labels_are_unique_within_a_lot() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let path = format!("/api/v1/lots/{}/slots", fx.lot_id);
    app.post(
        &path,
        Some(&fx.owner_token),
        json!({"label": "a1", "slot_type": "disabled"}),
    )
    .await
    .assert_problem(409, "duplicate_slot_label");
    let ev = app
        .post(
            &path,
            Some(&fx.owner_token),
            json!({"label": "E1", "slot_type": "ev_charging"}),
        )
        .await;
    assert_eq!(ev.status, StatusCode::CREATED);
    assert_eq!(ev.body["slot_type"], "ev_charging");
    assert_eq!(ev.body["status"], "free");

    let slots = app.get(&path, None).await;
    assert_eq!(slots.body["total"], 2);
    let labels: Vec<&str> = slots.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["A1", "E1"]);
    let lot = app.get(&format!("/api/v1/lots/{}", fx.lot_id), None).await;
    assert_eq!(lot.body["total_slots"], 2);
    assert_eq!(lot.body["available_slots"], 2);
}

#[tokio::test]
async fn only_the_owner_or_an_admin_changes_a_lot() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let path = format!("/api/v1/lots/{}", fx.lot_id);
    let (stranger, _) = app.signed_in("parking_owner").await;
    let patch = json!({"name": "Renamed", "hourly_rate_cents": 300});
    app.request(Method::PATCH, &path, Some(&stranger), Some(patch.clone()))
        .await
        .assert_problem(403, "forbidden");
    app.post(
        &format!("{path}/slots"),
        Some(&stranger),
        json!({"label": "X", "slot_type": "standard"}),
    )
    .await
    .assert_problem(403, "forbidden");

    let updated = app
        .request(Method::PATCH, &path, Some(&fx.owner_token), Some(patch))
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{updated:?}");
    assert_eq!(updated.body["name"], "Renamed");
    assert_eq!(updated.body["hourly_rate_cents"], 300);
    assert_eq!(updated.body["city"], "Lyon");

    let (admin, _) = app.admin().await;
    let by_admin = app
        .request(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(json!({"city": "Paris"})),
        )
        .await;
    assert_eq!(by_admin.body["city"], "Paris");

    let half_location = json!({"latitude": 10.0});
    app.request(
        Method::PATCH,
        &path,
        Some(&fx.owner_token),
        Some(half_location),
    )
    .await
    .assert_problem(422, "invalid_coordinates");
}

#[tokio::test]
async fn a_deleted_lot_is_deactivated_not_erased() {
    let app = spawn_app().await;
    let fx = app.lot_with_slot().await;
    let path = format!("/api/v1/lots/{}", fx.lot_id);
    let deleted = app
        .request(Method::DELETE, &path, Some(&fx.owner_token), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let again = app
        .request(Method::DELETE, &path, Some(&fx.owner_token), None)
        .await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    let lot = app.get(&path, None).await;
    assert_eq!(lot.body["is_active"], false);
    app.post(
        &format!("{path}/slots"),
        Some(&fx.owner_token),
        json!({"label": "Z", "slot_type": "standard"}),
    )
    .await
    .assert_problem(409, "lot_inactive");
    let deactivations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'LotDeactivated'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(deactivations, 1);
}

#[tokio::test]
async fn unknown_and_malformed_lot_ids() {
    let app = spawn_app().await;
    app.get(&format!("/api/v1/lots/{}", uuid::Uuid::new_v4()), None)
        .await
        .assert_problem(404, "lot_not_found");
    app.get("/api/v1/lots/not-a-uuid", None)
        .await
        .assert_problem(400, "malformed_path");
    app.get(
        &format!("/api/v1/lots/{}/slots", uuid::Uuid::new_v4()),
        None,
    )
    .await
    .assert_problem(404, "lot_not_found");
}

#[tokio::test]
async fn lots_are_filtered_sorted_and_paged() {
    let app = spawn_app().await;
    let (token, _) = app.signed_in("parking_owner").await;
    for (name, city, rate) in [
        ("Bravo", "Lyon", 300),
        ("Alpha", "Lyon", 100),
        ("Charlie", "Paris", 200),
    ] {
        let mut body = app.lot_body();
        body["name"] = json!(name);
        body["city"] = json!(city);
        body["hourly_rate_cents"] = json!(rate);
        assert_eq!(
            app.post("/api/v1/lots", Some(&token), body).await.status,
            StatusCode::CREATED
        );
    }
    let names = |reply: &parking_tests::Reply| -> Vec<String> {
        reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let lyon = app.get("/api/v1/lots?city=lyon&sort=name", None).await;
    assert_eq!(names(&lyon), ["Alpha", "Bravo"]);
    assert_eq!(lyon.body["total"], 2);

    let by_rate = app
        .get(
            "/api/v1/lots?sort=-hourly_rate_cents&per_page=2&page=1",
            None,
        )
        .await;
    assert_eq!(names(&by_rate), ["Bravo", "Charlie"]);
    assert_eq!(by_rate.body["total"], 3);
    let page_two = app
        .get(
            "/api/v1/lots?sort=-hourly_rate_cents&per_page=2&page=2",
            None,
        )
        .await;
    assert_eq!(names(&page_two), ["Alpha"]);
    assert_eq!(page_two.body["page"], 2);

    let search = app.get("/api/v1/lots?q=arl", None).await;
    assert_eq!(names(&search), ["Charlie"]);
    let percent = app.get("/api/v1/lots?q=%25", None).await;
    assert_eq!(percent.body["total"], 0, "a literal % matches nothing");

    app.get("/api/v1/lots?sort=password", None)
        .await
        .assert_problem(400, "invalid_sort");
    app.get("/api/v1/lots?per_page=101", None)
        .await
        .assert_problem(400, "invalid_paging");
}

#[tokio::test]
async fn control_characters_in_text_are_refused_not_stored() {
    let app = spawn_app().await;
    let (token, _) = app.signed_in("parking_owner").await;
    let mut nul = app.lot_body();
    nul["name"] = json!("Central\u{0}Garage");
    app.post("/api/v1/lots", Some(&token), nul)
        .await
        .assert_problem(422, "invalid_text");
    let mut multiline = app.lot_body();
    multiline["description"] = json!("Open 24/7.\nEntrance on the left.");
    assert_eq!(
        app.post("/api/v1/lots", Some(&token), multiline)
            .await
            .status,
        StatusCode::CREATED
    );
    app.get("/api/v1/lots?q=%00", None)
        .await
        .assert_problem(400, "malformed_query");
    app.get("/api/v1/lots?city=Ly%00on", None)
        .await
        .assert_problem(400, "malformed_query");
    let name = json!({"email": "nul@example.com", "password": parking_tests::PASSWORD, "full_name": "A\u{0}"});
    app.post("/api/v1/auth/register", None, name)
        .await
        .assert_problem(422, "invalid_full_name");
    assert_eq!(
        app.register("nul@example.com", "user").await.status,
        StatusCode::CREATED,
        "the address stayed free"
    );
}

#[tokio::test]
async fn camera_urls_are_shown_only_to_the_owner_and_admins() {
    let app = spawn_app().await;
    let (owner, _) = app.signed_in("parking_owner").await;
    let (stranger, _) = app.signed_in("user").await;
    let (admin, _) = app.admin().await;
    let mut body = app.lot_body();
    body["camera_url"] = json!("rtsp://cam:secret@10.0.0.5/stream");
    let created = app.post("/api/v1/lots", Some(&owner), body).await;
    assert_eq!(
        created.body["camera_url"],
        "rtsp://cam:secret@10.0.0.5/stream"
    );
    let path = format!("/api/v1/lots/{}", created.id());
    for token in [Some(owner.as_str()), Some(admin.as_str())] {
        assert_eq!(
            app.get(&path, token).await.body["camera_url"],
            "rtsp://cam:secret@10.0.0.5/stream"
        );
    }
    for token in [None, Some(stranger.as_str())] {
        assert_eq!(
            app.get(&path, token).await.body["camera_url"],
            serde_json::Value::Null
        );
        let listed = app.get("/api/v1/lots", token).await;
        assert_eq!(
            listed.body["items"][0]["camera_url"],
            serde_json::Value::Null
        );
        let near = app
            .get("/api/v1/lots/nearby?lat=45.764&lng=4.8357", token)
            .await;
        assert_eq!(near.body["items"][0]["camera_url"], serde_json::Value::Null);
    }
    let listed = app.get("/api/v1/lots", Some(&owner)).await;
    assert_eq!(
        listed.body["items"][0]["camera_url"],
        "rtsp://cam:secret@10.0.0.5/stream"
    );
}

#[tokio::test]
async fn a_lot_counts_its_days_in_a_time_zone_of_its_own() {
    let app = spawn_app().await;
    let (token, _) = app.signed_in("parking_owner").await;
    let plain = app.post("/api/v1/lots", Some(&token), app.lot_body()).await;
    assert_eq!(plain.body["time_zone"], "UTC", "{plain:?}");

    let mut body = app.lot_body();
    body["time_zone"] = json!("America/Argentina/Buenos_Aires");
    let zoned = app.post("/api/v1/lots", Some(&token), body).await;
    assert_eq!(zoned.status, StatusCode::CREATED, "{zoned:?}");
    let read = app.get(&format!("/api/v1/lots/{}", zoned.id()), None).await;
    assert_eq!(read.body["time_zone"], "America/Argentina/Buenos_Aires");

    // Malformed, or well formed but unknown to the database: 422, nothing recorded.
    for zone in ["Paris, France", "Mars/Olympus_Mons"] {
        let mut body = app.lot_body();
        body["time_zone"] = json!(zone);
        let refused = app.post("/api/v1/lots", Some(&token), body).await;
        refused.assert_problem(422, "invalid_time_zone");
    }
    let path = format!("/api/v1/lots/{}", plain.id());
    let moved = app
        .request(
            Method::PATCH,
            &path,
            Some(&token),
            Some(json!({"time_zone": "Asia/Tokyo"})),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{moved:?}");
    assert_eq!(moved.body["time_zone"], "Asia/Tokyo");
    let refused = app
        .request(
            Method::PATCH,
            &path,
            Some(&token),
            Some(json!({"time_zone": "Nowhere/Land"})),
        )
        .await;
    refused.assert_problem(422, "invalid_time_zone");
    assert_eq!(app.get(&path, None).await.body["time_zone"], "Asia/Tokyo");
}
