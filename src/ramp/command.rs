//! Operator commands (`pause`, `resume`, `promote`, `rollback`): the
//! command type the state machine reacts to, its URL/CLI names, and why a
//! command can be refused. Plain data: the pure state machine and the admin
//! API both depend on this, not on the driver.

use serde::{Deserialize, Serialize};

/// An operator command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Freeze the weight.
    Pause,
    /// Continue a paused ramp, or start a new one after a rollback.
    Resume,
    /// Jump to 100 %.
    Promote,
    /// Go to 0 %.
    Rollback,
}

/// Why an operator command was not carried out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// No route of that name in the live config.
    #[error("no route named `{0}`")]
    UnknownRoute(String),
    /// The route has no `[routes.ramp]`.
    #[error("route `{0}` has no ramp: add [routes.ramp] to its config to control it")]
    NoRamp(String),
    /// The command does not apply in the ramp's current state.
    #[error("cannot {command} route `{route}`: its ramp is {state}")]
    NotApplicable {
        /// The route.
        route: String,
        /// `pause`, `resume`, `promote` or `rollback`.
        command: &'static str,
        /// The ramp's state.
        state: &'static str,
    },
    /// The new state could not be persisted, so the command (which would
    /// raise the canary's weight) was not applied.
    #[error("{0}")]
    Persist(String),
    /// The driver is not running (not started yet, or shutting down).
    #[error("the ramp driver is not running")]
    Stopped,
}

/// The name of a command as used in URLs and the CLI.
pub fn command_name(c: Command) -> &'static str {
    match c {
        Command::Pause => "pause",
        Command::Resume => "resume",
        Command::Promote => "promote",
        Command::Rollback => "rollback",
    }
}

/// Parses `pause|resume|promote|rollback`.
pub fn parse_command(s: &str) -> Option<Command> {
    match s {
        "pause" => Some(Command::Pause),
        "resume" => Some(Command::Resume),
        "promote" => Some(Command::Promote),
        "rollback" => Some(Command::Rollback),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_round_trip() {
        for c in [
            Command::Pause,
            Command::Resume,
            Command::Promote,
            Command::Rollback,
        ] {
            assert_eq!(parse_command(command_name(c)), Some(c));
        }
        assert_eq!(parse_command("explain"), None);
    }
}
