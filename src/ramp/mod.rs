//! The ramp: a pure core that decides and a thin driver that waits.
//!
//! * [`window`]: per-tick counts of weight-assigned requests (the hot path's recorder).
//! * [`judge`]: the statistics (docs/judge.md): rollback e-process, gates, guards.
//! * [`state`]: the state machine (contract §4): events in, effects out.
//! * [`kpi`]: business-KPI gates (Prometheus checks): pure evaluation and the query client.
//! * [`driver`]: the thin async driver (timers, files, operator commands).
//! * [`sim`]: the `simulate` engine: the real state machine and judge on
//!   seeded simulated traffic.
//!
//! None of these modules but `driver` does I/O or reads a clock: time is passed in as
//! [`Timestamp`] (unix ms).

pub mod audit;
pub mod driver;
pub mod judge;
pub mod kpi;
pub mod sim;
pub mod state;
pub mod status;
pub mod window;

/// Unix time in milliseconds.
pub type Timestamp = u64;

pub use audit::{Action, AuditRecord, Trigger};
pub use state::{Command, Effect, Phase, RampEvent, RampState, RampStatus};
pub use window::{ArmTick, JudgeHistogram, TickCounts, WindowRecorder};
