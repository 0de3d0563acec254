//! # parking-vision
//!
//! The vision worker: camera streams to slot-occupancy observations (docs/vision.md).
//!
//! - `stream`: camera streams to frames (ffmpeg for RTSP and files, MJPEG, snapshots, folders);
//! - `crop`: a slot's region of a frame, warped to the classifier's square;
//! - `model`: the classifier (candle), its shipped weights;
//! - `smooth`: hysteresis over frames, from one classification per frame to a slot's state;
//! - `camera`: one camera at work, from frames to observations;
//! - `publish`: observations to the platform (HTTP or Kafka);
//! - `server`: the HTTP port (`/metrics`, `POST /v1/detect`);
//! - `run`: the whole worker;
//! - `synth` and `train`: synthetic crops, training and evaluation.
#![forbid(unsafe_code)]

pub mod camera;
pub mod crop;
pub mod metrics;
pub mod model;
pub mod publish;
pub mod run;
pub mod server;
pub mod smooth;
pub mod stream;
pub mod synth;
pub mod train;
