//! Shadow traffic's comparison core: pure functions of two answers, no I/O.
//!
//! A mirrored request is answered by stable (for the user) and by the canary
//! (compared, then dropped). [`compare::compare`] compares one pair: status,
//! latency, JSON fields by path ([`diff`]) and the ranked lists
//! ([`rank`]: overlap@k and rank-biased overlap). [`report::ShadowStats`]
//! aggregates pairs into the `/status` section, with a per-field noise floor
//! ([`noise`]) learnt from stable-vs-stable pairs. The request path's mirror
//! lives in the proxy module; this module decides nothing about sockets.

pub mod compare;
pub mod diff;
pub mod json;
pub mod live;
pub mod noise;
pub mod rank;
pub mod report;

pub use compare::{compare, Answer, BodyComparison, CompareSpec, PairComparison};
pub use live::{InFlightSlot, ShadowLive};
pub use report::ShadowStats;
