//! [`RampHandle`]: how the admin API (or anything else) sends operator
//! commands to the running ramp driver. Depends only on the command types,
//! so the admin API does not depend on the driver.

use tokio::sync::{mpsc, oneshot};

pub use crate::ramp::command::{command_name, parse_command, Command, CommandError};
use crate::ramp::state::RampStatus;

/// Requests the handle can queue before senders wait.
const QUEUE: usize = 64;

/// Where the answer to a command goes.
pub(crate) type Reply = oneshot::Sender<Result<RampStatus, CommandError>>;

/// One operator command on its way to the driver.
#[derive(Debug)]
pub(crate) struct CommandRequest {
    /// The route's name.
    pub(crate) route: String,
    /// What to do.
    pub(crate) command: Command,
    /// Where the answer goes.
    pub(crate) reply: Reply,
}

/// Sends operator commands to the running ramps. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RampHandle {
    tx: mpsc::Sender<CommandRequest>,
}

impl RampHandle {
    /// A handle and the receiving end the driver reads commands from.
    pub(crate) fn channel() -> (RampHandle, mpsc::Receiver<CommandRequest>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (RampHandle { tx }, rx)
    }

    /// Applies `command` to `route`'s ramp; returns the ramp's new status.
    pub async fn command(&self, route: &str, command: Command) -> Result<RampStatus, CommandError> {
        let (reply, answer) = oneshot::channel();
        let request = CommandRequest {
            route: route.to_string(),
            command,
            reply,
        };
        self.tx
            .send(request)
            .await
            .map_err(|_| CommandError::Stopped)?;
        answer.await.map_err(|_| CommandError::Stopped)?
    }
}
