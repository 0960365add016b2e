//! The ramp's pure core: everything that decides what a ramp does. The
//! async shell that waits (timers, files, commands) is the `driver` module. The
//! design (phases, audit records, files, KPI gates) is in `docs/ramp.md`,
//! the statistics in `docs/judge.md`.
//!
//! * [`window`]: per-tick counts of weight-assigned requests (the hot path's recorder).
//! * [`judge`]: the statistics (docs/judge.md): rollback e-process, gates, guards.
//! * [`state`]: the state machine: events in, effects out. Every decision
//!   of the ramp is made there.
//! * [`history`]: the bounded per-tick history the web UI draws.
//! * [`segments`]: per-segment guardrails: which segment a request is in,
//!   its counters, and how per-segment rollback evidence combines.
//! * [`command`]: operator commands and why they can be refused.
//! * [`kpi`]: business-KPI gates (Prometheus checks): pure evaluation and the query client.
//! * [`sim`]: the `simulate` engine: the real state machine and judge on
//!   seeded simulated traffic.
//!
//! None of these modules but `kpi`'s query client does I/O or reads a
//! clock: time is passed in as [`Timestamp`] (unix ms).

pub mod audit;
pub mod command;
pub mod history;
pub mod judge;
pub mod kpi;
pub mod segments;
pub mod sim;
pub mod state;
pub mod status;
pub mod window;

/// Unix time in milliseconds.
pub type Timestamp = u64;

pub use audit::{Action, AuditRecord, Trigger};
pub use command::{Command, CommandError};
pub use state::{Effect, Phase, RampEvent, RampState, RampStatus};
pub use window::{ArmTick, JudgeHistogram, TickCounts, WindowRecorder};
