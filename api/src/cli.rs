//! The `parking-api` command line: serve, migrate, and administration.

use clap::{Parser, Subcommand};
use parking_commands::{CommandContext, NewUser};
use parking_domain::user::Email;
use parking_domain::Role;
use parking_infra::{db, Config};
use secrecy::SecretString;

#[derive(Debug, Parser)]
#[command(
    name = "parking-api",
    version,
    about = "Smart-parking platform backend"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve HTTP (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Publish the event log to Kafka (`KAFKA_BROKERS`) until stopped. `serve` runs the relay
    /// too unless `RELAY_ENABLED=false`; only one relay per database is active at a time.
    Relay,
    /// Create a user with any role (e.g. the first admin).
    CreateUser {
        #[arg(long)]
        email: String,
        /// Prefer the environment variable PARKING_NEW_PASSWORD: arguments show in process lists.
        #[arg(long, env = "PARKING_NEW_PASSWORD", hide_env_values = true, value_parser = secret)]
        password: SecretString,
        #[arg(long)]
        full_name: String,
        /// user, parking_owner, admin, auditor or service.
        #[arg(long, default_value = "admin")]
        role: String,
    },
}

fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let pool = db::pool(&config.database_url, 2)?;
    db::migrate(&pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}

pub async fn relay(config: &Config) -> anyhow::Result<()> {
    let kafka = config
        .kafka
        .clone()
        .ok_or_else(|| anyhow::anyhow!("KAFKA_BROKERS is not set: there is nothing to relay to"))?;
    let pool = db::pool(&config.database_url, 4)?;
    db::migrate(&pool).await?;
    let log = parking_infra::EventLog::new(pool);
    tokio::spawn(log.clone().watch());
    tokio::select! {
        () = parking_infra::relay::Relay::new(log, kafka).run() => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("relay stopping"),
    }
    Ok(())
}

pub async fn create_user(
    config: &Config,
    email: &str,
    password: SecretString,
    full_name: String,
    role: &str,
) -> anyhow::Result<()> {
    let pool = db::pool(&config.database_url, 2)?;
    db::migrate(&pool).await?;
    let email = Email::parse(email)?;
    let role = Role::parse(role).ok_or_else(|| anyhow::anyhow!("unknown role {role:?}"))?;
    let commands = crate::startup::commands(&parking_infra::EventLog::new(pool), config);
    let ctx = CommandContext::system(
        format!("cli-{}", uuid::Uuid::new_v4()),
        commands.clock().now(),
    );
    let id = commands
        .register_user(
            &ctx,
            NewUser {
                email,
                password,
                full_name,
                role,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", e.code()))?;
    println!("{id}");
    Ok(())
}
