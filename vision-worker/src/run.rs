//! `parking-vision run`: the cameras, the publisher and the HTTP port, until shutdown.
//!
//! The cameras come from the platform (`GET /api/v1/lots/{lot_id}/cameras` for each configured
//! lot) or from a local file of the same shape, read again every `refresh`: a camera added is
//! started, one removed is stopped, one changed is started over; the others run on untouched.
//! A source that cannot be read keeps the cameras running as they are.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::camera::{self, CameraList, CameraOptions, CameraSpec, Report};
use crate::metrics::Metrics;
use crate::model::Classifier;
use crate::publish::{self, Platform, Sink};
use crate::server::{self, Shared};
use crate::stream::CancelOnDrop;

/// Where the cameras' configuration comes from.
pub enum Cameras {
    /// A file in the shape of the platform's answer: `{"items": [{camera_id, stream_url,
    /// slots: [{slot_id, polygon}]}]}`.
    File(PathBuf),
    /// The platform, for these lots.
    Platform {
        platform: Arc<Platform>,
        lots: Vec<Uuid>,
    },
}

impl Cameras {
    async fn load(&self) -> anyhow::Result<Vec<CameraSpec>> {
        match self {
            Cameras::File(path) => {
                let text = tokio::fs::read_to_string(path).await?;
                let list: CameraList = serde_json::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                Ok(list.items)
            }
            Cameras::Platform { platform, lots } => {
                let mut all = Vec::new();
                for lot in lots {
                    all.extend(platform.cameras(*lot).await?);
                }
                Ok(all)
            }
        }
    }
}

/// How the worker runs.
pub struct RunOptions {
    pub cameras: Cameras,
    pub refresh: Duration,
    pub camera: CameraOptions,
    pub listen: SocketAddr,
    /// At shutdown, how long undelivered observations are still tried.
    pub flush: Duration,
}

/// Runs until `shutdown` completes.
pub async fn run(
    options: RunOptions,
    classifier: Classifier,
    sink: Sink,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let shared = web::Data::new(Shared {
        classifier: Arc::new(classifier),
        metrics: metrics.clone(),
        cameras: RwLock::new(HashMap::new()),
    });
    let server = {
        let shared = shared.clone();
        HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .configure(server::routes)
        })
        .workers(1)
        .disable_signals()
        .bind(options.listen)?
        .run()
    };
    let server_handle = server.handle();
    let server_task = tokio::spawn(server);
    tracing::info!(listen = %options.listen, "parking-vision listening");

    let (observations, received) = mpsc::channel(4096);
    let publisher = tokio::spawn(publish::run(sink, received, metrics.clone(), options.flush));
    let mut running: HashMap<Uuid, (CameraSpec, CancelOnDrop)> = HashMap::new();
    tokio::pin!(shutdown);
    loop {
        match options.cameras.load().await {
            Ok(specs) => reconcile(
                &mut running,
                specs,
                &shared,
                &options.camera,
                &observations,
                &metrics,
            ),
            Err(error) => {
                tracing::warn!(%error, "the cameras' configuration could not be read; the cameras run on as they were")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(options.refresh) => {}
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("parking-vision stopping");
    running.clear();
    drop(observations);
    let _ = publisher.await;
    server_handle.stop(true).await;
    let _ = server_task.await;
    Ok(())
}

fn reconcile(
    running: &mut HashMap<Uuid, (CameraSpec, CancelOnDrop)>,
    specs: Vec<CameraSpec>,
    shared: &Shared,
    options: &CameraOptions,
    observations: &mpsc::Sender<Report>,
    metrics: &Arc<Metrics>,
) {
    let wanted: HashMap<Uuid, CameraSpec> = specs.into_iter().map(|s| (s.camera_id, s)).collect();
    running.retain(|id, (spec, _)| {
        let keep = wanted.get(id) == Some(spec);
        if !keep {
            tracing::info!(camera = %id, "camera stopped");
        }
        keep
    });
    for (id, spec) in &wanted {
        if running.contains_key(id) {
            continue;
        }
        let started = camera::start(
            spec.clone(),
            shared.classifier.clone(),
            options.clone(),
            observations.clone(),
            metrics.clone(),
        );
        match started {
            Ok(task) => {
                tracing::info!(camera = %id, slots = spec.slots.len(), "camera started");
                running.insert(*id, (spec.clone(), task));
            }
            Err(error) => tracing::error!(camera = %id, %error, "camera not started"),
        }
    }
    *shared.cameras.write().expect("cameras lock") = wanted;
}
