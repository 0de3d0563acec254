//! # parking-vision
//!
//! The vision worker: camera streams to slot-occupancy observations. Built so far: cropping a
//! slot's region of a frame to the classifier's square (`crop`), and synthetic slot crops to
//! train and test the classifier on (`synth`). The streams, the classifier, smoothing and
//! publishing come with the rest of the worker; the binary says so until then.
#![forbid(unsafe_code)]

pub mod crop;
pub mod synth;
