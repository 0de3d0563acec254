//! # parking-vision (placeholder)
//!
//! The vision worker will read camera streams, crop each slot's region, classify it
//! occupied/free with a small candle CNN, smooth over frames and publish occupancy
//! observations. It is not built yet: this binary only says so, so that the workspace already
//! has the crate the architecture names and its place in the dependency graph.
#![forbid(unsafe_code)]

fn main() {
    eprintln!(
        "parking-vision: the vision worker is not implemented yet (see docs/architecture.md)"
    );
    std::process::exit(2);
}
