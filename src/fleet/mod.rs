//! Fleet mode: many replicas, one ramp per route, coordinated through etcd.
//!
//! Pure parts decide (`keys`, `counts`, `members`, `health`); `store` is the
//! thin etcd shell; `session` keeps the lease, the election and the member
//! list alive and publishes a [`session::FleetView`].

pub mod counts;
pub mod health;
pub mod keys;
pub mod link;
pub mod members;
pub mod runner;
pub mod session;
pub mod store;
