//! The open occupancy feed (DATEX II Parking Publication Light) end to end: its required fields
//! and their types, live counts by slot type, public fields only, and its cache headers.

use chrono::{DateTime, Utc};
use parking_tests::{spawn_app_with, Reply, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

const FEED: &str = "/api/v1/feeds/datex2/parking";

async fn slot(app: &TestApp, token: &str, lot_id: Uuid, label: &str, slot_type: &str) -> Uuid {
    let path = format!("/api/v1/lots/{lot_id}/slots");
    let body = json!({"label": label, "slot_type": slot_type});
    let made = app.post(&path, Some(token), body).await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
    made.id()
}

fn string<'a>(value: &'a Value, path: &str) -> &'a str {
    value
        .pointer(path)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{path} is not a string in {value}"))
}

fn integer(value: &Value, path: &str) -> i64 {
    value
        .pointer(path)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{path} is not an integer in {value}"))
}

fn number(value: &Value, path: &str) -> f64 {
    value
        .pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} is not a number in {value}"))
}

fn instant(value: &Value, path: &str) -> DateTime<Utc> {
    string(value, path)
        .parse()
        .unwrap_or_else(|e| panic!("{path} is not an RFC 3339 time: {e}"))
}

#[tokio::test]
async fn the_datex2_feed_publishes_every_active_lots_live_occupancy_and_nothing_private() {
    let app = spawn_app_with(&[
        ("DATEX2_COUNTRY", "FR"),
        ("DATEX2_NATIONAL_IDENTIFIER", "lyon-parking"),
    ])
    .await;
    // A lot with a standard slot (booked now), a disabled one (free), an EV one (a car seen).
    let fx = app.lot_with_slot().await;
    let disabled = slot(&app, &fx.owner_token, fx.lot_id, "D1", "disabled").await;
    let charging = slot(&app, &fx.owner_token, fx.lot_id, "E1", "ev_charging").await;
    let (driver, _) = app.signed_in("user").await;
    let now = Utc::now();
    let booked = app
        .book(&driver, fx.slot_id, now, now + chrono::Duration::hours(1))
        .await;
    assert_eq!(booked.status, StatusCode::CREATED, "{booked:?}");
    let (service, _) = app.service_account().await;
    let seen = json!({"occupied": true, "confidence": 0.9, "observed_at": Utc::now()});
    let observed = app
        .post(
            &format!("/api/v1/slots/{charging}/occupancy"),
            Some(&service),
            seen,
        )
        .await;
    assert_eq!(observed.status, StatusCode::OK, "{observed:?}");
    // A lot with a camera (its URL is private), and a deactivated one (not published).
    let (owner, owner_id) = app.signed_in("parking_owner").await;
    let mut body = app.lot_body();
    body["name"] = json!("Quiet Yard");
    body["camera_url"] = json!("rtsp://viewer:secret@10.0.0.9/stream");
    let quiet = app.post("/api/v1/lots", Some(&owner), body).await.id();
    let mut body = app.lot_body();
    body["name"] = json!("Closed Yard");
    let closed = app.post("/api/v1/lots", Some(&owner), body).await.id();
    let deleted = app
        .request(
            Method::DELETE,
            &format!("/api/v1/lots/{closed}"),
            Some(&owner),
            None,
        )
        .await;
    assert!(deleted.status.is_success(), "{deleted:?}");

    // No token needed; the read waits for the writes above (`X-Min-Position`).
    let feed = app.get(FEED, None).await;
    assert_eq!(feed.status, StatusCode::OK, "{feed:?}");
    let doc = &feed.body;
    assert_eq!(string(doc, "/_modelBaseVersion"), "3");
    let publication = &doc["parkingPublicationLight"];
    assert_eq!(string(publication, "/lang"), "en");
    let published = instant(publication, "/publicationTime");
    assert!((Utc::now() - published).num_seconds().abs() < 60);
    assert_eq!(string(publication, "/publicationCreator/country"), "fr");
    assert_eq!(
        string(publication, "/publicationCreator/nationalIdentifier"),
        "lyon-parking"
    );

    // Every site has the required fields, with their types.
    let sites = publication["parkingSite"]
        .as_array()
        .expect("parkingSite[]");
    for site in sites {
        string(site, "/_id").parse::<Uuid>().expect("a lot id");
        string(site, "/type/value");
        string(site, "/name");
        instant(site, "/lastUpdate");
        assert!(site["isOpenNow"].is_boolean(), "{site}");
        assert!(integer(site, "/numberOfSpaces") >= 0);
        assert!(integer(site, "/availableSpaces") >= 0);
        assert!(integer(site, "/availableSpaces") <= integer(site, "/numberOfSpaces"));
        number(site, "/locationAndDimension/coordinatesForDisplay/latitude");
        number(
            site,
            "/locationAndDimension/coordinatesForDisplay/longitude",
        );
        for assignment in site["assignedFor"].as_array().expect("assignedFor[]") {
            string(assignment, "/typeOfAssignment/value");
            assert!(integer(assignment, "/availableSpaces") >= 0);
        }
    }
    let ids: Vec<&str> = sites.iter().map(|s| string(s, "/_id")).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(
        !ids.contains(&closed.to_string().as_str()),
        "a deactivated lot"
    );

    // The first lot: 3 spaces, the disabled one free, the booked and the observed ones not.
    let garage = sites
        .iter()
        .find(|s| s["_id"] == fx.lot_id.to_string())
        .expect("the lot");
    assert_eq!(string(garage, "/name"), "Central Garage");
    assert!(garage["isOpenNow"].as_bool().unwrap());
    assert_eq!(integer(garage, "/numberOfSpaces"), 3);
    assert_eq!(integer(garage, "/availableSpaces"), 1);
    assert_eq!(
        number(
            garage,
            "/locationAndDimension/coordinatesForDisplay/latitude"
        ),
        45.764
    );
    assert_eq!(
        garage["assignedFor"],
        json!([
            {"typeOfAssignment": {"value": "onlyFor"}, "user": {"value": "disabled"}, "availableSpaces": 1},
            {"typeOfAssignment": {"value": "onlyFor"}, "fuelType": {"value": "battery"}, "availableSpaces": 0},
        ])
    );
    let yard = sites
        .iter()
        .find(|s| s["_id"] == quiet.to_string())
        .expect("the lot without slots");
    assert_eq!(
        (
            integer(yard, "/numberOfSpaces"),
            integer(yard, "/availableSpaces")
        ),
        (0, 0)
    );
    assert_eq!(yard["assignedFor"], json!([]));

    // Public fields only.
    let text = doc.to_string();
    for private in [
        "secret".to_owned(),
        "rtsp".to_owned(),
        owner_id.to_string(),
        fx.owner_id.to_string(),
        disabled.to_string(),
        booked.id().to_string(),
    ] {
        assert!(!text.contains(&private), "{private} is in the feed");
    }

    // Caches may keep it for the rest of its period; the same document again is a 304.
    let cache_control = header(&feed, "cache-control");
    let max_age: u64 = cache_control
        .strip_prefix("public, max-age=")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("Cache-Control: {cache_control}"));
    assert!(max_age <= 30);
    let etag = header(&feed, "etag");
    let again = app
        .client
        .get(format!("{}{FEED}", app.address))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert!(again.bytes().await.unwrap().is_empty());
}

fn header(reply: &Reply, name: &str) -> String {
    reply
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {reply:?}"))
        .to_str()
        .unwrap()
        .to_owned()
}
