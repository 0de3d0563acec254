//! One camera at work: its stream's frames cropped per slot, classified, settled by hysteresis
//! into changes, and the changes handed to the publisher as observations, with a heartbeat
//! that repeats every settled state now and then.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_domain::lot::Polygon;
use serde::Deserialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::crop::{crop, Frame};
use crate::metrics::Metrics;
use crate::model::{Classifier, INPUT};
use crate::smooth::{Hysteresis, SlotState};
use crate::stream::{self, OwnedFrame, Source, StreamOptions, StreamState};

/// A camera as the platform configures it (`GET /api/v1/lots/{lot_id}/cameras`, one item).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CameraSpec {
    pub camera_id: Uuid,
    #[serde(default)]
    pub lot_id: Option<Uuid>,
    pub stream_url: String,
    pub slots: Vec<SlotSpec>,
}

/// One slot in a camera's picture.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SlotSpec {
    pub slot_id: Uuid,
    pub polygon: Polygon,
}

/// A list of cameras, in the shape the platform answers (`{"items": [...]}`).
#[derive(Debug, Deserialize)]
pub struct CameraList {
    pub items: Vec<CameraSpec>,
}

/// What the worker reports about one slot: the observations topic's message (docs/events.md,
/// "Observations topic"), read by the platform as `infra::observations` decodes it.
pub use parking_infra::observations::ObservationMessage as Observation;

/// How well a camera sees, for the lot's `ai_safety_score`
/// (`POST /api/v1/lots/{lot_id}/cameras/{camera_id}/lighting`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LightingReport {
    #[serde(skip)]
    pub lot_id: Uuid,
    #[serde(skip)]
    pub camera_id: Uuid,
    pub score: f64,
    pub observed_at: DateTime<Utc>,
}

/// What a camera hands the publisher.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Occupancy(Observation),
    Lighting(LightingReport),
}

/// How every camera is run.
#[derive(Debug, Clone)]
pub struct CameraOptions {
    pub stream: StreamOptions,
    pub hysteresis: Hysteresis,
    /// Every settled state, and the lighting score, is sent again this often, changed or not.
    pub heartbeat: Duration,
}

/// Each slot's probability of being occupied in `frame`.
pub fn classify_frame(
    classifier: &Classifier,
    frame: &Frame<'_>,
    slots: &[SlotSpec],
) -> Result<Vec<f32>, crate::model::ModelError> {
    let crops: Vec<Vec<u8>> = slots
        .iter()
        .map(|slot| crop(frame, slot.polygon.points(), INPUT))
        .collect();
    let crops: Vec<&[u8]> = crops.iter().map(Vec::as_slice).collect();
    classifier.classify(&crops)
}

/// How well a camera sees: its frames' mean luminance and RMS contrast, smoothed over frames
/// (each new frame weighs `1/8`), and a score from 0 to 100 that is full from a luminance of
/// 0.35 and a contrast of 0.15 up (a lit lot by day), and falls in proportion to each below.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Lighting {
    pub luminance: f64,
    pub contrast: f64,
    frames: u64,
}

impl Lighting {
    pub fn observe(&mut self, frame: &Frame<'_>) {
        let (mut sum, mut squares, mut n) = (0f64, 0f64, 0f64);
        // Every 4th pixel of every 4th row is plenty for a mean and a spread.
        for y in (0..frame.height).step_by(4) {
            let row = &frame.rgb[y * frame.width * 3..(y + 1) * frame.width * 3];
            for pixel in row.chunks_exact(3).step_by(4) {
                let luma = (0.2126 * f64::from(pixel[0])
                    + 0.7152 * f64::from(pixel[1])
                    + 0.0722 * f64::from(pixel[2]))
                    / 255.0;
                sum += luma;
                squares += luma * luma;
                n += 1.0;
            }
        }
        if n == 0.0 {
            return;
        }
        let mean = sum / n;
        let contrast = (squares / n - mean * mean).max(0.0).sqrt();
        let weight = if self.frames == 0 { 1.0 } else { 1.0 / 8.0 };
        self.luminance += weight * (mean - self.luminance);
        self.contrast += weight * (contrast - self.contrast);
        self.frames += 1;
    }

    /// Whether any frame has been measured.
    pub fn measured(&self) -> bool {
        self.frames > 0
    }

    pub fn score(&self) -> f64 {
        100.0 * (self.luminance / 0.35).min(1.0) * (self.contrast / 0.15).min(1.0)
    }
}

/// Runs one camera until the returned handle is dropped.
pub fn start(
    spec: CameraSpec,
    classifier: Arc<Classifier>,
    options: CameraOptions,
    observations: mpsc::Sender<Report>,
    metrics: Arc<Metrics>,
) -> Result<stream::CancelOnDrop, stream::UnknownScheme> {
    let source = Source::of(&spec.stream_url)?;
    let name = spec.camera_id.to_string();
    let stream = stream::open(name.clone(), source, options.stream.clone());
    let task = tokio::spawn(async move {
        let mut camera = Camera {
            label: Metrics::camera(&name),
            name,
            slots: vec![Settled::default(); spec.slots.len()],
            spec: Arc::new(spec),
            classifier,
            options,
            observations,
            metrics,
            lighting: Lighting::default(),
        };
        camera.run(stream).await;
    });
    Ok(stream::CancelOnDrop(task))
}

#[derive(Debug, Clone, Default)]
struct Settled {
    state: SlotState,
    /// The confidence the settled state was reported with.
    confidence: f32,
}

struct Camera {
    name: String,
    label: crate::metrics::CameraLabel,
    spec: Arc<CameraSpec>,
    slots: Vec<Settled>,
    classifier: Arc<Classifier>,
    options: CameraOptions,
    observations: mpsc::Sender<Report>,
    metrics: Arc<Metrics>,
    lighting: Lighting,
}

impl Camera {
    async fn run(&mut self, mut stream: stream::Stream) {
        let mut heartbeat = tokio::time::interval(self.options.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let mut opened = 0;
        self.metrics.set_state(&self.name, StreamState::Connecting);
        // A stream that has ended for good (a video file) leaves the last states standing:
        // the heartbeat goes on reporting them.
        let (mut frames_open, mut status_open) = (true, true);
        loop {
            tokio::select! {
                changed = stream.frames.changed(), if frames_open => {
                    if changed.is_err() {
                        frames_open = false;
                        continue;
                    }
                    let frame = stream.frames.borrow_and_update().clone();
                    if let Some(frame) = frame {
                        self.frame(frame).await;
                    }
                }
                changed = stream.status.changed(), if status_open => {
                    if changed.is_err() {
                        status_open = false;
                        continue;
                    }
                    let status = *stream.status.borrow_and_update();
                    if opened > 0 && status.opened > opened {
                        (self.metrics.reconnects.get_or_create(&self.label))
                            .inc_by(status.opened - opened);
                    }
                    opened = status.opened;
                    self.metrics.set_state(&self.name, status.state);
                }
                _ = heartbeat.tick() => self.heartbeat().await,
            }
        }
    }

    async fn frame(&mut self, frame: Arc<OwnedFrame>) {
        let classifier = self.classifier.clone();
        let spec = self.spec.clone();
        let classified = {
            let frame = frame.clone();
            tokio::task::spawn_blocking(move || {
                classify_frame(&classifier, &frame.as_frame(), &spec.slots)
            })
            .await
        };
        let probabilities = match classified {
            Ok(Ok(p)) => p,
            Ok(Err(error)) => {
                tracing::error!(camera = %self.name, %error, "a frame could not be classified");
                return;
            }
            Err(_) => return,
        };
        self.lighting.observe(&frame.as_frame());
        self.metrics.frames.get_or_create(&self.label).inc();
        (self.metrics.crops.get_or_create(&self.label)).inc_by(probabilities.len() as u64);
        for (i, p) in probabilities.into_iter().enumerate() {
            let slot = &mut self.slots[i];
            if let Some(change) = slot.state.observe(p, &self.options.hysteresis) {
                slot.confidence = change.confidence;
                let observation = self.observation(i, change.occupied, frame.observed_at);
                tracing::debug!(camera = %self.name, slot = %observation.slot_id,
                    occupied = change.occupied, frame = frame.number, "slot changed");
                self.send(observation).await;
            }
        }
        let seconds = frame.arrived.elapsed().as_secs_f64();
        self.metrics
            .latency
            .get_or_create(&self.label)
            .observe(seconds);
        let lighting = &self.lighting;
        self.metrics
            .luminance
            .get_or_create(&self.label)
            .set(lighting.luminance);
        self.metrics
            .contrast
            .get_or_create(&self.label)
            .set(lighting.contrast);
        self.metrics
            .visibility
            .get_or_create(&self.label)
            .set(lighting.score());
    }

    fn observation(&self, slot: usize, occupied: bool, observed_at: DateTime<Utc>) -> Observation {
        Observation {
            observation_id: Uuid::new_v4(),
            slot_id: self.spec.slots[slot].slot_id,
            occupied,
            confidence: f64::from(self.slots[slot].confidence).clamp(0.0, 1.0),
            camera_id: Some(self.spec.camera_id),
            observed_at,
        }
    }

    /// Every settled state again: the platform records nothing for a state it has, and gets
    /// back one it missed. And the lighting score, for a camera of a known lot.
    async fn heartbeat(&mut self) {
        let now = Utc::now();
        for i in 0..self.slots.len() {
            if let Some(occupied) = self.slots[i].state.occupied() {
                let observation = self.observation(i, occupied, now);
                self.send(observation).await;
            }
        }
        if let (Some(lot_id), true) = (self.spec.lot_id, self.lighting.measured()) {
            let report = LightingReport {
                lot_id,
                camera_id: self.spec.camera_id,
                score: (self.lighting.score() * 10.0).round() / 10.0,
                observed_at: now,
            };
            // The publisher ends only at shutdown; nothing is left to do then.
            let _ = self.observations.send(Report::Lighting(report)).await;
        }
    }

    async fn send(&self, observation: Observation) {
        self.metrics.observations.get_or_create(&self.label).inc();
        let _ = self.observations.send(Report::Occupancy(observation)).await;
    }
}
