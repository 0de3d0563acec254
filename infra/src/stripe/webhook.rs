//! How Stripe's webhooks are authenticated.
//!
//! Stripe signs every webhook it sends with the endpoint's secret (`STRIPE_WEBHOOK_SECRET`,
//! `whsec_…`): the `Stripe-Signature` header is `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`, each
//! `v1` an HMAC-SHA256 of `"<t>.<raw body>"` (several while a secret is being rolled; other
//! schemes such as `v0` are not signatures to trust). [`verify_webhook`] checks that before
//! anything of the body is parsed: over the raw bytes (a body re-serialized after parsing would
//! not match), any matching `v1`, compared in constant time, and a timestamp within a
//! tolerance of now, so that a captured webhook cannot be replayed later.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// How far a webhook's timestamp may be from now, either way: Stripe's own libraries accept
/// 300 s, and so do we.
pub const WEBHOOK_TOLERANCE: Duration = Duration::from_secs(300);

/// Why a webhook's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header has no timestamp")]
    NoTimestamp,
    #[error("the Stripe-Signature header has no v1 signature")]
    NoSignature,
    #[error("no v1 signature matches the body")]
    Mismatch,
    #[error("the signature's timestamp is too far from now")]
    OutsideTolerance,
}

/// Checks a webhook's `Stripe-Signature` header against its raw `body` and the endpoint's
/// `secret`, at `now`. Returns the signed timestamp.
pub fn verify_webhook(
    header: &str,
    body: &[u8],
    secret: &SecretString,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<DateTime<Utc>, SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::NoTimestamp)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    let expected = mac(secret, timestamp, body);
    let matches = signatures.iter().any(|signature| {
        hex::decode(signature).is_ok_and(|bytes| expected.clone().verify_slice(&bytes).is_ok())
    });
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    let signed_at = DateTime::from_timestamp(timestamp, 0).ok_or(SignatureError::NoTimestamp)?;
    let apart = (now - signed_at).abs().to_std().unwrap_or(Duration::MAX);
    if apart > tolerance {
        return Err(SignatureError::OutsideTolerance);
    }
    Ok(signed_at)
}

/// The `Stripe-Signature` header Stripe would send for `body` at `signed_at`: for tests, and
/// for tools that replay a webhook to a server of ours.
pub fn sign_webhook(body: &[u8], secret: &SecretString, signed_at: DateTime<Utc>) -> String {
    let timestamp = signed_at.timestamp();
    let signature = hex::encode(mac(secret, timestamp, body).finalize().into_bytes());
    format!("t={timestamp},v1={signature}")
}

fn mac(secret: &SecretString, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const BODY: &[u8] = b"{\n  \"id\": \"evt_1\",\n  \"type\": \"payment_intent.succeeded\"\n}";
    /// HMAC-SHA256 of `1700000000.` + BODY with `whsec_test_secret`, computed independently
    /// (Python's `hmac` module).
    const SIGNATURE: &str = "e54e2cdbc72ec703bdf12f3a406d4930a724cd5152fe8d8efcfa08f572e22863";

    fn secret() -> SecretString {
        "whsec_test_secret".into()
    }

    fn signed_at() -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000, 0).unwrap()
    }

    fn verify(
        header: &str,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, SignatureError> {
        verify_webhook(header, body, &secret(), now, WEBHOOK_TOLERANCE)
    }

    #[test]
    fn a_signature_made_as_stripe_makes_it_verifies() {
        let header = format!("t=1700000000,v1={SIGNATURE}");
        assert_eq!(verify(&header, BODY, signed_at()), Ok(signed_at()));
        assert_eq!(sign_webhook(BODY, &secret(), signed_at()), header);
    }

    #[test]
    fn any_matching_v1_among_several_verifies_and_other_schemes_are_ignored() {
        let wrong = "0".repeat(64);
        let header = format!("t=1700000000, v0={SIGNATURE}, v1={wrong}, v1={SIGNATURE}");
        assert!(verify(&header, BODY, signed_at()).is_ok());
        let only_v0 = format!("t=1700000000,v0={SIGNATURE}");
        assert_eq!(
            verify(&only_v0, BODY, signed_at()),
            Err(SignatureError::NoSignature)
        );
    }

    #[test]
    fn a_body_changed_by_one_byte_or_reformatted_does_not_verify() {
        let header = format!("t=1700000000,v1={SIGNATURE}");
        let mut changed = BODY.to_vec();
        changed[10] ^= 1;
        assert_eq!(
            verify(&header, &changed, signed_at()),
            Err(SignatureError::Mismatch)
        );
        let compact = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
        assert_eq!(
            verify(&header, compact, signed_at()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn another_secret_or_another_timestamp_does_not_verify() {
        let header = format!("t=1700000000,v1={SIGNATURE}");
        let other: SecretString = "whsec_other".into();
        let refused = verify_webhook(&header, BODY, &other, signed_at(), WEBHOOK_TOLERANCE);
        assert_eq!(refused, Err(SignatureError::Mismatch));
        let moved = format!("t=1700000001,v1={SIGNATURE}");
        assert_eq!(
            verify(&moved, BODY, signed_at()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_webhook_signed_too_long_ago_or_ahead_is_refused() {
        let header = format!("t=1700000000,v1={SIGNATURE}");
        let late = signed_at() + chrono::Duration::seconds(301);
        assert_eq!(
            verify(&header, BODY, late),
            Err(SignatureError::OutsideTolerance)
        );
        let early = signed_at() - chrono::Duration::seconds(301);
        assert_eq!(
            verify(&header, BODY, early),
            Err(SignatureError::OutsideTolerance)
        );
        let in_time = signed_at() + chrono::Duration::seconds(300);
        assert!(verify(&header, BODY, in_time).is_ok());
    }

    #[test]
    fn malformed_headers_are_refused() {
        let cases = [
            ("", SignatureError::NoTimestamp),
            (
                &format!("v1={SIGNATURE}") as &str,
                SignatureError::NoTimestamp,
            ),
            (
                &format!("t=soon,v1={SIGNATURE}"),
                SignatureError::NoTimestamp,
            ),
            ("t=1700000000", SignatureError::NoSignature),
            ("t=1700000000,v1=not-hex", SignatureError::Mismatch),
            ("t=1700000000,v1=", SignatureError::Mismatch),
        ];
        for (header, expected) in cases {
            assert_eq!(
                verify(header, BODY, signed_at()),
                Err(expected),
                "{header:?}"
            );
        }
    }
}
