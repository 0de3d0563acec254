use super::*;
use crate::actor::Role;
use crate::money::Currency;
use chrono::TimeZone;
use cqrs_es::test::TestFramework;

type PaymentTest = TestFramework<Payment>;

const OWNER: Actor = Actor {
    user_id: Uuid::from_u128(11),
    role: Role::ParkingOwner,
};
const STRANGER: Actor = Actor {
    user_id: Uuid::from_u128(12),
    role: Role::ParkingOwner,
};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 8, 0, 0).unwrap()
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::parse("EUR").unwrap()).unwrap()
}

fn opened() -> PaymentEvent {
    PaymentEvent::PaymentOpened {
        booking_id: Uuid::from_u128(1),
        user_id: Uuid::from_u128(2),
        lot_id: Uuid::from_u128(3),
        lot_owner_id: OWNER.user_id,
        amount: eur(500),
        opened_at: now(),
    }
}

fn intent() -> PaymentEvent {
    PaymentEvent::PaymentIntentCreated {
        intent_id: "pi_1".into(),
        client_secret: "pi_1_secret".into(),
    }
}

fn succeeded() -> PaymentEvent {
    PaymentEvent::PaymentSucceeded {
        intent_id: "pi_1".into(),
        charge_id: Some("ch_1".into()),
        amount: eur(500),
        provider_event_id: "evt_1".into(),
        succeeded_at: now(),
    }
}

fn success(event: &str) -> PaymentCommand {
    PaymentCommand::RecordSuccess {
        provider_event_id: event.into(),
        intent_id: "pi_1".into(),
        received: eur(500),
        charge_id: Some("ch_1".into()),
        now: now(),
    }
}

fn refund(n: u128, amount: Option<i64>) -> PaymentCommand {
    PaymentCommand::RequestRefund {
        refund_id: Uuid::from_u128(n),
        amount,
        reason: None,
        by: Some(OWNER),
        now: now(),
    }
}

fn requested(n: u128, amount: i64) -> PaymentEvent {
    PaymentEvent::RefundRequested {
        refund_id: Uuid::from_u128(n),
        amount: eur(amount),
        reason: None,
        requested_by: Some(OWNER.user_id),
        requested_at: now(),
    }
}

fn refunded(n: u128, amount: i64) -> PaymentEvent {
    PaymentEvent::RefundSucceeded {
        refund_id: Uuid::from_u128(n),
        provider_refund_id: format!("re_{n}"),
        amount: eur(amount),
        provider_event_id: None,
        refunded_at: now(),
    }
}

#[test]
fn one_booking_has_one_payment_id() {
    let booking = Uuid::from_u128(7);
    assert_eq!(payment_id_for(booking), payment_id_for(booking));
    assert_ne!(payment_id_for(booking), payment_id_for(Uuid::from_u128(8)));
}

#[test]
fn opening_an_open_payment_records_nothing() {
    PaymentTest::with(())
        .given(vec![opened()])
        .when(PaymentCommand::Open {
            booking_id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(2),
            lot_id: Uuid::from_u128(3),
            lot_owner_id: OWNER.user_id,
            amount: eur(500),
            now: now(),
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_success_is_recorded_once_however_often_it_is_delivered() {
    PaymentTest::with(())
        .given(vec![opened(), intent()])
        .when(success("evt_1"))
        .then_expect_events(vec![succeeded()]);
    PaymentTest::with(())
        .given(vec![opened(), intent(), succeeded()])
        .when(success("evt_1"))
        .then_expect_events(vec![]);
}

#[test]
fn a_notification_for_another_intent_is_refused() {
    PaymentTest::with(())
        .given(vec![opened(), intent()])
        .when(PaymentCommand::RecordSuccess {
            provider_event_id: "evt_9".into(),
            intent_id: "pi_other".into(),
            received: eur(500),
            charge_id: None,
            now: now(),
        })
        .then_expect_error(PaymentError::IntentMismatch);
}

#[test]
fn nothing_is_refunded_before_the_money_arrived() {
    PaymentTest::with(())
        .given(vec![opened(), intent()])
        .when(refund(1, None))
        .then_expect_error(PaymentError::NotCaptured);
}

#[test]
fn a_partial_then_the_rest_then_nothing() {
    PaymentTest::with(())
        .given(vec![opened(), intent(), succeeded()])
        .when(refund(1, Some(200)))
        .then_expect_events(vec![requested(1, 200)]);
    PaymentTest::with(())
        .given(vec![opened(), intent(), succeeded(), requested(1, 200)])
        .when(refund(2, None))
        .then_expect_events(vec![requested(2, 300)]);
    PaymentTest::with(())
        .given(vec![
            opened(),
            intent(),
            succeeded(),
            requested(1, 200),
            refunded(1, 200),
            requested(2, 300),
        ])
        .when(refund(3, Some(1)))
        .then_expect_error(PaymentError::FullyRefunded);
}

#[test]
fn a_refund_larger_than_what_is_left_is_refused_even_while_another_is_under_way() {
    PaymentTest::with(())
        .given(vec![opened(), intent(), succeeded(), requested(1, 400)])
        .when(refund(2, Some(101)))
        .then_expect_error(PaymentError::ExceedsRemaining(100));
}

#[test]
fn a_failed_refund_frees_its_amount() {
    let mut payment = Payment::default();
    for event in [opened(), intent(), succeeded(), requested(1, 500)] {
        payment.apply(event);
    }
    assert_eq!(payment.state.as_ref().unwrap().refundable(), 0);
    payment.apply(PaymentEvent::RefundFailed {
        refund_id: Uuid::from_u128(1),
        amount: eur(500),
        reason: "declined".into(),
        failed_at: now(),
    });
    let state = payment.state.unwrap();
    assert_eq!(state.refundable(), 500);
    assert_eq!(state.status(), PaymentStatus::Succeeded);
}

#[test]
fn only_an_admin_or_the_lot_owner_refunds() {
    PaymentTest::with(())
        .given(vec![opened(), intent(), succeeded()])
        .when(PaymentCommand::RequestRefund {
            refund_id: Uuid::from_u128(1),
            amount: None,
            reason: None,
            by: Some(STRANGER),
            now: now(),
        })
        .then_expect_error(PaymentError::NotAllowedToRefund);
}

#[test]
fn a_refund_asked_again_is_not_reserved_twice() {
    PaymentTest::with(())
        .given(vec![opened(), intent(), succeeded(), requested(1, 200)])
        .when(refund(1, Some(200)))
        .then_expect_events(vec![]);
}

#[test]
fn the_providers_confirmation_of_our_refund_is_recorded_once() {
    let record = |event: Option<&str>| PaymentCommand::RecordRefund {
        refund_id: Uuid::from_u128(1),
        provider_refund_id: "re_1".into(),
        amount: 200,
        provider_event_id: event.map(str::to_owned),
        now: now(),
    };
    PaymentTest::with(())
        .given(vec![opened(), intent(), succeeded(), requested(1, 200)])
        .when(record(None))
        .then_expect_events(vec![refunded(1, 200)]);
    PaymentTest::with(())
        .given(vec![
            opened(),
            intent(),
            succeeded(),
            requested(1, 200),
            refunded(1, 200),
        ])
        .when(record(Some("evt_refund")))
        .then_expect_events(vec![]);
}

#[test]
fn status_follows_the_money() {
    let mut payment = Payment::default();
    payment.apply(opened());
    let status = |p: &Payment| p.state.as_ref().unwrap().status();
    assert_eq!(status(&payment), PaymentStatus::RequiresPayment);
    payment.apply(intent());
    payment.apply(succeeded());
    assert_eq!(status(&payment), PaymentStatus::Succeeded);
    payment.apply(requested(1, 200));
    payment.apply(refunded(1, 200));
    assert_eq!(status(&payment), PaymentStatus::PartiallyRefunded);
    payment.apply(requested(2, 300));
    payment.apply(refunded(2, 300));
    assert_eq!(status(&payment), PaymentStatus::Refunded);
}
