//! The OpenAPI document's frame. Paths and schemas come from the handlers themselves
//! (utoipa-actix-web collects them from the services the app really mounts), so the document
//! cannot list a route the server does not serve, or miss one it does.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Parking platform API",
        description = "Find lots, book slots, pay, rate safety. Errors are `application/problem+json` \
                       with a stable `code`. Times are RFC 3339 UTC; money is integer minor units.",
    ),
    components(schemas(crate::error::Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Sign-up, sign-in"),
        (name = "lots", description = "Parking lots"),
        (name = "slots", description = "Slots of a lot"),
        (name = "bookings", description = "Bookings of slots"),
        (name = "operations", description = "Health and readiness"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}
