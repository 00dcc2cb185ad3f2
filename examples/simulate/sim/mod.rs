//! A virtual-time simulator of the crate's strategies and health layers.
//!
//! The crate's real `LoadBalance`, `PassiveHealth`, slow start and
//! `Failover` run against simulated backends: tower services that sleep in
//! tokio's paused clock. Seconds of traffic take milliseconds, and a seed
//! gives the same table every time. `examples/simulate/main.rs` runs every
//! scenario with every strategy; `tests/simulate.rs` holds the simulator to
//! results known from queueing theory and from the crate's own docs.

pub mod backends;
pub mod load;
pub mod model;
pub mod report;
pub mod run;
pub mod scenario;
