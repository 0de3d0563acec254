//! `/api/v1/feeds`: open data for those who already read parking data in a standard shape.
//! The DATEX II Parking Publication Light feed, field by field: docs/feeds.md.

use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{get, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use parking_infra::config::FeedConfig;
use parking_projections::feeds::SiteOccupancy;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, Problem};
use crate::state::State;

/// How long an answer is served again, here and by caches on the way (`Cache-Control`).
pub const FEED_MAX_AGE: Duration = Duration::from_secs(30);

/// A DATEX II enumeration value, encoded as its JSON schema wants it: `{"value": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Value {
    pub value: &'static str,
}

fn value(value: &'static str) -> Value {
    Value { value }
}

/// The document: a DATEX II (model base version 3) payload publication of the Parking Light
/// profile.
#[derive(Debug, Serialize, ToSchema)]
pub struct Datex2Parking {
    #[serde(rename = "_modelBaseVersion")]
    pub model_base_version: &'static str,
    #[serde(rename = "parkingPublicationLight")]
    pub publication: ParkingPublicationLight,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParkingPublicationLight {
    /// The language of the texts (lot names are published as their owners typed them).
    pub lang: &'static str,
    pub publication_time: DateTime<Utc>,
    pub publication_creator: PublicationCreator,
    pub parking_site: Vec<ParkingSite>,
}

/// The operator publishing the feed (`DATEX2_COUNTRY`, `DATEX2_NATIONAL_IDENTIFIER`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicationCreator {
    pub country: String,
    pub national_identifier: String,
}

/// One active lot.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParkingSite {
    /// The lot's id.
    #[serde(rename = "_id")]
    pub id: String,
    /// `other`: lots do not record what kind of site they are.
    #[serde(rename = "type")]
    pub site_type: Value,
    pub name: String,
    /// When these figures were computed: they are live, as of `publicationTime`.
    pub last_update: DateTime<Utc>,
    /// Active lots are open: lots have no opening hours.
    pub is_open_now: bool,
    /// All the lot's slots.
    pub number_of_spaces: i64,
    /// Its slots free now: not reserved, occupied (observed, or checked in) or out of service.
    pub available_spaces: i64,
    pub location_and_dimension: LocationAndDimension,
    /// The lot's slots for disabled drivers and for charging electric vehicles, with how many
    /// of each are free now; absent kinds are left out.
    pub assigned_for: Vec<Assignment>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocationAndDimension {
    pub coordinates_for_display: Coordinates,
}

/// WGS 84 degrees, as the lot was registered.
#[derive(Debug, Serialize, ToSchema)]
pub struct Coordinates {
    pub latitude: f64,
    pub longitude: f64,
}

/// Spaces only for some users (`user`: `disabled`) or vehicles (`fuelType`: `battery`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub type_of_assignment: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel_type: Option<Value>,
    pub available_spaces: i64,
}

impl ParkingSite {
    fn of(site: SiteOccupancy, at: DateTime<Utc>) -> Self {
        let only_for = |user, fuel_type, available: i64| Assignment {
            type_of_assignment: value("onlyFor"),
            user,
            fuel_type,
            available_spaces: available.max(0),
        };
        let mut assigned_for = Vec::new();
        if site.disabled_total > 0 {
            assigned_for.push(only_for(
                Some(value("disabled")),
                None,
                site.disabled_available,
            ));
        }
        if site.ev_total > 0 {
            assigned_for.push(only_for(None, Some(value("battery")), site.ev_available));
        }
        Self {
            id: site.id.to_string(),
            site_type: value("other"),
            name: site.name,
            last_update: at,
            is_open_now: true,
            number_of_spaces: site.total,
            available_spaces: site.available.max(0),
            location_and_dimension: LocationAndDimension {
                coordinates_for_display: Coordinates {
                    latitude: site.latitude,
                    longitude: site.longitude,
                },
            },
            assigned_for,
        }
    }
}

/// The last document made, served again until it is `FEED_MAX_AGE` old: however many clients
/// ask, the lots' live counts are computed at most once per period per process.
#[derive(Default)]
pub struct FeedCache(tokio::sync::Mutex<Option<Made>>);

#[derive(Clone)]
struct Made {
    at: Instant,
    body: web::Bytes,
    etag: String,
}

async fn make(state: &State, publisher: &FeedConfig) -> ApiResult<Made> {
    let now = state.now();
    let sites = parking_projections::feeds::active_sites(&state.pool, now).await?;
    let document = Datex2Parking {
        model_base_version: "3",
        publication: ParkingPublicationLight {
            lang: "en",
            publication_time: now,
            publication_creator: PublicationCreator {
                country: publisher.country.clone(),
                national_identifier: publisher.national_identifier.clone(),
            },
            parking_site: sites.into_iter().map(|s| ParkingSite::of(s, now)).collect(),
        },
    };
    let body = serde_json::to_vec(&document).map_err(ApiError::internal)?;
    let digest = Sha256::digest(&body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let etag = format!("\"{hex}\"");
    Ok(Made {
        at: Instant::now(),
        body: body.into(),
        etag,
    })
}

/// Live occupancy of every active lot as a DATEX II (v3) Parking Publication Light, the JSON
/// encoding parking data users read. Public: no token, only public fields. Cached for 30 s
/// (`Cache-Control`, `ETag`; `If-None-Match` answers 304). The mapping: docs/feeds.md.
#[utoipa::path(
    tag = "feeds",
    responses(
        (status = 200, body = Datex2Parking),
        (status = 304, description = "`If-None-Match` names the current document"),
        (status = 503, body = Problem),
    )
)]
#[get("/feeds/datex2/parking")]
pub async fn datex2_parking(req: HttpRequest, state: State) -> ApiResult<HttpResponse> {
    let made = {
        let mut cached = state.feed_cache.0.lock().await;
        match cached.as_ref() {
            Some(made) if made.at.elapsed() < FEED_MAX_AGE => made.clone(),
            _ => {
                let made = make(&state, &state.feed).await?;
                *cached = Some(made.clone());
                made
            }
        }
    };
    let max_age = FEED_MAX_AGE.saturating_sub(made.at.elapsed()).as_secs();
    let cache_control = format!("public, max-age={max_age}");
    let unchanged = (req.headers().get(header::IF_NONE_MATCH))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == made.etag || t.trim() == "*")
        });
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::CACHE_CONTROL, cache_control))
        .insert_header((header::ETAG, made.etag.clone()));
    Ok(if unchanged {
        response.finish()
    } else {
        response.content_type("application/json").body(made.body)
    })
}
