//! `/api/v1/payments`: a booking's payment through Stripe, Stripe's webhook, refunds.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use parking_commands::{CommandContext, ProviderNotification, ProviderRefund};
use parking_domain::payment::{PaymentState, PaymentStatus, RefundStatus};
use parking_infra::stripe::{verify_webhook, WEBHOOK_TOLERANCE};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::created;
use crate::auth::Authenticated;
use crate::error::{ApiError, ApiResult, Problem};
use crate::state::{RequestMeta, State};

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateIntentRequest {
    pub booking_id: Uuid,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RefundRequest {
    /// Minor units; all that is left when absent.
    pub amount_cents: Option<i64>,
    pub reason: Option<String>,
}

/// A payment and its refunds.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    pub payment_id: Uuid,
    pub booking_id: Uuid,
    pub user_id: Uuid,
    pub lot_id: Uuid,
    /// The booking's price, what the driver pays.
    pub amount_cents: i64,
    pub currency: String,
    #[schema(schema_with = payment_status_schema)]
    pub status: PaymentStatus,
    /// For the driver's app to confirm the payment with Stripe; shown to the driver only.
    pub client_secret: Option<String>,
    pub stripe_payment_intent_id: Option<String>,
    /// What arrived (0 until it did).
    pub received_cents: i64,
    pub refunded_cents: i64,
    /// What may still be refunded: received minus refunds done or under way.
    pub refundable_cents: i64,
    /// Why the last attempt was declined, while nothing has arrived.
    pub last_failure: Option<String>,
    pub refunds: Vec<RefundView>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundView {
    pub refund_id: Uuid,
    pub amount_cents: i64,
    /// `pending` (asked of Stripe, no answer recorded yet), `succeeded` or `failed`.
    #[schema(value_type = String)]
    pub status: RefundStatus,
    pub reason: Option<String>,
    /// Who asked; absent for the system's own refunds (a cancellation, a late payment).
    pub requested_by: Option<Uuid>,
    pub stripe_refund_id: Option<String>,
}

fn payment_status_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(PaymentStatus::ALL.map(PaymentStatus::as_str)))
        .build()
}

impl PaymentView {
    pub(crate) fn of(payment_id: Uuid, payment: PaymentState, viewer: Uuid) -> Self {
        let status = payment.status();
        let (refunded, refundable) = (payment.refunded(), payment.refundable());
        Self {
            payment_id,
            booking_id: payment.booking_id,
            user_id: payment.user_id,
            lot_id: payment.lot_id,
            amount_cents: payment.amount.minor,
            currency: payment.amount.currency.as_str().to_owned(),
            status,
            client_secret: payment.client_secret.filter(|_| viewer == payment.user_id),
            stripe_payment_intent_id: payment.intent_id,
            received_cents: payment.received.unwrap_or(0),
            refunded_cents: refunded,
            refundable_cents: refundable,
            last_failure: payment.last_failure.filter(|_| payment.received.is_none()),
            refunds: (payment.refunds.into_iter())
                .map(|r| RefundView {
                    refund_id: r.refund_id,
                    amount_cents: r.amount,
                    status: r.status,
                    reason: r.reason,
                    requested_by: r.requested_by,
                    stripe_refund_id: r.provider_refund_id,
                })
                .collect(),
            created_at: payment.opened_at,
        }
    }
}

/// Start paying for a pending booking: a Stripe PaymentIntent for its exact price, one per
/// booking. Asking again returns the same payment (200). The driver's app confirms it with
/// Stripe using `client_secret`; the booking turns `confirmed` when Stripe reports success.
#[utoipa::path(
    tag = "payments",
    security(("bearer" = [])),
    request_body = CreateIntentRequest,
    responses(
        (status = 201, body = PaymentView), (status = 200, description = "The booking's payment, made earlier", body = PaymentView),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, description = "Not the booking's driver", body = Problem),
        (status = 404, description = "Unknown booking", body = Problem),
        (status = 409, description = "The booking is not pending (`booking_not_pending`), its hold ran out (`booking_hold_expired`) or it costs nothing (`nothing_to_pay`)", body = Problem),
        (status = 422, description = "Stripe refuses the payment, e.g. an amount below its minimum (`payment_refused`)", body = Problem),
        (status = 503, description = "No payment provider configured (`payments_unavailable`) or it did not answer (`payment_provider_unavailable`)", body = Problem),
    )
)]
#[post("/payments/intents")]
pub async fn create_intent(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    body: web::Json<CreateIntentRequest>,
) -> ApiResult<HttpResponse> {
    let ctx = state.context(Some(caller.0), &meta);
    let booking_id = body.into_inner().booking_id;
    let (payment_id, payment, new) = state.commands.open_payment(&ctx, booking_id).await?;
    state.recorded(&ctx).await?;
    let view = PaymentView::of(payment_id, payment, caller.0.user_id);
    Ok(if new {
        created(Some(format!("/api/v1/payments/{payment_id}")), view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

/// One payment: its driver, the lot's owner and admins may read it.
#[utoipa::path(
    tag = "payments",
    security(("bearer" = [])),
    params(("payment_id" = Uuid, Path)),
    responses((status = 200, body = PaymentView), (status = 401, body = Problem), (status = 404, body = Problem))
)]
#[get("/payments/{payment_id}")]
pub async fn get(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    path: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let payment_id = path.into_inner();
    let ctx = state.context(Some(caller.0), &meta);
    let payment = state.commands.payment(&ctx, payment_id).await?;
    Ok(HttpResponse::Ok().json(PaymentView::of(payment_id, payment, caller.0.user_id)))
}

/// Refund a payment, in part or in full, by the lot's owner or an admin. Never more than is
/// left: refunds done and under way count.
#[utoipa::path(
    tag = "payments",
    security(("bearer" = [])),
    params(("payment_id" = Uuid, Path)),
    request_body(content = Option<RefundRequest>, description = "Optional: all that is left"),
    responses(
        (status = 200, body = PaymentView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, description = "Not the lot's owner or an admin", body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "Nothing paid (`payment_not_captured`), nothing left (`payment_fully_refunded`) or more than is left (`refund_exceeds_remaining`)", body = Problem),
        (status = 422, description = "Not a positive amount (`invalid_refund_amount`)", body = Problem),
        (status = 503, description = "No payment provider configured (`payments_unavailable`), or Stripe did not answer: the refund is reserved and retried (`payment_provider_unavailable`)", body = Problem),
    )
)]
#[post("/payments/{payment_id}/refund")]
pub async fn refund(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    path: web::Path<Uuid>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let payment_id = path.into_inner();
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        RefundRequest::default()
    } else {
        serde_json::from_slice::<RefundRequest>(&body)
            .map_err(|e| ApiError::bad_request("malformed_body", e.to_string()))?
    };
    let ctx = state.context(Some(caller.0), &meta);
    let payment = (state.commands)
        .refund_payment(&ctx, payment_id, request.amount_cents, request.reason)
        .await?;
    state.recorded(&ctx).await?;
    Ok(HttpResponse::Ok().json(PaymentView::of(payment_id, payment, caller.0.user_id)))
}

/// Stripe's webhook. The `Stripe-Signature` header is checked on the raw body before anything
/// of it is read (400 `invalid_signature`). Handled: `payment_intent.succeeded`,
/// `payment_intent.payment_failed`, `charge.refunded`; anything else, and anything about an
/// intent that is not ours, is answered 200 and changes nothing. A delivery seen before
/// changes nothing either.
#[utoipa::path(
    tag = "payments",
    request_body(content = String, content_type = "application/json", description = "A Stripe event, as Stripe sent it"),
    params(("Stripe-Signature" = String, Header, description = "t=<unix time>,v1=<hex HMAC-SHA256>")),
    responses(
        (status = 200, description = "Received"),
        (status = 400, description = "Bad or missing signature, or no webhook secret configured (`invalid_signature`); not a Stripe event (`malformed_body`)", body = Problem),
    )
)]
#[post("/payments/webhook")]
pub async fn webhook(
    state: State,
    meta: RequestMeta,
    request: HttpRequest,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    // Without a webhook secret no signature can be valid: the sender is told so (Stripe
    // retries), and the operator by the log.
    let secret = state.stripe_webhook_secret.as_ref().ok_or_else(|| {
        tracing::error!("a webhook arrived but STRIPE_WEBHOOK_SECRET is unset");
        ApiError::bad_request(
            "invalid_signature",
            "this server has no webhook secret configured; no signature can be valid",
        )
    })?;
    let signature = (request.headers().get("stripe-signature"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    verify_webhook(signature, &body, secret, state.now(), WEBHOOK_TOLERANCE).map_err(|e| {
        tracing::warn!(error = %e, "a webhook with a bad signature");
        ApiError::bad_request("invalid_signature", e.to_string())
    })?;
    let event: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("malformed_body", e.to_string()))?;
    let Some(notification) = notification(&event)? else {
        return Ok(HttpResponse::Ok().finish());
    };
    let ctx = CommandContext::system(meta.request_id.to_string(), state.now())
        .with_position_cell(meta.written.clone());
    state
        .commands
        .payment_notification(&ctx, notification)
        .await?;
    state.recorded(&ctx).await?;
    Ok(HttpResponse::Ok().finish())
}

/// The notification a Stripe event carries; `None` for the kinds we do not handle.
fn notification(event: &Value) -> ApiResult<Option<ProviderNotification>> {
    let malformed = |what: &str| ApiError::bad_request("malformed_body", format!("no {what}"));
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let event_id = text(&event["id"]).ok_or_else(|| malformed("event id"))?;
    let kind = event["type"]
        .as_str()
        .ok_or_else(|| malformed("event type"))?;
    let object = &event["data"]["object"];
    let payment_id = || {
        object["metadata"]["payment_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
    };
    let intent_id = || text(&object["id"]).ok_or_else(|| malformed("PaymentIntent id"));
    Ok(Some(match kind {
        "payment_intent.succeeded" => ProviderNotification::Succeeded {
            intent_id: intent_id()?,
            payment_id: payment_id(),
            // `amount_received` where Stripe sends it; an automatic capture receives `amount`.
            amount: (object["amount_received"].as_i64())
                .or_else(|| object["amount"].as_i64())
                .ok_or_else(|| malformed("amount"))?,
            currency: text(&object["currency"]).ok_or_else(|| malformed("currency"))?,
            charge_id: text(&object["latest_charge"])
                .or_else(|| text(&object["latest_charge"]["id"])),
            event_id,
        },
        "payment_intent.payment_failed" => ProviderNotification::Failed {
            intent_id: intent_id()?,
            payment_id: payment_id(),
            reason: text(&object["last_payment_error"]["message"])
                .unwrap_or_else(|| "declined".to_owned()),
            event_id,
        },
        "charge.refunded" => ProviderNotification::Refunded {
            intent_id: text(&object["payment_intent"])
                .ok_or_else(|| malformed("payment_intent"))?,
            refunds: (object["refunds"]["data"].as_array().into_iter().flatten())
                .filter_map(|r| {
                    Some(ProviderRefund {
                        id: text(&r["id"])?,
                        amount: r["amount"].as_i64()?,
                        status: text(&r["status"]).unwrap_or_default(),
                        refund_id: r["metadata"]["refund_id"]
                            .as_str()
                            .and_then(|s| s.parse().ok()),
                    })
                })
                .collect(),
            event_id,
        },
        other => {
            tracing::debug!(kind = other, "a Stripe event we do not handle");
            return Ok(None);
        }
    }))
}
