//! Observations to the platform: over HTTP (`POST /api/v1/slots/{slot_id}/occupancy`, signed in
//! as a `service` account) or on Kafka (`parking.vision.observations`, keyed by slot), as
//! docs/events.md's "Observations topic" gives the message. Cameras' lighting scores go over
//! HTTP (`POST /api/v1/lots/{lot_id}/cameras/{camera_id}/lighting`) whenever the worker knows
//! the platform.
//!
//! Delivery is at least once and latest-wins: the publisher keeps, per slot (and per camera
//! for lighting), the newest report not yet delivered; one that cannot be delivered (the
//! platform or the broker down) is tried again every second, and a newer one replaces it. The
//! platform records only changes, never an older frame, so a repeat changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{mpsc, Mutex};
use uuid::Uuid;

use crate::camera::{CameraList, CameraSpec, LightingReport, Observation, Report};
use crate::metrics::{Metrics, Outcome, OutcomeLabel};

/// Why an observation was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth trying again (the platform or broker unreachable, a 5xx, a 429).
    #[error("not delivered yet: {0}")]
    Retry(String),
    /// Refused for good (an unknown slot, a time too far ahead): dropped.
    #[error("refused: {0}")]
    Refused(String),
}

/// The platform's HTTP API, signed in as a `service` account.
pub struct Platform {
    client: reqwest::Client,
    base: String,
    email: String,
    password: SecretString,
    token: Mutex<Option<String>>,
}

#[derive(serde::Deserialize)]
struct Token {
    access_token: String,
}

impl Platform {
    pub fn new(base: &str, email: String, password: SecretString) -> reqwest::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
            email,
            password,
            token: Mutex::new(None),
        })
    }

    async fn token(&self) -> Result<String, SendError> {
        let mut token = self.token.lock().await;
        if let Some(token) = token.as_ref() {
            return Ok(token.clone());
        }
        let answer = self
            .client
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&serde_json::json!({
                "email": self.email,
                "password": self.password.expose_secret(),
            }))
            .send()
            .await
            .map_err(|e| SendError::Retry(e.to_string()))?;
        if !answer.status().is_success() {
            // Wrong credentials too are worth retrying: an operator may be rotating them.
            return Err(SendError::Retry(format!(
                "sign-in answered {}",
                answer.status()
            )));
        }
        let issued: Token = (answer.json().await).map_err(|e| SendError::Retry(e.to_string()))?;
        *token = Some(issued.access_token.clone());
        Ok(issued.access_token)
    }

    /// Sends a request with the token, signing in again once if it has expired.
    async fn authorized(
        &self,
        request: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SendError> {
        for _ in 0..2 {
            let token = self.token().await?;
            let answer =
                (request(&token).send().await).map_err(|e| SendError::Retry(e.to_string()))?;
            if answer.status() != StatusCode::UNAUTHORIZED {
                return Ok(answer);
            }
            *self.token.lock().await = None;
        }
        Err(SendError::Retry(
            "the platform refused the service token".into(),
        ))
    }

    async fn post(&self, observation: &Observation) -> Result<(), SendError> {
        let url = format!(
            "{}/api/v1/slots/{}/occupancy",
            self.base, observation.slot_id
        );
        let body = serde_json::json!({
            "occupied": observation.occupied,
            "confidence": observation.confidence,
            "camera_id": observation.camera_id,
            "observed_at": observation.observed_at,
        });
        let answer = self
            .authorized(|token| self.client.post(&url).bearer_auth(token).json(&body))
            .await?;
        checked(answer).await
    }

    async fn post_lighting(&self, report: &LightingReport) -> Result<(), SendError> {
        let url = format!(
            "{}/api/v1/lots/{}/cameras/{}/lighting",
            self.base, report.lot_id, report.camera_id
        );
        let answer = self
            .authorized(|token| self.client.post(&url).bearer_auth(token).json(report))
            .await?;
        checked(answer).await
    }

    /// The cameras of a lot.
    pub async fn cameras(&self, lot_id: Uuid) -> Result<Vec<CameraSpec>, SendError> {
        let url = format!("{}/api/v1/lots/{lot_id}/cameras", self.base);
        let answer = (self.authorized(|token| self.client.get(&url).bearer_auth(token))).await?;
        let status = answer.status();
        if !status.is_success() {
            return Err(SendError::Retry(format!(
                "the cameras of lot {lot_id}: {status}"
            )));
        }
        let list: CameraList = (answer.json().await)
            .map_err(|e| SendError::Retry(format!("the cameras of lot {lot_id}: {e}")))?;
        Ok(list.items)
    }
}

/// Delivered; worth trying again (a 5xx, a 429); or refused for good.
async fn checked(answer: reqwest::Response) -> Result<(), SendError> {
    let status = answer.status();
    if status.is_success() {
        Ok(())
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(SendError::Retry(format!("the platform answered {status}")))
    } else {
        let text = answer.text().await.unwrap_or_default();
        Err(SendError::Refused(format!("{status}: {text}")))
    }
}

/// Where observations go.
pub enum Sink {
    Http(Arc<Platform>),
    /// The observations topic; lighting scores to the platform, if the worker knows it.
    Kafka {
        producer: FutureProducer,
        platform: Option<Arc<Platform>>,
    },
    /// Written to the log only (trying a camera out).
    Log,
}

impl Sink {
    /// A producer for the observations topic: acknowledged by every in-sync replica, without
    /// duplicates from its own retries; `config` carries the brokers and the operator's
    /// client properties.
    pub fn kafka(
        mut config: ClientConfig,
        platform: Option<Arc<Platform>>,
    ) -> rdkafka::error::KafkaResult<Self> {
        config
            .set("client.id", "parking-vision")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("allow.auto.create.topics", "false")
            .set("message.timeout.ms", "10000")
            .set("linger.ms", "5");
        Ok(Self::Kafka {
            producer: config.create()?,
            platform,
        })
    }

    pub async fn send(&self, report: &Report) -> Result<(), SendError> {
        match report {
            Report::Occupancy(observation) => self.observation(observation).await,
            Report::Lighting(lighting) => match self {
                Sink::Http(platform)
                | Sink::Kafka {
                    platform: Some(platform),
                    ..
                } => platform.post_lighting(lighting).await,
                Sink::Kafka { platform: None, .. } => Ok(()),
                Sink::Log => {
                    tracing::info!(camera = %lighting.camera_id, score = lighting.score, "lighting");
                    Ok(())
                }
            },
        }
    }

    async fn observation(&self, observation: &Observation) -> Result<(), SendError> {
        match self {
            Sink::Http(platform) => platform.post(observation).await,
            Sink::Kafka { producer, .. } => {
                let key = observation.slot_id.to_string();
                let value = serde_json::to_vec(observation).expect("an observation serializes");
                let record = FutureRecord::to(parking_infra::kafka::VISION_OBSERVATIONS)
                    .key(&key)
                    .payload(&value);
                (producer.send(record, Duration::from_secs(10)).await)
                    .map(|_| ())
                    .map_err(|(e, _)| SendError::Retry(e.to_string()))
            }
            Sink::Log => {
                tracing::info!(slot = %observation.slot_id, occupied = observation.occupied,
                    confidence = observation.confidence, "observation");
                Ok(())
            }
        }
    }
}

/// Delivers what the cameras report until every camera has stopped (the channel closed), then
/// tries what is left for at most `flush` before giving up on it.
pub async fn run(
    sink: Sink,
    mut reports: mpsc::Receiver<Report>,
    metrics: Arc<Metrics>,
    flush: Duration,
) {
    let mut pending = Pending::default();
    let count = |outcome| {
        metrics
            .published
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    };
    let mut closed = false;
    let mut deadline = None;
    loop {
        if pending.is_empty() {
            if closed {
                return;
            }
            match reports.recv().await {
                Some(report) => pending.keep(report),
                None => return,
            }
        }
        while let Ok(report) = reports.try_recv() {
            pending.keep(report);
        }
        let mut failed = false;
        while let Some(report) = pending.pop() {
            match sink.send(&report).await {
                Ok(()) => count(Outcome::sent),
                Err(SendError::Refused(reason)) => {
                    count(Outcome::refused);
                    tracing::warn!(?report, %reason, "report refused");
                }
                Err(SendError::Retry(reason)) => {
                    count(Outcome::failed);
                    tracing::warn!(%reason, "report not delivered; trying again");
                    pending.keep(report);
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            if closed && deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                tracing::error!(
                    left = pending.len(),
                    "reports not delivered before shutdown"
                );
                return;
            }
            let pause = tokio::time::sleep(Duration::from_secs(1));
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    received = reports.recv(), if !closed => match received {
                        Some(report) => pending.keep(report),
                        None => {
                            closed = true;
                            deadline = Some(tokio::time::Instant::now() + flush);
                        }
                    },
                }
            }
        }
    }
}

/// The newest undelivered report per slot and per camera.
#[derive(Default)]
struct Pending(BTreeMap<(bool, Uuid), Report>);

impl Pending {
    fn keep(&mut self, report: Report) {
        let (key, at) = match &report {
            Report::Occupancy(o) => ((false, o.slot_id), o.observed_at),
            Report::Lighting(l) => ((true, l.camera_id), l.observed_at),
        };
        let newer = self.0.get(&key).is_none_or(|held| match held {
            Report::Occupancy(o) => o.observed_at <= at,
            Report::Lighting(l) => l.observed_at <= at,
        });
        if newer {
            self.0.insert(key, report);
        }
    }

    fn pop(&mut self) -> Option<Report> {
        self.0.pop_first().map(|(_, report)| report)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn observation(slot: u128, occupied: bool, second: u32) -> Report {
        Report::Occupancy(Observation {
            observation_id: Uuid::from_u128(second.into()),
            slot_id: Uuid::from_u128(slot),
            occupied,
            confidence: 0.9,
            camera_id: None,
            observed_at: Utc.with_ymd_and_hms(2030, 1, 1, 8, 0, second).unwrap(),
        })
    }

    #[test]
    fn the_newest_report_of_each_slot_waits() {
        let mut pending = Pending::default();
        pending.keep(observation(1, true, 5));
        pending.keep(observation(1, false, 3)); // older: dropped
        pending.keep(observation(2, true, 1));
        pending.keep(observation(2, false, 2)); // newer: replaces
        assert_eq!(pending.len(), 2);
        assert_eq!(pending.pop(), Some(observation(1, true, 5)));
        assert_eq!(pending.pop(), Some(observation(2, false, 2)));
        assert!(pending.is_empty());
    }
}
