//! Active health checks: `health_check = { path, interval, timeout }` on an
//! upstream sends `GET path` to each of its endpoints every `interval` on a
//! fresh connection. A non-2xx answer, or none within `timeout`, takes the
//! endpoint out of rotation until a check passes again (the balancer still
//! uses it when every endpoint is out: see [`super::outlier`]).

use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::{HeaderValue, Request};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use super::outlier::EndpointHealth;
use crate::config::types::{Endpoint, HealthCheck};

/// A running checker for one endpoint; stops when dropped.
pub struct Checker {
    /// The check it runs (a reload with a different check replaces it).
    pub check: HealthCheck,
    task: AbortHandle,
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts checking `endpoint`, reporting into `health`; `None` outside a
/// tokio runtime. The task also ends when `health` is dropped.
pub fn spawn(
    endpoint: Endpoint,
    check: HealthCheck,
    health: &Arc<EndpointHealth>,
) -> Option<Checker> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let weak: Weak<EndpointHealth> = Arc::downgrade(health);
    let run = check.clone();
    let task = handle.spawn(async move {
        let mut every = tokio::time::interval(run.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let ok = check_once(&endpoint, &run).await;
            let Some(health) = weak.upgrade() else { return };
            if health.check_ok() != ok {
                let endpoint = endpoint.authority();
                if ok {
                    tracing::info!(%endpoint, path = %run.path, "health check passes again");
                } else {
                    tracing::warn!(%endpoint, path = %run.path, "health check failed; endpoint out of rotation");
                }
            }
            health.set_check_ok(ok);
        }
    });
    Some(Checker {
        check,
        task: task.abort_handle(),
    })
}

/// One check: true on a 2xx answer within `check.timeout`.
pub async fn check_once(endpoint: &Endpoint, check: &HealthCheck) -> bool {
    if endpoint.tls {
        // Plain-HTTP checker; TLS endpoints are left to passive detection.
        return true;
    }
    let exchange = async {
        let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .ok()?;
        let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .ok()?;
        let host = HeaderValue::from_str(&endpoint.authority()).ok()?;
        let req = Request::get(check.path.as_str())
            .header(HOST, host)
            .header(USER_AGENT, "grayproxy-health-check")
            .body(Empty::new())
            .ok()?;
        let send = sender.send_request(req);
        tokio::pin!(conn);
        // The connection is driven here, not spawned, so a hung upstream
        // cannot leave a task behind: everything drops with this future.
        let response = tokio::select! {
            r = send => r.ok()?,
            _ = &mut conn => return None,
        };
        Some(response.status().is_success())
    };
    matches!(
        tokio::time::timeout(check.timeout, exchange).await,
        Ok(Some(true))
    )
}
