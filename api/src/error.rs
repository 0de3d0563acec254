//! The one place errors become HTTP answers: `application/problem+json` (RFC 9457) with a
//! stable machine `code` and the request id. Unexpected errors are logged with their whole
//! chain; the client sees only the request id to quote.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use parking_commands::CommandError;
use parking_domain::Violation;
use serde::Serialize;

use crate::request_id;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u64>,
    source: Option<BoxError>,
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:parking:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code, e.g. `slot_already_reserved`.
    pub code: String,
    /// Quote it when reporting a problem.
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
            source: None,
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    pub fn invalid(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    /// Asks the client to wait this many seconds before retrying.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The database (or another dependency) is unreachable: an outage, not a bug. Logged like
    /// an internal error; the client is told to retry.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "service_unavailable",
            detail: "the service cannot reach its database right now; retry shortly".into(),
            retry_after: Some(5),
            source: Some(source.into()),
        }
    }

    pub fn internal(source: impl Into<BoxError>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            detail: "an unexpected error occurred; quote the request id when reporting it".into(),
            retry_after: None,
            source: Some(source.into()),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let request_id = request_id::current().map(|id| id.to_string());
        if let Some(source) = &self.source {
            let mut chain = source.to_string();
            let mut cause = source.source();
            while let Some(c) = cause {
                chain.push_str(": ");
                chain.push_str(&c.to_string());
                cause = c.source();
            }
            tracing::error!(request_id = request_id.as_deref(), error = %chain, "unexpected error");
        }
        let problem = Problem {
            problem_type: format!("urn:parking:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
            request_id,
        };
        let mut response = HttpResponse::build(self.status);
        response.content_type("application/problem+json");
        if let Some(seconds) = self.retry_after {
            response.insert_header(("Retry-After", seconds.to_string()));
        }
        response.json(problem)
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Rejected {
                code,
                violation,
                message,
            } => {
                let status = match violation {
                    Violation::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
                    Violation::Conflict => StatusCode::CONFLICT,
                    Violation::Forbidden => StatusCode::FORBIDDEN,
                    Violation::NotFound => StatusCode::NOT_FOUND,
                };
                Self::new(status, code, message)
            }
            contention @ CommandError::Contention { .. } => {
                Self::new(StatusCode::CONFLICT, "contention", contention.to_string()).retry_after(1)
            }
            CommandError::Unavailable { code, message } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message).retry_after(5)
            }
            CommandError::Infrastructure(source)
                if parking_infra::db::chain_is_unavailable(source.as_ref()) =>
            {
                Self::unavailable(source)
            }
            CommandError::Infrastructure(source) => Self::internal(source),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if parking_infra::db::is_unavailable(&e) {
            Self::unavailable(e)
        } else {
            Self::internal(e)
        }
    }
}

/// Handlers' result type.
pub type ApiResult<T> = Result<T, ApiError>;

/// 400s for bodies, queries and paths that do not parse, in the same problem shape.
pub fn json_config() -> actix_web::web::JsonConfig {
    use actix_web::error::JsonPayloadError;
    actix_web::web::JsonConfig::default()
        .limit(64 * 1024)
        .error_handler(|e, _| {
            let detail = e.to_string();
            match e {
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", detail)
                }
                JsonPayloadError::ContentType => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    detail,
                ),
                _ => ApiError::bad_request("malformed_body", detail),
            }
            .into()
        })
}

pub fn query_config() -> actix_web::web::QueryConfig {
    actix_web::web::QueryConfig::default()
        .error_handler(|e, _| ApiError::bad_request("malformed_query", e.to_string()).into())
}

pub fn path_config() -> actix_web::web::PathConfig {
    actix_web::web::PathConfig::default()
        .error_handler(|e, _| ApiError::bad_request("malformed_path", e.to_string()).into())
}

pub async fn route_not_found() -> HttpResponse {
    ApiError::not_found("route_not_found", "no such route").error_response()
}

/// Some error answers are made by actix itself, not by our handlers: a body over the size
/// limit (413), a wrong content type (415)... This middleware gives every error answer that is
/// not problem+json yet the same problem+json shape, with a code named after its status.
pub fn problem_json_everywhere<B: 'static>() -> actix_web::middleware::ErrorHandlers<B> {
    use actix_web::dev::ServiceResponse;
    use actix_web::http::header::CONTENT_TYPE;
    use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};

    ErrorHandlers::new().default_handler(|response: ServiceResponse<B>| {
        // Our own answers are JSON already (problem+json, or /ready's report); only actix's
        // plain-text ones need rewriting.
        let is_json = response.headers().get(CONTENT_TYPE).is_some_and(|v| {
            let v = v.as_bytes();
            v.starts_with(b"application/problem+json") || v.starts_with(b"application/json")
        });
        if is_json {
            return Ok(ErrorHandlerResponse::Response(
                response.map_into_left_body(),
            ));
        }
        let status = response.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::NOT_FOUND => "route_not_found",
            s if s.is_client_error() => "bad_request",
            _ => "internal",
        };
        let detail = status.canonical_reason().unwrap_or("error").to_lowercase();
        let (request, _) = response.into_parts();
        let problem = ApiError::new(status, code, detail).error_response();
        Ok(ErrorHandlerResponse::Response(
            ServiceResponse::new(request, problem).map_into_right_body(),
        ))
    })
}
