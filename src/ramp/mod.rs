//! The ramp: a pure core that decides and a thin driver that waits. The
//! design (phases, audit records, files, KPI gates) is in `docs/ramp.md`,
//! the statistics in `docs/judge.md`.
//!
//! * [`window`]: per-tick counts of weight-assigned requests (the hot path's recorder).
//! * [`judge`]: the statistics (docs/judge.md): rollback e-process, gates, guards.
//! * [`state`]: the state machine: events in, effects out. Every decision
//!   of the ramp is made there.
//! * [`command`]: operator commands and why they can be refused.
//! * [`kpi`]: business-KPI gates (Prometheus checks): pure evaluation and the query client.
//! * [`handle`]: [`RampHandle`], how the admin API reaches the driver.
//! * [`driver`]: the thin async driver (timers, files, operator commands).
//! * [`sim`]: the `simulate` engine: the real state machine and judge on
//!   seeded simulated traffic.
//!
//! None of these modules but `driver`, `handle` and `kpi`'s client do I/O or
//! read a clock: time is passed in as [`Timestamp`] (unix ms).

pub mod audit;
pub mod command;
pub mod driver;
pub mod handle;
pub mod judge;
pub mod kpi;
pub mod sim;
pub mod state;
pub mod status;
pub mod window;

/// Unix time in milliseconds.
pub type Timestamp = u64;

pub use audit::{Action, AuditRecord, Trigger};
pub use command::{Command, CommandError};
pub use handle::RampHandle;
pub use state::{Effect, Phase, RampEvent, RampState, RampStatus};
pub use window::{ArmTick, JudgeHistogram, TickCounts, WindowRecorder};
