//! One module per workload, each: parameters (clap), set-up, a bounded
//! measured phase, figures into the report.

pub mod initial_sync;
pub mod join;
pub mod latency;
pub mod media;
pub mod messages;
pub mod send;
