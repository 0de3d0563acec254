//! # parking-api
//!
//! The HTTP server and the admin CLI: routes, request/response shapes, authentication
//! (JWT bearer tokens), the mapping of errors to `application/problem+json`, request ids,
//! and the OpenAPI document generated from the very handlers that serve requests.
//!
//! Handlers are thin: parse and validate input into domain types, call a command or a read
//! model, map the result. No business rule lives here.
#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod consistency;
pub mod error;
pub mod headers;
pub mod idempotency;
pub mod live;
pub mod metrics;
mod observations;
mod openapi;
pub mod request_id;
mod routes;
pub mod startup;
pub mod state;
mod sweep;
pub mod throttle;

pub use startup::Application;
