//! The `parking-api` command line: serve, migrate, and administration.

use clap::{Parser, Subcommand};
use parking_commands::{CommandContext, CommandError, Commands, NewUser};
use parking_domain::user::Email;
use parking_domain::Role;
use parking_infra::personal::DataKeys;
use parking_infra::{audit, db, history, Config, EventLog};
use secrecy::SecretString;
use std::io::Write;

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
    /// The event history: export it, verify its integrity (docs/audit.md).
    #[command(subcommand)]
    History(HistoryCommand),
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

#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// Write the log as NDJSON, one event a line in the Kafka contract's envelope (the same
    /// secrets left out), in global order, up to the head as it is when the export starts.
    Export {
        /// Only events after this global position.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Only events at or before this global position.
        #[arg(long)]
        up_to: Option<i64>,
        /// Only this aggregate type's events.
        #[arg(long)]
        aggregate_type: Option<String>,
        /// Only events recorded at or after this instant (RFC 3339).
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events recorded before this instant (RFC 3339).
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        /// The file to write; standard output when absent.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Walk the hash chain to the head and report the first broken link; exits with status 1
    /// if there is one. Resumes from the latest signed checkpoint unless `--full`.
    Verify {
        #[arg(long)]
        full: bool,
    },
}

/// The log of the configured database, its personal data revealed with the configured master
/// key (checked first).
async fn event_log(pool: sqlx::PgPool, config: &Config) -> anyhow::Result<EventLog> {
    let keys = DataKeys::new(pool.clone(), config.data_key.clone());
    keys.ready().await?;
    Ok(EventLog::new(pool, keys))
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
    let log = event_log(pool, config).await?;
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
            let log = event_log(pool.clone(), config).await?;
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
                let done = parking_projections::rebuild::rebuild(&log, model.as_ref(), |p| {
                    draw_progress(model.name(), p)
                })
                .await?;
                end_progress();
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

fn draw_progress(name: &str, p: parking_projections::rebuild::Progress) {
    progress_line(name, p.position, p.head, p.events_per_second);
}

/// Progress on stderr: on a terminal, one line redrawn in place
/// (`lots [######----] 61% 12000/19500 48211 ev/s`); otherwise (a log), a plain line once done.
fn progress_line(name: &str, done: i64, total: i64, per_second: f64) {
    const WIDTH: usize = 30;
    let share = if total > 0 {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    } else {
        1.0
    };
    if !on_terminal() {
        if share >= 1.0 {
            eprintln!("{name}: {done}/{total} {per_second:.0} ev/s");
        }
        return;
    }
    let filled = (share * WIDTH as f64).round() as usize;
    eprint!(
        "\r{name} [{}{}] {:>3.0}% {done}/{total} {per_second:.0} ev/s ",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        share * 100.0,
    );
}

/// Ends a progress line drawn in place.
fn end_progress() {
    if on_terminal() {
        eprintln!();
    }
}

fn on_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

pub async fn history(config: &Config, command: HistoryCommand) -> anyhow::Result<()> {
    let pool = db::pool(&config.database_url, 3)?;
    db::migrate(&pool).await?;
    match command {
        HistoryCommand::Export {
            after,
            up_to,
            aggregate_type,
            from,
            to,
            output,
        } => {
            if let Some(kind) = aggregate_type.as_deref() {
                history::aggregate_type(kind)?;
            }
            let head = parking_infra::log::recorded_head(&pool).await?;
            let filter = history::LogFilter {
                after,
                up_to: Some(up_to.map_or(head, |p| p.min(head))),
                aggregate_type,
                from,
                to,
            };
            let out: Box<dyn std::io::Write> = match &output {
                Some(path) => Box::new(std::fs::File::create(path)?),
                None => Box::new(std::io::stdout().lock()),
            };
            let written = export(&event_log(pool.clone(), config).await?, filter, out).await?;
            eprintln!("exported {written} events");
        }
        HistoryCommand::Verify { full } => {
            let started = std::time::Instant::now();
            let report = audit::verify(&pool, config.data_key.as_ref(), full, |p| {
                let rate = p.checked as f64 / started.elapsed().as_secs_f64().max(1e-9);
                progress_line("verify", p.checked, p.total, rate);
            })
            .await?;
            end_progress();
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.intact {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

/// Writes the events `filter` selects to `out`, one envelope a line; returns how many.
async fn export(
    log: &EventLog,
    mut filter: history::LogFilter,
    out: Box<dyn std::io::Write>,
) -> anyhow::Result<u64> {
    const BATCH: i64 = 5_000;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    let (first, last) = (filter.after, filter.up_to.unwrap_or(filter.after));
    let started = std::time::Instant::now();
    let mut written = 0u64;
    loop {
        let batch = history::read_filtered(log, &filter, BATCH).await?;
        let Some(end) = batch.last().map(|e| e.global_position) else {
            break;
        };
        for event in &batch {
            out.write_all(&parking_infra::kafka::envelope_text(event))?;
            out.write_all(b"\n")?;
        }
        written += batch.len() as u64;
        filter.after = end;
        let rate = written as f64 / started.elapsed().as_secs_f64().max(1e-9);
        progress_line("export", end - first, last - first, rate);
    }
    out.flush()?;
    end_progress();
    Ok(written)
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
    let commands = crate::startup::commands(&event_log(pool, config).await?, config)?;
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
