//! grayproxy: a gray-release (canary) reverse proxy.
//!
//! Pure core (config validation, routing decisions, the ramp's statistics and
//! state machine), thin async shell (listeners, upstream pools, timers, files).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod driver;
pub mod fleet;
pub mod grpc;
pub mod keepalive;
pub mod metrics;
pub mod persist;
pub mod proxy;
pub mod ramp;
pub mod reload;
pub mod routing;
pub mod server;
pub mod shadow;
pub mod shutdown;
pub mod status;
pub mod tls;
pub mod workers;
