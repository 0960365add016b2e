//! Active health checks: `health_check = { path, interval, timeout }` on an
//! upstream sends `GET path` to each of its endpoints every `interval` on a
//! fresh connection. A non-2xx answer, or none within `timeout`, takes the
//! endpoint out of rotation until a check passes again (the balancer still
//! uses it when every endpoint is out: see [`super::outlier`]). With
//! `grpc_service` the check is the standard gRPC health check over h2.
//! `https://` endpoints are checked over TLS, with their upstream's CA.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::{HeaderValue, Request};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

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

/// Starts checking `endpoint` (over TLS with `tls` for `https://`),
/// reporting into `health`; `None` outside a tokio runtime. The task also
/// ends when `health` is dropped.
pub fn spawn(
    endpoint: Endpoint,
    check: HealthCheck,
    tls: Option<TlsConnector>,
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
            let ok = check_once(&endpoint, &run, tls.as_ref()).await;
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

/// One check: true on a 2xx answer (or `SERVING` for a gRPC check) within
/// `check.timeout`. An `https://` endpoint is checked over TLS with `tls`,
/// the connector its upstream uses (ALPN `h2` for h2 upstreams); without one
/// (its CA file could not be read) the check fails, as its calls would.
pub async fn check_once(
    endpoint: &Endpoint,
    check: &HealthCheck,
    tls: Option<&TlsConnector>,
) -> bool {
    let exchange = async {
        let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .ok()?;
        if !endpoint.tls {
            return exchange(TokioIo::new(stream), endpoint, check).await;
        }
        let name = ServerName::try_from(endpoint.host.clone()).ok()?;
        let stream = tls?.connect(name, stream).await.ok()?;
        exchange(TokioIo::new(stream), endpoint, check).await
    };
    matches!(
        tokio::time::timeout(check.timeout, exchange).await,
        Ok(Some(true))
    )
}

/// The check's exchange on an open connection: `Some(passed)`, `None` when
/// the connection failed.
async fn exchange<I>(io: I, endpoint: &Endpoint, check: &HealthCheck) -> Option<bool>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    if let Some(service) = &check.grpc_service {
        return grpc_check(io, endpoint, service).await;
    }
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(io).await.ok()?;
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
}

/// The standard gRPC health check (`grpc.health.v1.Health/Check`) over h2
/// (h2c, or TLS with ALPN `h2`): `Some(true)` when the answer's `status` is
/// `SERVING` (1).
async fn grpc_check<I>(io: I, endpoint: &Endpoint, service: &str) -> Option<bool>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt, Full};
    use hyper::client::conn::http2;
    use hyper_util::rt::TokioExecutor;
    let (mut sender, conn) = http2::handshake::<_, _, Full<Bytes>>(TokioExecutor::new(), io)
        .await
        .ok()?;
    let scheme = if endpoint.tls { "https" } else { "http" };
    let uri = format!(
        "{scheme}://{}{}",
        endpoint.authority(),
        crate::grpc::HEALTH_CHECK_PATH
    );
    let req = Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(USER_AGENT, "grayproxy-health-check")
        .body(Full::new(health_request(service)))
        .ok()?;
    tokio::pin!(conn);
    let exchange = async {
        let response = sender.send_request(req).await.ok()?;
        let (parts, body) = response.into_parts();
        let collected = body.collect().await.ok()?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let code = crate::grpc::GrpcCode::in_headers(&trailers)
            .or_else(|| crate::grpc::GrpcCode::in_headers(&parts.headers));
        if parts.status != http::StatusCode::OK || code != Some(crate::grpc::GrpcCode::Ok) {
            return Some(false);
        }
        Some(serving(&collected.to_bytes()))
    };
    tokio::select! {
        r = exchange => r,
        _ = &mut conn => None,
    }
}

/// A framed `HealthCheckRequest { service = 1 }`.
fn health_request(service: &str) -> Bytes {
    let mut msg = Vec::with_capacity(service.len() + 8);
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        let mut len = service.len();
        while len >= 0x80 {
            msg.push((len as u8) | 0x80);
            len >>= 7;
        }
        msg.push(len as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(msg.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    Bytes::from(framed)
}

/// Whether a framed `HealthCheckResponse` says `status = SERVING` (field
/// 1, varint 1). The message is tiny: one field, a one-byte varint.
fn serving(framed: &[u8]) -> bool {
    framed.get(5..) == Some(&[0x08, 0x01][..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_messages() {
        assert_eq!(&health_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &health_request("reco")[..],
            &[0, 0, 0, 0, 6, 0x0a, 4, b'r', b'e', b'c', b'o']
        );
        assert!(serving(&[0, 0, 0, 0, 2, 0x08, 0x01]));
        assert!(!serving(&[0, 0, 0, 0, 2, 0x08, 0x02]));
        assert!(!serving(&[0, 0, 0, 0, 0]));
    }
}
