//! The client side of the tests: a pooled HTTP/1.1 (or h2c) client, request
//! bodies (empty, whole, chunked) and [`Answer`], a response read to the end.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::metrics::Metrics;

/// The error type of test request bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of test requests.
pub type Body = BoxBody<Bytes, BoxError>;
/// A pooled HTTP client.
pub type HttpClient = Client<HttpConnector, Body>;

/// An HTTP/1.1 client with a keep-alive pool.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2c_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// An empty request body.
pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A complete request body (sent with Content-Length).
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// An answer read to the end.
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Answer {
    /// The `x-grayproxy-arm` header ("" when absent).
    pub fn arm(&self) -> &str {
        self.header("x-grayproxy-arm")
    }

    /// A header as text ("" when absent; use `headers.contains_key` to tell
    /// an absent header from an empty one).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// Sends a request and reads the whole answer.
pub async fn send(client: &HttpClient, req: Request<Body>) -> Result<Answer, BoxError> {
    let response = client.request(req).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// `METHOD url` with extra headers and an optional text body (sent as
/// `text/plain` with Content-Length); `Err` on a transport error.
pub async fn fetch(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Answer, BoxError> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = match body {
        Some(text) => {
            req = req.header("content-type", "text/plain");
            full(text.to_owned())
        }
        None => empty(),
    };
    send(client, req.body(body)?).await
}

/// `GET url` with extra headers; panics on transport errors.
pub async fn get(client: &HttpClient, url: &str, headers: &[(&str, &str)]) -> Answer {
    fetch(client, Method::GET, url, headers, None)
        .await
        .unwrap_or_else(|e| panic!("GET {url} failed: {e:?}"))
}

/// `GET http://ADMIN{path}`, which must answer 200 with JSON.
pub async fn admin_json(admin: SocketAddr, path: &str) -> serde_json::Value {
    let answer = get(&client(), &format!("http://{admin}{path}"), &[]).await;
    assert_eq!(answer.status, 200, "GET {path}: {}", answer.text());
    answer.json()
}

/// `GET /metrics` on an admin API.
pub async fn admin_metrics(admin: SocketAddr) -> Metrics {
    let answer = get(&client(), &format!("http://{admin}/metrics"), &[]).await;
    assert_eq!(answer.status, 200);
    Metrics(answer.text())
}

/// A body streamed in `chunk`-byte frames with no declared length, so
/// HTTP/1.1 sends it chunked.
pub fn chunked(bytes: impl Into<Bytes>, chunk: usize) -> Body {
    Chunks {
        data: bytes.into(),
        chunk,
    }
    .boxed()
}

struct Chunks {
    data: Bytes,
    chunk: usize,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if self.data.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let n = self.chunk.min(self.data.len());
        let frame = self.data.split_to(n);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }
}
