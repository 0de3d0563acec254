//! What `GET /metrics` shows (Prometheus text format): per camera, frames, crops, observations,
//! the stream's state and reconnections, the lighting figures, and the latency from a frame's
//! arrival to its observations being handed to the publisher; for the publisher, what was
//! sent and what failed.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::stream::StreamState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CameraLabel {
    pub camera: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub camera: String,
    pub state: StateValue,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum StateValue {
    connecting,
    up,
    down,
    ended,
}

impl From<StreamState> for StateValue {
    fn from(state: StreamState) -> Self {
        match state {
            StreamState::Connecting => Self::connecting,
            StreamState::Up => Self::up,
            StreamState::Down => Self::down,
            StreamState::Ended => Self::ended,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: Outcome,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// Recorded (or answered "nothing to record").
    sent,
    /// Refused for good (an unknown slot, say): dropped.
    refused,
    /// Not delivered yet (the platform or broker unreachable): tried again.
    failed,
}

/// The worker's metrics.
pub struct Metrics {
    pub registry: Registry,
    pub frames: Family<CameraLabel, Counter>,
    pub crops: Family<CameraLabel, Counter>,
    pub observations: Family<CameraLabel, Counter>,
    pub reconnects: Family<CameraLabel, Counter>,
    pub stream_state: Family<StateLabel, Gauge>,
    pub luminance: Family<CameraLabel, Gauge<f64, AtomicU64>>,
    pub contrast: Family<CameraLabel, Gauge<f64, AtomicU64>>,
    pub visibility: Family<CameraLabel, Gauge<f64, AtomicU64>>,
    pub latency: Family<CameraLabel, Histogram>,
    pub published: Family<OutcomeLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("parking_vision");
        let metrics = Self {
            frames: Family::default(),
            crops: Family::default(),
            observations: Family::default(),
            reconnects: Family::default(),
            stream_state: Family::default(),
            luminance: Family::default(),
            contrast: Family::default(),
            visibility: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
            }),
            published: Family::default(),
            registry: Registry::default(),
        };
        registry.register("frames", "Frames classified", metrics.frames.clone());
        registry.register("crops", "Slot crops classified", metrics.crops.clone());
        registry.register(
            "observations",
            "Occupancy changes and heartbeats handed to the publisher",
            metrics.observations.clone(),
        );
        registry.register(
            "stream_reconnects",
            "Times a dropped stream was opened again",
            metrics.reconnects.clone(),
        );
        registry.register(
            "stream_state",
            "1 for the state each camera's stream is in",
            metrics.stream_state.clone(),
        );
        registry.register(
            "lighting_luminance",
            "Mean luminance of the camera's recent frames, 0 to 1",
            metrics.luminance.clone(),
        );
        registry.register(
            "lighting_contrast",
            "RMS contrast of the camera's recent frames, 0 to 0.5",
            metrics.contrast.clone(),
        );
        registry.register(
            "lighting_score",
            "Lighting and visibility score of the camera's recent frames, 0 to 100",
            metrics.visibility.clone(),
        );
        registry.register(
            "frame_to_observation_seconds",
            "From a frame's arrival to its observations handed to the publisher",
            metrics.latency.clone(),
        );
        registry.register(
            "published",
            "Observations the publisher delivered, by outcome",
            metrics.published.clone(),
        );
        Arc::new(Self {
            registry,
            ..metrics
        })
    }

    /// The state gauge of `camera`: 1 for `state`, 0 for the others.
    pub fn set_state(&self, camera: &str, state: StreamState) {
        for value in [
            StateValue::connecting,
            StateValue::up,
            StateValue::down,
            StateValue::ended,
        ] {
            let label = StateLabel {
                camera: camera.to_owned(),
                state: value,
            };
            self.stream_state
                .get_or_create(&label)
                .set(i64::from(value == state.into()));
        }
    }

    /// The text `/metrics` answers.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn camera(camera: &str) -> CameraLabel {
        CameraLabel {
            camera: camera.to_owned(),
        }
    }
}
