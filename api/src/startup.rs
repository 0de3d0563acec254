//! Builds the application from configuration: the same function serves `main` and the tests.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{middleware, web, App, HttpResponse, HttpServer};
use parking_commands::{Commands, Settings};
use parking_domain::booking::BookingPolicy;
use parking_infra::append::AppendTarget;
use parking_infra::personal::DataKeys;
use parking_infra::relay::Relay;
use parking_infra::stripe::StripeClient;
use parking_infra::{db, Config, EventLog, SystemClock};
use parking_projections::lots::NearbyIndex;
use parking_projections::{KafkaSource, Projections, StoreTail};
use sqlx::PgPool;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::Tokens;
use crate::error;
use crate::live::Hub;
use crate::metrics::Metrics;
use crate::openapi::ApiDoc;
use crate::routes;
use crate::state::AppState;
use crate::throttle::LoginThrottle;

pub struct Application {
    port: u16,
    server: Server,
    log: EventLog,
    hub: Arc<Hub>,
}

/// The write side, appending to `log`; the booking desk pipelines its appends on a connection
/// of its own to `DATABASE_URL` (opened when it first books).
pub fn commands(log: &EventLog, config: &Config) -> anyhow::Result<Commands> {
    let settings = Settings {
        bcrypt_cost: config.bcrypt_cost,
        booking_policy: BookingPolicy {
            payment_hold: config.booking_hold,
            check_in_grace: config.check_in_grace,
            billing_increment: config.billing_increment,
            ..BookingPolicy::default()
        },
    };
    let desk_appends = AppendTarget::parse(&config.database_url)?;
    let commands = Commands::new(
        log.clone(),
        Arc::new(SystemClock),
        settings,
        Some(desk_appends),
    );
    Ok(match &config.stripe {
        Some(stripe) => commands.with_payments(StripeClient::new(stripe)),
        None => commands,
    })
}

impl Application {
    /// Connects, applies pending migrations, binds `config.bind_addr` (port 0 picks a free one).
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let pool = db::pool(&config.database_url, config.database_max_connections)?;
        db::migrate(&pool).await?;
        let nearby = if config.nearby_postgis {
            parking_projections::lots::enable_postgis(&pool)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("NEARBY_SEARCH=postgis, but PostGIS cannot be enabled: {e}")
                })?;
            NearbyIndex::PostGis
        } else {
            NearbyIndex::Box
        };
        let mut keys = DataKeys::new(pool.clone(), config.data_key.clone());
        if !config.seal_personal_data {
            tracing::warn!("personal data is recorded in clear (a benchmark's baseline)");
            keys = keys.unsealed();
        }
        // A wrong DATA_KEY_FILE stops the start here, not at the first read of personal data.
        keys.ready().await?;
        tokio::spawn(keys.clone().watch());
        let log = EventLog::new(pool.clone(), keys);
        tokio::spawn(log.clone().watch());
        let projections = Projections::new(pool.clone(), parking_projections::all());
        let source = match &config.kafka {
            Some(kafka) if kafka.projections_from_kafka => {
                tracing::info!("projections read the log from Kafka (PROJECTION_SOURCE=kafka)");
                KafkaSource::shared(log.clone(), kafka).await?
            }
            _ => StoreTail::shared(log.clone()),
        };
        projections.start(source);
        match &config.kafka {
            Some(kafka) if kafka.relay_in_server => {
                tokio::spawn(Relay::new(log.clone(), kafka.clone()).run());
            }
            Some(_) => tracing::info!("RELAY_ENABLED=false: run `parking-api relay` separately"),
            None => tracing::info!("KAFKA_BROKERS unset: events are not published to Kafka"),
        }
        let metrics = Arc::new(Metrics::default());
        // The live hub starts at the log's head: what came before is for HTTP to tell.
        let head = log.recorded_head().await?;
        let hub = Arc::new(Hub::new(config.live.clone(), metrics.hub(), head));
        let state = Arc::new(AppState {
            commands: commands(&log, config)?,
            projections,
            log: log.clone(),
            read_wait: config.read_wait,
            tokens: Arc::new(Tokens::new(config.jwt_secret.as_ref(), config.jwt_ttl)),
            login_throttle: LoginThrottle::new(
                config.login_max_failures,
                config.login_failure_window,
            ),
            metrics,
            pool,
            stripe_webhook_secret: config.stripe.as_ref().map(|s| s.webhook_secret.clone()),
            nearby,
            hub: hub.clone(),
            feed: config.feed.clone(),
            feed_cache: Default::default(),
            data_key: config.data_key.clone(),
        });
        if config.stripe.is_none() {
            tracing::warn!("STRIPE_SECRET_KEY unset: payments answer 503 payments_unavailable");
        }
        tokio::spawn(purge_idempotency_keys(state.pool.clone()));
        tokio::spawn(crate::sweep::run(state.clone()));
        tokio::spawn(crate::live::run(hub.clone(), state.clone(), head));
        match &config.kafka {
            Some(kafka) if kafka.observations_consumer => {
                tokio::spawn(crate::observations::run(state.clone(), kafka.clone()));
            }
            Some(_) => {
                tracing::info!("OBSERVATIONS_FROM_KAFKA=false: observations come over HTTP only")
            }
            None => {}
        }
        let listener = TcpListener::bind(config.bind_addr)?;
        if let Some(bytes) = config.live.send_buffer {
            // Accepted connections inherit it.
            socket2::SockRef::from(&listener).set_send_buffer_size(bytes)?;
        }
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(move || {
            let (app, openapi) = App::new()
                .into_utoipa_app()
                .openapi(ApiDoc::openapi())
                .app_data(web::Data::new(state.clone()))
                // What the middlewares and extractors need of it, on their own, so that
                // they do not depend on the whole state.
                .app_data(web::Data::from(state.tokens.clone()))
                .app_data(web::Data::from(state.metrics.clone()))
                .app_data(web::Data::new(state.pool.clone()))
                .app_data(error::json_config())
                .app_data(error::query_config())
                .app_data(error::path_config())
                .service(routes::health::health)
                .service(routes::health::ready)
                .service(routes::metrics::metrics)
                .service(routes::live::connect)
                .service(routes::api_v1())
                .split_for_parts();
            // The document at /openapi.json, and the API reference page at /docs (Swagger UI, its
            // assets compiled into the binary: no CDN).
            let docs = SwaggerUi::new("/docs/{_:.*}")
                .url("/openapi.json", crate::openapi::finish(openapi));
            app.service(docs)
                .route("/docs", web::get().to(docs_redirect))
                .default_service(web::to(error::route_not_found))
                .wrap(error::problem_json_everywhere())
                .wrap(middleware::from_fn(crate::consistency::middleware))
                .wrap(middleware::from_fn(crate::idempotency::middleware))
                .wrap(middleware::from_fn(crate::request_id::middleware))
        })
        .listen(listener)?
        // Signals are ours (`run_until_stopped`): WebSockets are closed before the server
        // stops, or its graceful stop would wait for them.
        .disable_signals()
        .run();
        tracing::info!(port, "listening");
        Ok(Self {
            port,
            server,
            log,
            hub,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's event log, whose head its projectors (and its relay) follow.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// The live hub behind `GET /ws`.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Serves until SIGINT or SIGTERM, then stops gracefully: WebSocket clients get a close
    /// frame (1001), requests under way finish (up to 30 s), and the process exits.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let hub = self.hub.clone();
        tokio::spawn(async move {
            stop_signal().await;
            tracing::info!("stopping: closing WebSockets, finishing requests");
            hub.shut_down();
            handle.stop(true).await;
        });
        self.server.await
    }
}

/// SIGINT or SIGTERM (what an orchestrator sends to stop a container).
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// How long an idempotency key is remembered.
const IDEMPOTENCY_KEY_LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Forgets expired idempotency keys, every ten minutes, for the life of the server.
async fn purge_idempotency_keys(pool: PgPool) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        every.tick().await;
        match parking_infra::idempotency::purge_older_than(&pool, IDEMPOTENCY_KEY_LIFETIME).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired idempotency keys purged"),
            Err(e) => tracing::warn!(error = %e, "could not purge idempotency keys"),
        }
    }
}

async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header(("Location", "/docs/"))
        .finish()
}
