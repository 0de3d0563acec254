//! The booking lifecycle and payments, end to end against a real Stripe-protocol server
//! (localstripe, one per test): the app creates PaymentIntents and refunds over Stripe's HTTP
//! API, the test pays like a driver's app would, and localstripe's signed webhooks confirm.

use std::time::Duration;

use chrono::Utc;
use parking_tests::stripe::{LocalStripe, RecordingProxy, SECRET_KEY};
use parking_tests::{hours_from_now, spawn_app_with, Fixture, Reply, ServerProcess, TestApp};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{json, Value};
use uuid::Uuid;

const WEBHOOK_SECRET: &str = "whsec_test_secret_of_the_endpoint";

struct Paying {
    app: TestApp,
    stripe: LocalStripe,
}

/// The app with Stripe at `api_base` (localstripe, or a proxy in front of it), and localstripe
/// sending its webhooks to the app.
async fn paying_app_at(
    stripe: LocalStripe,
    api_base: &str,
    extra: &[(&'static str, &str)],
) -> Paying {
    let mut settings = vec![
        ("STRIPE_SECRET_KEY", SECRET_KEY),
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("STRIPE_API_BASE", api_base),
    ];
    settings.extend_from_slice(extra);
    let app = spawn_app_with(&settings).await;
    let hook = format!("{}/api/v1/payments/webhook", app.address);
    stripe
        .register_webhook("parking", &hook, WEBHOOK_SECRET)
        .await;
    Paying { app, stripe }
}

async fn paying_app(extra: &[(&'static str, &str)]) -> Paying {
    let stripe = LocalStripe::start().await;
    let url = stripe.url.clone();
    paying_app_at(stripe, &url, extra).await
}

/// A lot with one slot (250 ¢/h), a driver, and their pending two-hour booking.
struct Scene {
    fx: Fixture,
    driver: String,
    booking_id: Uuid,
}

impl Paying {
    async fn scene(&self, from_hour: i64) -> Scene {
        let fx = self.app.lot_with_slot().await;
        let (driver, _) = self.app.signed_in("user").await;
        let booking_id = self.booking(&driver, fx.slot_id, from_hour).await;
        Scene {
            fx,
            driver,
            booking_id,
        }
    }

    /// Pays the booking with a card that works and waits until the payment succeeded.
    async fn paid(&self, driver: &str, booking_id: Uuid) -> Uuid {
        let (payment_id, confirmed) = self.pay(driver, booking_id, "pm_card_visa").await;
        assert_eq!(confirmed, StatusCode::OK);
        self.until_payment(driver, payment_id, "succeeded").await;
        payment_id
    }

    /// A pending booking of the fixture's slot, 250 ¢/h for two hours: 500 ¢.
    async fn booking(&self, driver: &str, slot_id: Uuid, from_hour: i64) -> Uuid {
        let booked = self
            .app
            .book(
                driver,
                slot_id,
                hours_from_now(from_hour),
                hours_from_now(from_hour + 2),
            )
            .await;
        assert_eq!(booked.status, StatusCode::CREATED, "{booked:?}");
        booked.id()
    }

    async fn intent(&self, driver: &str, booking_id: Uuid) -> Reply {
        self.app
            .post(
                "/api/v1/payments/intents",
                Some(driver),
                json!({"booking_id": booking_id}),
            )
            .await
    }

    /// Pays the booking with `card` as the driver's app would; returns the payment.
    async fn pay(&self, driver: &str, booking_id: Uuid, card: &str) -> (Uuid, StatusCode) {
        let intent = self.intent(driver, booking_id).await;
        assert!(intent.status.is_success(), "{intent:?}");
        let intent_id = intent.body["stripe_payment_intent_id"].as_str().unwrap();
        self.stripe.set_payment_method(intent_id, card).await;
        let confirmed = self.stripe.confirm(intent_id).await;
        (uuid(&intent.body["payment_id"]), confirmed)
    }

    async fn booking_status(&self, token: &str, booking_id: Uuid) -> String {
        let booking = self
            .app
            .get(&format!("/api/v1/bookings/{booking_id}"), Some(token))
            .await;
        booking.body["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits (up to 15 s) until the booking has `status`.
    async fn until_booking(&self, token: &str, booking_id: Uuid, status: &str) {
        for _ in 0..150 {
            if self.booking_status(token, booking_id).await == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "booking {booking_id} is {}, not {status}",
            self.booking_status(token, booking_id).await
        );
    }

    async fn payment(&self, token: &str, payment_id: Uuid) -> Reply {
        self.app
            .get(&format!("/api/v1/payments/{payment_id}"), Some(token))
            .await
    }

    async fn until_payment(&self, token: &str, payment_id: Uuid, status: &str) -> Reply {
        for _ in 0..150 {
            let payment = self.payment(token, payment_id).await;
            if payment.body["status"] == status {
                return payment;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "payment {payment_id} never became {status}: {:?}",
            self.payment(token, payment_id).await
        );
    }

    /// A webhook as Stripe signs it, posted to the app.
    async fn webhook(&self, body: &Value, secret: &str) -> Reply {
        let raw = serde_json::to_vec_pretty(body).unwrap();
        let signature = parking_infra::stripe::sign_webhook(
            &raw,
            &SecretString::from(secret.to_owned()),
            Utc::now(),
        );
        let response = self
            .app
            .client
            .post(format!("{}/api/v1/payments/webhook", self.app.address))
            .header("Stripe-Signature", signature)
            .header("Content-Type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        TestApp::reply(response).await
    }

    async fn count(&self, event_type: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
            .bind(event_type)
            .fetch_one(&self.app.db)
            .await
            .unwrap()
    }
}

fn uuid(value: &Value) -> Uuid {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no uuid in {value}"))
}

fn succeeded(event_id: &str, intent_id: &str, payment_id: Uuid, amount: i64) -> Value {
    json!({
        "id": event_id,
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {"object": {
            "id": intent_id, "object": "payment_intent", "amount": amount,
            "amount_received": amount, "currency": "eur", "status": "succeeded",
            "metadata": {"payment_id": payment_id.to_string()},
        }},
    })
}

#[tokio::test]
async fn a_booking_paid_through_stripe_is_confirmed_by_its_webhook() {
    let p = paying_app(&[]).await;
    let fx = p.app.lot_with_slot().await;
    let (driver, driver_id) = p.app.signed_in("user").await;
    let booking_id = p.booking(&driver, fx.slot_id, 2).await;

    let intent = p.intent(&driver, booking_id).await;
    assert_eq!(intent.status, StatusCode::CREATED, "{intent:?}");
    assert_eq!(intent.body["amount_cents"], 500);
    assert_eq!(intent.body["currency"], "EUR");
    assert_eq!(intent.body["status"], "requires_payment");
    assert_eq!(intent.body["booking_id"], booking_id.to_string());
    assert!(intent.body["client_secret"]
        .as_str()
        .is_some_and(|s| s.contains("_secret_")));
    // One payment per booking: asking again answers the same one.
    let again = p.intent(&driver, booking_id).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_eq!(again.body["payment_id"], intent.body["payment_id"]);
    assert_eq!(
        again.body["stripe_payment_intent_id"],
        intent.body["stripe_payment_intent_id"]
    );
    // Someone else's booking is not theirs to pay.
    let (stranger, _) = p.app.signed_in("user").await;
    p.intent(&stranger, booking_id)
        .await
        .assert_problem(403, "forbidden");

    let (payment_id, confirmed) = p.pay(&driver, booking_id, "pm_card_visa").await;
    assert_eq!(confirmed, StatusCode::OK);
    p.until_booking(&driver, booking_id, "confirmed").await;
    let payment = p.until_payment(&driver, payment_id, "succeeded").await;
    assert_eq!(payment.body["received_cents"], 500);
    assert_eq!(payment.body["user_id"], driver_id.to_string());
    // The lot's owner sees the payment, without the driver's client secret.
    let seen_by_owner = p.payment(&fx.owner_token, payment_id).await;
    assert_eq!(seen_by_owner.status, StatusCode::OK);
    assert!(seen_by_owner.body["client_secret"].is_null());
    p.payment(&stranger, payment_id)
        .await
        .assert_problem(404, "payment_not_found");
    assert_eq!(p.count("PaymentSucceeded").await, 1);
    assert_eq!(p.count("BookingConfirmed").await, 1);
    assert_eq!(p.count("SlotReservationConfirmed").await, 1);
    // Confirmed, the booking takes no second payment.
    let later = p
        .app
        .book(&stranger, fx.slot_id, hours_from_now(2), hours_from_now(3))
        .await;
    later.assert_problem(409, "slot_already_reserved");
}

#[tokio::test]
async fn a_declined_card_leaves_the_booking_pending_until_it_expires_and_frees_its_slot() {
    let p = paying_app(&[("BOOKING_HOLD_SECONDS", "3")]).await;
    let Scene {
        fx,
        driver,
        booking_id,
    } = p.scene(2).await;

    let (payment_id, declined) = p
        .pay(&driver, booking_id, "pm_card_chargeCustomerFail")
        .await;
    assert_eq!(declined, StatusCode::PAYMENT_REQUIRED);
    let payment = p.until_payment(&driver, payment_id, "failed").await;
    assert!(
        payment.body["last_failure"].as_str().is_some(),
        "{payment:?}"
    );
    assert_eq!(p.booking_status(&driver, booking_id).await, "pending");

    p.until_booking(&driver, booking_id, "expired").await;
    assert_eq!(p.count("BookingExpired").await, 1);
    // Its range is free again, and an expired booking takes no payment.
    let (other, _) = p.app.signed_in("user").await;
    p.booking(&other, fx.slot_id, 2).await;
    let intent = p.intent(&driver, booking_id).await;
    assert_eq!(
        intent.status,
        StatusCode::OK,
        "its payment exists: {intent:?}"
    );
    let late = p.app.post(
        "/api/v1/payments/intents",
        Some(&other),
        json!({"booking_id": Uuid::new_v4()}),
    );
    late.await.assert_problem(404, "booking_not_found");
}

#[tokio::test]
async fn a_webhook_with_a_bad_signature_is_refused_and_records_nothing() {
    let p = paying_app(&[]).await;
    let Scene {
        fx: _,
        driver,
        booking_id,
    } = p.scene(2).await;
    let intent = p.intent(&driver, booking_id).await;
    let payment_id = uuid(&intent.body["payment_id"]);
    let intent_id = intent.body["stripe_payment_intent_id"].as_str().unwrap();
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&p.app.db)
        .await
        .unwrap();

    let forged = succeeded("evt_forged", intent_id, payment_id, 500);
    p.webhook(&forged, "whsec_not_the_endpoints")
        .await
        .assert_problem(400, "invalid_signature");
    let unsigned = p
        .app
        .post("/api/v1/payments/webhook", None, forged.clone())
        .await;
    unsigned.assert_problem(400, "invalid_signature");

    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&p.app.db)
        .await
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(p.booking_status(&driver, booking_id).await, "pending");
}

#[tokio::test]
async fn the_same_webhook_twice_records_once_and_another_amount_does_not_confirm() {
    let p = paying_app(&[]).await;
    let fx = p.app.lot_with_slot().await;
    let (driver, _) = p.app.signed_in("user").await;

    let booking_id = p.booking(&driver, fx.slot_id, 2).await;
    let intent = p.intent(&driver, booking_id).await;
    let (payment_id, intent_id) = (
        uuid(&intent.body["payment_id"]),
        intent.body["stripe_payment_intent_id"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let delivery = succeeded("evt_twice", &intent_id, payment_id, 500);
    for _ in 0..2 {
        let answer = p.webhook(&delivery, WEBHOOK_SECRET).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    }
    p.until_booking(&driver, booking_id, "confirmed").await;
    assert_eq!(p.count("PaymentSucceeded").await, 1);
    assert_eq!(p.count("BookingConfirmed").await, 1);

    // A success of another amount is money received, but the booking is not confirmed by it:
    // the system refunds it.
    let underpaid = p.booking(&driver, fx.slot_id, 6).await;
    let intent = p.intent(&driver, underpaid).await;
    let (payment_id, intent_id) = (
        uuid(&intent.body["payment_id"]),
        intent.body["stripe_payment_intent_id"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let answer = p
        .webhook(
            &succeeded("evt_short", &intent_id, payment_id, 400),
            WEBHOOK_SECRET,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(p.booking_status(&driver, underpaid).await, "pending");
    assert_eq!(p.count("BookingConfirmed").await, 1);
    let payment = p.payment(&driver, payment_id).await;
    assert_eq!(payment.body["received_cents"], 400);
    assert_eq!(
        payment.body["refunds"].as_array().unwrap().len(),
        1,
        "{payment:?}"
    );

    // An event about an intent that is not ours is answered 200 and changes nothing.
    let before = p.count("PaymentSucceeded").await;
    let stranger = succeeded("evt_unknown", "pi_not_ours", Uuid::new_v4(), 500);
    assert_eq!(
        p.webhook(&stranger, WEBHOOK_SECRET).await.status,
        StatusCode::OK
    );
    assert_eq!(p.count("PaymentSucceeded").await, before);
}

#[tokio::test]
async fn partial_then_full_refund_then_none_and_never_more_than_is_left() {
    let p = paying_app(&[]).await;
    let Scene {
        fx,
        driver,
        booking_id,
    } = p.scene(2).await;
    let payment_id = p.paid(&driver, booking_id).await;
    let app = &p.app;
    let path = format!("/api/v1/payments/{payment_id}/refund");
    let refund = |token: &str, body: Value| {
        let (path, token) = (path.clone(), token.to_owned());
        async move { app.post(&path, Some(&token), body).await }
    };

    refund(&driver, json!({"amount_cents": 100}))
        .await
        .assert_problem(403, "forbidden");
    refund(&fx.owner_token, json!({"amount_cents": 0}))
        .await
        .assert_problem(422, "invalid_refund_amount");
    let partial = refund(
        &fx.owner_token,
        json!({"amount_cents": 200, "reason": "late opening"}),
    )
    .await;
    assert_eq!(partial.status, StatusCode::OK, "{partial:?}");
    assert_eq!(partial.body["status"], "partially_refunded");
    assert_eq!(partial.body["refunded_cents"], 200);
    assert_eq!(partial.body["refundable_cents"], 300);
    assert!(partial.body["refunds"][0]["stripe_refund_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("re_")));

    let too_much = refund(&fx.owner_token, json!({"amount_cents": 301})).await;
    too_much.assert_problem(409, "refund_exceeds_remaining");
    let rest = refund(&fx.owner_token, json!({})).await;
    assert_eq!(rest.status, StatusCode::OK, "{rest:?}");
    assert_eq!(rest.body["status"], "refunded");
    assert_eq!(rest.body["refunded_cents"], 500);
    refund(&fx.owner_token, json!({"amount_cents": 1}))
        .await
        .assert_problem(409, "payment_fully_refunded");
    assert_eq!(p.count("RefundSucceeded").await, 2);
}

#[tokio::test]
async fn a_paid_booking_cancelled_before_its_start_is_refunded_in_full() {
    let p = paying_app(&[]).await;
    let Scene {
        fx,
        driver,
        booking_id,
    } = p.scene(3).await;
    let (payment_id, _) = p.pay(&driver, booking_id, "pm_card_visa").await;
    p.until_booking(&driver, booking_id, "confirmed").await;

    let cancelled = p
        .app
        .post(
            &format!("/api/v1/bookings/{booking_id}/cancel"),
            Some(&driver),
            json!({}),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{cancelled:?}");
    assert_eq!(cancelled.body["status"], "cancelled");
    let payment = p.payment(&driver, payment_id).await;
    assert_eq!(payment.body["status"], "refunded", "{payment:?}");
    assert_eq!(payment.body["refunded_cents"], 500);
    // Its range is free again.
    let (other, _) = p.app.signed_in("user").await;
    p.booking(&other, fx.slot_id, 3).await;
}

#[tokio::test]
async fn check_in_needs_a_confirmed_booking_and_check_out_frees_the_range() {
    let p = paying_app(&[]).await;
    let fx = p.app.lot_with_slot().await;
    let (driver, _) = p.app.signed_in("user").await;
    // Starting in ten minutes: within the check-in grace period.
    let start = Utc::now() + chrono::Duration::minutes(10);
    let end = start + chrono::Duration::hours(1);
    let booked = p.app.book(&driver, fx.slot_id, start, end).await;
    assert_eq!(booked.status, StatusCode::CREATED, "{booked:?}");
    let booking_id = booked.id();
    let check_in = format!("/api/v1/bookings/{booking_id}/check-in");
    let check_out = format!("/api/v1/bookings/{booking_id}/check-out");

    p.app
        .post(&check_in, Some(&driver), json!({}))
        .await
        .assert_problem(409, "booking_not_confirmed");
    p.app
        .post(&check_out, Some(&driver), json!({}))
        .await
        .assert_problem(409, "booking_not_active");
    p.pay(&driver, booking_id, "pm_card_visa").await;
    p.until_booking(&driver, booking_id, "confirmed").await;
    let (stranger, _) = p.app.signed_in("user").await;
    p.app
        .post(&check_in, Some(&stranger), json!({}))
        .await
        .assert_problem(403, "forbidden");

    let active = p
        .app
        .post(&check_in, Some(&fx.owner_token), json!({}))
        .await;
    assert_eq!(active.status, StatusCode::OK, "{active:?}");
    assert_eq!(active.body["status"], "active");
    let cancel = p
        .app
        .post(
            &format!("/api/v1/bookings/{booking_id}/cancel"),
            Some(&driver),
            json!({}),
        )
        .await;
    cancel.assert_problem(409, "booking_not_cancellable");
    let done = p.app.post(&check_out, Some(&driver), json!({})).await;
    assert_eq!(done.status, StatusCode::OK, "{done:?}");
    assert_eq!(done.body["status"], "completed");
    p.until_booking(&driver, booking_id, "completed").await;

    // The rest of the range is free for someone else.
    let next = p
        .app
        .book(
            &stranger,
            fx.slot_id,
            start + chrono::Duration::minutes(30),
            end,
        )
        .await;
    assert_eq!(next.status, StatusCode::CREATED, "{next:?}");
}

#[tokio::test]
async fn a_stripe_call_whose_answer_is_lost_is_retried_with_the_same_idempotency_key() {
    let stripe = LocalStripe::start().await;
    let proxy = RecordingProxy::start(&stripe.url, "/v1/payment_intents").await;
    let p = paying_app_at(stripe, &proxy.url.clone(), &[]).await;
    let Scene {
        fx: _,
        driver,
        booking_id,
    } = p.scene(2).await;

    let intent = p.intent(&driver, booking_id).await;
    assert_eq!(intent.status, StatusCode::CREATED, "{intent:?}");
    assert!(proxy.answer_lost());
    let creations: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/payment_intents")
        .collect();
    assert_eq!(
        creations.len(),
        2,
        "the lost call and its retry: {creations:?}"
    );
    assert!(creations[0].idempotency_key.is_some());
    assert_eq!(creations[0].idempotency_key, creations[1].idempotency_key);

    // The booking still ends with one payment, paid and confirmed.
    let intent_id = intent.body["stripe_payment_intent_id"].as_str().unwrap();
    p.stripe.set_payment_method(intent_id, "pm_card_visa").await;
    assert_eq!(p.stripe.confirm(intent_id).await, StatusCode::OK);
    p.until_booking(&driver, booking_id, "confirmed").await;
    assert_eq!(p.count("PaymentOpened").await, 1);
    assert_eq!(p.count("PaymentIntentCreated").await, 1);
    assert_eq!(p.count("PaymentSucceeded").await, 1);
}

#[tokio::test]
async fn payments_without_a_provider_answer_503_and_record_nothing() {
    let app = parking_tests::spawn_app().await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    let booking_id = app.booked_hour(&driver, fx.slot_id, 2).await.id();
    let intent = app
        .post(
            "/api/v1/payments/intents",
            Some(&driver),
            json!({"booking_id": booking_id}),
        )
        .await;
    intent.assert_problem(503, "payments_unavailable");
    let webhook = app
        .post(
            "/api/v1/payments/webhook",
            None,
            json!({"id": "evt_1", "type": "payment_intent.succeeded"}),
        )
        .await;
    webhook.assert_problem(400, "invalid_signature");
    assert!(!app
        .event_types()
        .await
        .iter()
        .any(|(kind, _)| kind == "payment"));
}

#[tokio::test]
async fn a_hold_that_passes_while_every_node_is_down_expires_once_after_the_restart() {
    let database_url = parking_tests::fresh_database().await;
    let settings = [("BOOKING_HOLD_SECONDS", "2")];
    let first = ServerProcess::start(&database_url, &settings).await;
    let app = TestApp::connect(first.address.clone(), database_url.clone()).await;
    let fx = app.lot_with_slot().await;
    let (driver, _) = app.signed_in("user").await;
    let booking_id = app.booked_hour(&driver, fx.slot_id, 2).await.id();
    first.kill();

    tokio::time::sleep(Duration::from_secs(3)).await;
    let (a, b) = tokio::join!(
        ServerProcess::start(&database_url, &settings),
        ServerProcess::start(&database_url, &settings)
    );
    let node_a = TestApp::connect(a.address.clone(), database_url.clone()).await;
    let mut expired = false;
    for _ in 0..100 {
        let booking = node_a
            .get(&format!("/api/v1/bookings/{booking_id}"), Some(&driver))
            .await;
        if booking.body["status"] == "expired" {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(expired, "the booking did not expire after the restart");
    // A few more sweeps of both nodes: still once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let expiries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'BookingExpired'")
            .fetch_one(&node_a.db)
            .await
            .unwrap();
    assert_eq!(expiries, 1);
    let node_b = TestApp::connect(b.address.clone(), database_url.clone()).await;
    let (other, _) = node_b.signed_in("user").await;
    node_b.booked_hour(&other, fx.slot_id, 2).await;
}

#[tokio::test]
async fn refunds_reported_by_stripe_are_recorded_once_and_ours_are_not_counted_twice() {
    let p = paying_app(&[]).await;
    let Scene {
        fx,
        driver,
        booking_id,
    } = p.scene(2).await;
    let payment_id = p.paid(&driver, booking_id).await;
    let paid = p.payment(&driver, payment_id).await;
    let intent_id = paid.body["stripe_payment_intent_id"].as_str().unwrap();
    let charge_refunded = |event_id: &str, refunds: Value| {
        json!({
            "id": event_id, "object": "event", "type": "charge.refunded",
            "data": {"object": {
                "id": "ch_any", "object": "charge", "payment_intent": intent_id,
                "refunds": {"object": "list", "data": refunds},
            }},
        })
    };

    // A refund made outside the platform (Stripe's dashboard), reported twice.
    let elsewhere =
        json!({"id": "re_dashboard", "amount": 100, "status": "succeeded", "metadata": {}});
    for event_id in ["evt_refund_1", "evt_refund_1"] {
        let delivery = charge_refunded(event_id, json!([elsewhere]));
        assert_eq!(
            p.webhook(&delivery, WEBHOOK_SECRET).await.status,
            StatusCode::OK
        );
    }
    let payment = p.payment(&driver, payment_id).await;
    assert_eq!(payment.body["refunded_cents"], 100, "{payment:?}");
    assert_eq!(payment.body["refundable_cents"], 400);

    // Ours, then Stripe's report listing both: counted once each.
    let path = format!("/api/v1/payments/{payment_id}/refund");
    let ours = p
        .app
        .post(&path, Some(&fx.owner_token), json!({"amount_cents": 150}))
        .await;
    assert_eq!(ours.status, StatusCode::OK, "{ours:?}");
    let ours = ours.body["refunds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["amount_cents"] == 150)
        .cloned()
        .unwrap();
    let reported = json!({
        "id": ours["stripe_refund_id"], "amount": 150, "status": "succeeded",
        "metadata": {"refund_id": ours["refund_id"]},
    });
    let delivery = charge_refunded("evt_refund_2", json!([elsewhere, reported]));
    assert_eq!(
        p.webhook(&delivery, WEBHOOK_SECRET).await.status,
        StatusCode::OK
    );
    let payment = p.payment(&driver, payment_id).await;
    assert_eq!(payment.body["refunded_cents"], 250, "{payment:?}");
    assert_eq!(payment.body["status"], "partially_refunded");
    assert_eq!(p.count("RefundSucceeded").await, 2);
}

#[tokio::test]
async fn a_payment_that_arrives_after_its_booking_expired_is_refunded_by_itself() {
    let p = paying_app(&[("BOOKING_HOLD_SECONDS", "2")]).await;
    let Scene {
        fx: _,
        driver,
        booking_id,
    } = p.scene(2).await;
    let intent = p.intent(&driver, booking_id).await;
    assert_eq!(intent.status, StatusCode::CREATED, "{intent:?}");
    let payment_id = uuid(&intent.body["payment_id"]);
    p.until_booking(&driver, booking_id, "expired").await;

    // The driver's app pays late.
    let intent_id = intent.body["stripe_payment_intent_id"].as_str().unwrap();
    p.stripe.set_payment_method(intent_id, "pm_card_visa").await;
    assert_eq!(p.stripe.confirm(intent_id).await, StatusCode::OK);
    let refunded = p.until_payment(&driver, payment_id, "refunded").await;
    assert_eq!(refunded.body["refunded_cents"], 500, "{refunded:?}");
    assert!(refunded.body["refunds"][0]["requested_by"].is_null());
    assert_eq!(p.booking_status(&driver, booking_id).await, "expired");
    assert_eq!(p.count("BookingConfirmed").await, 0);
}

#[tokio::test]
async fn concurrent_refunds_never_exceed_what_was_paid() {
    let p = paying_app(&[]).await;
    let Scene {
        fx,
        driver,
        booking_id,
    } = p.scene(2).await;
    let payment_id = p.paid(&driver, booking_id).await;

    let path = format!("/api/v1/payments/{payment_id}/refund");
    let body = json!({"amount_cents": 300});
    let answers = futures::future::join_all(
        (0..4).map(|_| p.app.post(&path, Some(&fx.owner_token), body.clone())),
    )
    .await;
    let accepted = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .count();
    assert_eq!(accepted, 1, "{answers:?}");
    for refused in answers.iter().filter(|a| a.status != StatusCode::OK) {
        refused.assert_problem(409, "refund_exceeds_remaining");
    }
    let payment = p.payment(&driver, payment_id).await;
    assert_eq!(payment.body["refunded_cents"], 300);
    assert_eq!(payment.body["refundable_cents"], 200);
}

#[tokio::test]
async fn a_success_whose_confirmation_a_crash_cut_off_is_settled_by_the_sweep() {
    let p = paying_app(&[]).await;
    let Scene {
        fx: _,
        driver,
        booking_id,
    } = p.scene(2).await;
    let payment_id = p.paid(&driver, booking_id).await;
    p.until_booking(&driver, booking_id, "confirmed").await;
    // As if the process died after recording the success: the confirmation's append (the
    // booking's and its slot's events, the last of each stream) never happened.
    sqlx::query(
        "DELETE FROM events WHERE event_type IN ('BookingConfirmed', 'SlotReservationConfirmed')",
    )
    .execute(&p.app.db)
    .await
    .unwrap();

    let vars = std::collections::HashMap::from([
        ("DATABASE_URL", p.app.database_url.clone()),
        ("STRIPE_SECRET_KEY", SECRET_KEY.to_owned()),
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ("STRIPE_API_BASE", p.stripe.url.clone()),
    ]);
    let config = parking_infra::Config::from_lookup(|n| vars.get(n).cloned()).unwrap();
    let log = parking_tests::event_log(&p.app.db);
    let commands = parking_api::startup::commands(&log, &config).unwrap();
    let ctx = parking_commands::CommandContext::system("sweep".into(), Utc::now());
    let later = Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(
        commands
            .settle_unsettled_payments(&ctx, later)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        commands
            .settle_unsettled_payments(&ctx, later)
            .await
            .unwrap(),
        0
    );
    assert_eq!(p.count("BookingConfirmed").await, 1);
    assert_eq!(p.count("SlotReservationConfirmed").await, 1);
    assert_eq!(p.count("RefundRequested").await, 0);
    let confirmed_by: String = sqlx::query_scalar(
        "SELECT payload -> 'BookingConfirmed' ->> 'payment_id' FROM events WHERE event_type = 'BookingConfirmed'",
    )
    .fetch_one(&p.app.db)
    .await
    .unwrap();
    assert_eq!(confirmed_by, payment_id.to_string());
}

/// The driver's socket follows the payment and the booking it confirms, without asking; the
/// client secret stays out of it.
#[tokio::test]
async fn the_driver_is_told_over_the_websocket_as_the_payment_goes_through() {
    use parking_tests::ws::{Connect, Socket};
    let paying = paying_app(&[]).await;
    let scene = paying.scene(3).await;
    let patience = Duration::from_secs(15);
    let mut socket = Socket::open(
        &paying.app.address,
        Connect {
            token: Some(&scene.driver),
            ..Connect::default()
        },
    )
    .await;
    assert_eq!(socket.next(patience).await["type"], "connected");

    let payment_id = paying.paid(&scene.driver, scene.booking_id).await;
    let mut seen = Vec::new();
    while !seen.contains(&"BookingConfirmed".to_owned()) {
        let message = socket.next_event(patience).await;
        assert!(message.get("client_secret").is_none(), "{message}");
        let kind = message["type"].as_str().unwrap().to_owned();
        if kind == "BookingCreated" {
            // Made just before the socket opened; the hub may not have sent it yet then.
            continue;
        }
        if let Some(payment) = message.get("payment") {
            assert_eq!(uuid(&payment["payment_id"]), payment_id);
            assert_eq!(payment["client_secret"], Value::Null, "{message}");
            let status = payment["status"].as_str().unwrap();
            match kind.as_str() {
                "PaymentOpened" | "PaymentIntentCreated" => assert_eq!(status, "requires_payment"),
                "PaymentSucceeded" => {
                    assert_eq!(status, "succeeded");
                    assert_eq!(payment["received_cents"], payment["amount_cents"]);
                }
                other => panic!("unexpected {other}: {message}"),
            }
        } else {
            assert_eq!(
                uuid(&message["booking"]["id"]),
                scene.booking_id,
                "{message}"
            );
            assert_eq!(kind, "BookingConfirmed");
            assert_eq!(message["booking"]["status"], "confirmed");
        }
        seen.push(kind);
    }
    assert_eq!(
        seen,
        [
            "PaymentOpened",
            "PaymentIntentCreated",
            "PaymentSucceeded",
            "BookingConfirmed"
        ]
    );
}
