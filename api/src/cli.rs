//! The `parking-api` command line: serve, migrate, and administration.

use clap::{Parser, Subcommand};
use parking_commands::{CommandContext, NewUser};
use parking_domain::user::Email;
use parking_domain::Role;
use parking_infra::{db, Config};

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
    /// Create a user with any role (e.g. the first admin).
    CreateUser {
        #[arg(long)]
        email: String,
        /// Read from the environment variable PARKING_NEW_PASSWORD if not given.
        #[arg(long, env = "PARKING_NEW_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long)]
        full_name: String,
        /// user, parking_owner, admin, auditor or service.
        #[arg(long, default_value = "admin")]
        role: String,
    },
}

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let pool = db::pool(&config.database_url, 2)?;
    db::migrate(&pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}

pub async fn create_user(
    config: &Config,
    email: &str,
    password: String,
    full_name: String,
    role: &str,
) -> anyhow::Result<()> {
    let pool = db::pool(&config.database_url, 2)?;
    db::migrate(&pool).await?;
    let email = Email::parse(email)?;
    let role = Role::parse(role).ok_or_else(|| anyhow::anyhow!("unknown role {role:?}"))?;
    let commands = crate::startup::commands(&pool, config);
    let ctx = CommandContext::system(
        format!("cli-{}", uuid::Uuid::new_v4()),
        commands.clock().now(),
    );
    let id = commands
        .register_user(
            &ctx,
            NewUser {
                email,
                password: password.into(),
                full_name,
                role,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", e.code()))?;
    println!("{id}");
    Ok(())
}
