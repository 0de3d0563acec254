//! Configuration, in layers: built-in defaults, then an optional `.env` file, then the
//! process environment (which wins over the file). Secrets are `SecretString`s: they are
//! never printed, not even by `Debug`.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

use crate::telemetry::LogFormat;

/// The database the development script creates; `cargo run` works with it and nothing set.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/parking";
pub const DEFAULT_BIND_ADDR: &str = "127.0.0.1:8080";

#[derive(Debug, thiserror::Error)]
#[error("configuration variable {name} is invalid: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`
    pub database_url: SecretString,
    /// `DATABASE_MAX_CONNECTIONS` (default 20)
    pub database_max_connections: u32,
    /// `BIND_ADDR`
    pub bind_addr: SocketAddr,
    /// `JWT_SECRET`; unset means a random key per start (development only, logged loudly).
    pub jwt_secret: Option<SecretString>,
    /// `JWT_TTL_SECONDS` (default 3600)
    pub jwt_ttl: Duration,
    /// `BCRYPT_COST` (default 12; tests use 4)
    pub bcrypt_cost: u32,
    /// `BOOKING_HOLD_MINUTES`: how long an unpaid booking holds its slot (default 15).
    pub booking_hold: chrono::Duration,
    /// `LOG_FORMAT`: `pretty` (default) or `json`.
    pub log_format: LogFormat,
}

impl Config {
    /// Reads `.env` (if present) and the environment.
    pub fn load() -> Result<Self, ConfigError> {
        // A missing .env file is the normal case in production.
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable source; `load` uses the environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        Ok(Self {
            database_url: SecretString::from(
                get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            ),
            database_max_connections: parse(&get, "DATABASE_MAX_CONNECTIONS", 20)?,
            bind_addr: parse(
                &get,
                "BIND_ADDR",
                DEFAULT_BIND_ADDR.parse().expect("valid default"),
            )?,
            jwt_secret: get("JWT_SECRET").map(SecretString::from),
            jwt_ttl: Duration::from_secs(parse(&get, "JWT_TTL_SECONDS", 3600)?),
            bcrypt_cost: parse(&get, "BCRYPT_COST", 12)?,
            booking_hold: chrono::Duration::minutes(parse(&get, "BOOKING_HOLD_MINUTES", 15)?),
            log_format: match get("LOG_FORMAT").as_deref() {
                None | Some("pretty") => LogFormat::Pretty,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(ConfigError {
                        name: "LOG_FORMAT",
                        reason: format!("expected pretty or json, got {other:?}"),
                    })
                }
            },
        })
    }
}

fn parse<T: FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match get(name) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError {
            name,
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_work_on_a_development_machine() {
        let c = config(&[]).unwrap();
        assert_eq!(c.database_url.expose_secret(), DEFAULT_DATABASE_URL);
        assert_eq!(c.bind_addr.to_string(), DEFAULT_BIND_ADDR);
        assert!(c.jwt_secret.is_none());
        assert_eq!(c.booking_hold, chrono::Duration::minutes(15));
    }

    #[test]
    fn environment_values_override_defaults() {
        let c = config(&[("BIND_ADDR", "0.0.0.0:9000"), ("BCRYPT_COST", "4")]).unwrap();
        assert_eq!(c.bind_addr.port(), 9000);
        assert_eq!(c.bcrypt_cost, 4);
    }

    #[test]
    fn a_malformed_value_names_the_variable() {
        let err = config(&[("BIND_ADDR", "nowhere")]).unwrap_err();
        assert_eq!(err.name, "BIND_ADDR");
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let c = config(&[("JWT_SECRET", "hunter2-hunter2")]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
