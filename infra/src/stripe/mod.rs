//! Stripe, the payment provider: a thin client of its HTTP API ([`StripeClient`]) and the
//! check of its webhooks' signatures ([`verify_webhook`]).
//!
//! Why a client of our own and not `async-stripe`: docs/adr/0015-stripe-client.md.

mod client;
mod webhook;

pub use client::{NewIntent, PaymentIntent, Refund, StripeClient, StripeError};
pub use webhook::{sign_webhook, verify_webhook, SignatureError, WEBHOOK_TOLERANCE};

use secrecy::SecretString;

/// `STRIPE_SECRET_KEY`, `STRIPE_WEBHOOK_SECRET` and `STRIPE_API_BASE`.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub secret_key: SecretString,
    pub webhook_secret: SecretString,
    /// `https://api.stripe.com` unless set (a Stripe-protocol test server in development).
    pub api_base: String,
}

pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";
