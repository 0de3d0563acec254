//! A client of the two Stripe calls the platform makes: create a PaymentIntent, create a
//! Refund. Form-encoded bodies and `Authorization: Bearer <secret key>`, as Stripe's API
//! wants; every POST carries an `Idempotency-Key` made by the caller from our own ids, so a
//! retry after a lost answer (ours here, or the caller's after a crash) is the same request
//! to Stripe and cannot charge or refund twice. Answers are read leniently: only the fields we
//! use, so a field Stripe adds (or a test server omits) changes nothing.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::StripeConfig;

/// Attempts of one call: the first and two retries, on a network error, a timeout, 429, 409
/// (Stripe: the same idempotent request still in flight) or a 5xx.
const ATTEMPTS: u32 = 3;
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe could not be reached or kept failing: the call may or may not have happened,
    /// and repeating it with the same idempotency key is safe.
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
    /// Stripe answered and refused the request.
    #[error("Stripe refused the request ({status}): {message}")]
    Refused {
        status: u16,
        code: Option<String>,
        message: String,
    },
}

#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    key: SecretString,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A PaymentIntent to create.
#[derive(Debug, Clone)]
pub struct NewIntent<'a> {
    pub amount: i64,
    /// ISO 4217, any case (sent in lower case, as Stripe writes it).
    pub currency: &'a str,
    /// Copied into the intent's metadata, so its webhooks name our payment.
    pub payment_id: uuid::Uuid,
    pub booking_id: uuid::Uuid,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub client_secret: String,
    pub status: String,
    pub amount: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    pub id: String,
    pub amount: i64,
    /// `succeeded`, `pending` (settles later; reported by `charge.refunded`) or `failed`.
    pub status: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: Option<String>,
    message: Option<String>,
}

impl StripeClient {
    pub fn new(config: &StripeConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .expect("an HTTP client with timeouts only");
        Self {
            http,
            base: config.api_base.trim_end_matches('/').to_owned(),
            key: config.secret_key.clone(),
        }
    }

    /// `POST /v1/payment_intents`, automatic capture.
    pub async fn create_payment_intent(
        &self,
        intent: &NewIntent<'_>,
        idempotency_key: &str,
    ) -> Result<PaymentIntent, StripeError> {
        let form = [
            ("amount", intent.amount.to_string()),
            ("currency", intent.currency.to_ascii_lowercase()),
            ("metadata[payment_id]", intent.payment_id.to_string()),
            ("metadata[booking_id]", intent.booking_id.to_string()),
        ];
        self.post("/v1/payment_intents", &form, idempotency_key)
            .await
    }

    /// `POST /v1/refunds` of `amount` of the intent's charge; `refund_id` (ours) goes into the
    /// refund's metadata, so the `charge.refunded` webhook names it.
    pub async fn create_refund(
        &self,
        intent_id: &str,
        amount: i64,
        refund_id: uuid::Uuid,
        idempotency_key: &str,
    ) -> Result<Refund, StripeError> {
        let form = [
            ("payment_intent", intent_id.to_owned()),
            ("amount", amount.to_string()),
            ("metadata[refund_id]", refund_id.to_string()),
        ];
        self.post("/v1/refunds", &form, idempotency_key).await
    }

    #[tracing::instrument(level = "debug", skip(self, form))]
    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        form: &[(&str, String)],
        idempotency_key: &str,
    ) -> Result<T, StripeError> {
        let url = format!("{}{path}", self.base);
        let mut pause = FIRST_PAUSE;
        let mut last_error = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                tracing::warn!(path, attempt, error = %last_error, "retrying a Stripe call");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            let sent = self
                .http
                .post(&url)
                .bearer_auth(self.key.expose_secret())
                .header("Idempotency-Key", idempotency_key)
                .form(form)
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            let status = response.status();
            let body = match response.bytes().await {
                Ok(body) => body,
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            if status.is_success() {
                return serde_json::from_slice(&body).map_err(|e| {
                    StripeError::Unavailable(format!("unreadable answer from {path}: {e}"))
                });
            }
            let retryable = status.is_server_error()
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || status == reqwest::StatusCode::CONFLICT;
            let detail = serde_json::from_slice::<ErrorBody>(&body).ok();
            let message = (detail.as_ref())
                .and_then(|d| d.error.message.clone())
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            if retryable {
                last_error = format!("{status}: {message}");
                continue;
            }
            return Err(StripeError::Refused {
                status: status.as_u16(),
                code: detail.and_then(|d| d.error.code),
                message,
            });
        }
        Err(StripeError::Unavailable(last_error))
    }
}
