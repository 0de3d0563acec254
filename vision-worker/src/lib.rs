//! # parking-vision
//!
//! The vision worker: camera streams to slot-occupancy observations. Built so far: cropping a
//! slot's region of a frame to the classifier's square (`crop`), synthetic slot crops to train
//! and test the classifier on (`synth`), and the hysteresis that turns one classification per
//! frame into a slot's settled state (`smooth`). The streams, the classifier and publishing
//! come with the rest of the worker; the binary says so until then.
#![forbid(unsafe_code)]

pub mod crop;
pub mod smooth;
pub mod synth;
