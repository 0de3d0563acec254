//! The `parking-api` command line: serve, migrate, and administration.

use clap::{Parser, Subcommand};
use parking_commands::{CommandContext, CommandError, Commands, NewUser};
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
    /// Inspect and rebuild the read models.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
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
    /// Set a new password for an existing user (e.g. rotate a `service` account's secret).
    /// Tokens issued before stay valid until they expire (`JWT_TTL_SECONDS`).
    SetPassword {
        #[arg(long)]
        email: String,
        /// Prefer the environment variable PARKING_NEW_PASSWORD: arguments show in process lists.
        #[arg(long, env = "PARKING_NEW_PASSWORD", hide_env_values = true, value_parser = secret)]
        password: SecretString,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Each projection's and the relay's position in the event log, and their lag.
    Status,
    /// Replay the whole history into fresh tables next to the live ones, then swap them in
    /// atomically. The server may keep running.
    Rebuild {
        /// A projection name (see `projections status`), or `all`.
        name: String,
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
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = parking_infra::relay::Relay::new(log, kafka).run() => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("relay stopping (SIGINT)"),
        _ = terminate.recv() => tracing::info!("relay stopping (SIGTERM)"),
    }
    Ok(())
}

pub async fn projections(config: &Config, command: ProjectionsCommand) -> anyhow::Result<()> {
    let pool = db::pool(&config.database_url, 2)?;
    db::migrate(&pool).await?;
    let models = parking_projections::all();
    match command {
        ProjectionsCommand::Status => {
            let names: Vec<&str> = models.iter().map(|m| m.name()).collect();
            let (head, consumers) = parking_projections::runtime::status(&pool, &names).await?;
            println!("log head: {head}");
            println!(
                "{:<24} {:>12} {:>10}  last moved",
                "consumer", "position", "lag"
            );
            for c in consumers {
                let moved = c
                    .updated_at
                    .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339());
                println!(
                    "{:<24} {:>12} {:>10}  {moved}",
                    c.consumer, c.position, c.lag
                );
            }
        }
        ProjectionsCommand::Rebuild { name } => {
            let chosen: Vec<_> = models
                .iter()
                .filter(|m| name == "all" || m.name() == name)
                .collect();
            if chosen.is_empty() {
                let known: Vec<&str> = models.iter().map(|m| m.name()).collect();
                anyhow::bail!(
                    "no projection {name:?}; known: {}, or all",
                    known.join(", ")
                );
            }
            for model in chosen {
                let done = parking_projections::rebuild::rebuild(&pool, model.as_ref(), |p| {
                    draw_progress(model.name(), p)
                })
                .await?;
                eprintln!();
                println!(
                    "{}: rebuilt {} events in {:.1} s ({:.0} events/s), live at position {}",
                    model.name(),
                    done.events,
                    done.seconds,
                    done.events as f64 / done.seconds.max(1e-9),
                    done.position
                );
            }
        }
    }
    Ok(())
}

/// One line on stderr, redrawn in place: `lots [######----] 61% 12000/19500 48211 ev/s`.
fn draw_progress(name: &str, p: parking_projections::rebuild::Progress) {
    const WIDTH: usize = 30;
    let done = if p.head > 0 {
        (p.position as f64 / p.head as f64).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let filled = (done * WIDTH as f64).round() as usize;
    eprint!(
        "\r{name} [{}{}] {:>3.0}% {}/{} {:.0} ev/s ",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        done * 100.0,
        p.position,
        p.head,
        p.events_per_second
    );
}

pub async fn create_user(
    config: &Config,
    email: &str,
    password: SecretString,
    full_name: String,
    role: &str,
) -> anyhow::Result<()> {
    let email = Email::parse(email)?;
    let role = Role::parse(role).ok_or_else(|| anyhow::anyhow!("unknown role {role:?}"))?;
    let (commands, ctx) = operator(config).await?;
    let new = NewUser {
        email,
        password,
        full_name,
        role,
    };
    let id = commands.register_user(&ctx, new).await;
    recorded(&commands, &ctx, id).await
}

pub async fn set_password(
    config: &Config,
    email: &str,
    password: SecretString,
) -> anyhow::Result<()> {
    let email = Email::parse(email)?;
    let (commands, ctx) = operator(config).await?;
    let id = commands.set_password(&ctx, &email, password).await;
    recorded(&commands, &ctx, id).await
}

/// The write side on the configured database (migrated first), and a context for the
/// operator's commands.
async fn operator(config: &Config) -> anyhow::Result<(Commands, CommandContext)> {
    let pool = db::pool(&config.database_url, 2)?;
    db::migrate(&pool).await?;
    let commands = crate::startup::commands(&parking_infra::EventLog::new(pool), config)?;
    let ctx = CommandContext::system(
        format!("cli-{}", uuid::Uuid::new_v4()),
        commands.clock().now(),
    );
    Ok((commands, ctx))
}

/// Numbers what the command recorded in the log, then prints the id it returned; a refusal
/// becomes an error with its code.
async fn recorded(
    commands: &Commands,
    ctx: &CommandContext,
    id: Result<uuid::Uuid, CommandError>,
) -> anyhow::Result<()> {
    let refused = |e: CommandError| anyhow::anyhow!("{}: {e}", e.code());
    let id = id.map_err(refused)?;
    commands.settle(ctx).await.map_err(refused)?;
    println!("{id}");
    Ok(())
}
