//! The OpenAPI document's frame. Paths and schemas come from the handlers themselves
//! (utoipa-actix-web collects them from the services the app really mounts), so the document
//! cannot list a route the server does not serve, or miss one it does.

use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Object, Required, Type};
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
        (name = "bookings", description = "Bookings of slots and their lifecycle"),
        (name = "payments", description = "Payments through Stripe, its webhook, refunds"),
        (name = "real time", description = "Live changes over a WebSocket"),
        (name = "reviews", description = "How safe drivers find a lot"),
        (name = "feeds", description = "Open data in standard shapes"),
        (name = "analytics", description = "How an owner's lots earn and fill"),
        (name = "audit", description = "The whole history for auditors: the log, streams, past states, integrity"),
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

/// Completes the collected document with what applies to many operations at once: the
/// optional `Idempotency-Key` header of every write (see `crate::idempotency`), the
/// `X-Event-Position` of their successful answers, and the `X-Min-Position` header of every
/// read (see `crate::consistency`).
pub fn finish(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    for (path, item) in openapi.paths.paths.iter_mut() {
        for operation in [&mut item.get, &mut item.head].into_iter().flatten() {
            operation
                .parameters
                .get_or_insert_with(Vec::new)
                .push(utoipa::openapi::RefOr::T(min_position()));
        }
        if path == "/api/v1/auth/login" {
            continue;
        }
        for operation in [
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            operation
                .parameters
                .get_or_insert_with(Vec::new)
                .push(utoipa::openapi::RefOr::T(idempotency_key()));
            for (status, response) in operation.responses.responses.iter_mut() {
                if let (true, utoipa::openapi::RefOr::T(response)) =
                    (status.starts_with('2'), response)
                {
                    response.headers.insert(
                        "X-Event-Position".to_owned(),
                        utoipa::openapi::RefOr::T(event_position()),
                    );
                }
            }
        }
    }
    openapi
}

fn min_position() -> Parameter {
    ParameterBuilder::new()
        .name("X-Min-Position")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Optional read-your-writes: the `X-Event-Position` of an earlier write. The answer \
             waits until every read model has reached it; after `READ_WAIT_MS` (5 s by \
             default) it is 503 `read_model_lagging` with `Retry-After`. Not a non-negative \
             integer, or beyond the end of the event log: 400 `invalid_min_position`.",
        ))
        .schema(Some(Object::with_type(Type::Integer)))
        .build()
}

fn event_position() -> utoipa::openapi::header::Header {
    utoipa::openapi::header::HeaderBuilder::new()
        .schema(Some(Object::with_type(Type::Integer)))
        .description(Some(
            "Position in the global event log that covers what this request recorded; send it \
             as `X-Min-Position` to read it from any node. Absent when nothing was recorded.",
        ))
        .build()
}

fn idempotency_key() -> Parameter {
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Optional. Retrying with the same key and request replays the first answer \
             (header `Idempotent-Replayed: true`) without a second effect; the same key with a \
             different request is 422 `idempotency_key_reused`. Keys are kept 24 hours.",
        ))
        .schema(Some(Object::with_type(Type::String)))
        .build()
}
