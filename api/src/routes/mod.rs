//! Routes, one module per resource.

pub mod auth;
pub mod bookings;
pub mod health;
pub mod lots;
pub mod slots;

use actix_web::http::header::{HeaderValue, LOCATION};
use actix_web::HttpResponse;
use serde::Serialize;

/// `201 Created` with the representation, and `Location` where the resource has its own URL.
pub(crate) fn created(location: Option<String>, body: impl Serialize) -> HttpResponse {
    let mut response = HttpResponse::Created();
    if let Some(value) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.insert_header((LOCATION, value));
    }
    response.json(body)
}

/// The API's paths, with their OpenAPI descriptions collected from the handlers.
pub fn api_v1() -> utoipa_actix_web::scope::Scope<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    utoipa_actix_web::scope("/api/v1")
        .service(auth::register)
        .service(auth::login)
        .service(auth::me)
        .service(lots::create)
        .service(lots::list)
        // Before `/lots/{lot_id}`, which would otherwise take "nearby" for an id.
        .service(lots::nearby)
        .service(lots::get)
        .service(lots::update)
        .service(lots::delete)
        .service(lots::create_slot)
        .service(lots::list_slots)
        .service(lots::availability)
        .service(slots::update)
        .service(bookings::create)
        .service(bookings::list)
        .service(bookings::get)
        .service(bookings::cancel)
}
