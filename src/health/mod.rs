//! Health: active probes, passive outlier detection, and the events they send.
//!
//! Two views of a backend's health, each usable alone:
//!
//! - [`ActiveHealthCheck`] probes every backend in the background (HTTP or
//!   TCP) and sets its [`Verdict`]; a backend is unhealthy after
//!   `unhealthy-after` failed probes in a row and healthy again after
//!   `healthy-after` passing ones.
//! - [`PassiveHealthLayer`] watches real responses under the balancer and
//!   applies [`OutlierDetection`]: immediate ejection after consecutive
//!   failures (with doubling back-off and automatic return), a cap on how
//!   much of the set may be ejected, and ramp-down of a backend's share as
//!   its success rate falls.
//!
//! Both bring a recovered backend back through the set's slow start
//! ([`BackendSet::with_slow_start`](crate::BackendSet::with_slow_start)), and
//! every transition is a [`HealthEvent`] on
//! [`BackendSet::events`](crate::BackendSet::events). When no backend is
//! eligible, the balancer answers 503, or with panic routing on
//! ([`LoadBalanceLayer::panic_routing`](crate::LoadBalanceLayer::panic_routing)),
//! sends to every member regardless of health.

mod active;
mod classify;
mod ejection;
mod outlier;
mod overload;
mod passive;
mod passive_body;
mod probe;
mod ramp_down;
mod recorder;

pub use crate::backend::{HealthEvent, HealthEventKind, Verdict};
pub use active::{ActiveHealthCheck, HealthChecks};
pub use outlier::OutlierDetection;
pub use passive::{PassiveHealth, PassiveHealthLayer, ResponseFuture};
pub use passive_body::ResponseBody;
pub use probe::Probe;
