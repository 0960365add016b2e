//! Answers the proxy makes itself: one error type, one exhaustive mapping to
//! status and JSON body.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::domain::Arm;
use crate::grpc::{self, GrpcCode};

/// Why the proxy answers instead of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// No route matches the request.
    NoRoute,
    /// The upstream could not be reached or broke before answering.
    UpstreamUnreachable,
    /// The upstream did not answer within `request_timeout`.
    UpstreamTimeout,
    /// The request was malformed (bad framing, bad URI).
    BadRequest,
    /// The request body is larger than `max_body_bytes`.
    BodyTooLarge,
    /// The request head is larger than the header limits.
    HeadersTooLarge,
}

impl ProxyError {
    /// The status code of the answer.
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    /// The short `error` text of the JSON body.
    pub fn message(self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no route matches this request",
            ProxyError::UpstreamUnreachable => "upstream unreachable",
            ProxyError::UpstreamTimeout => "upstream timed out",
            ProxyError::BadRequest => "malformed request",
            ProxyError::BodyTooLarge => "request body too large",
            ProxyError::HeadersTooLarge => "request headers too large",
        }
    }

    /// The status of the same answer to a gRPC call.
    pub fn grpc_code(self) -> GrpcCode {
        match self {
            ProxyError::NoRoute => GrpcCode::Unimplemented,
            ProxyError::UpstreamUnreachable => GrpcCode::Unavailable,
            ProxyError::UpstreamTimeout => GrpcCode::DeadlineExceeded,
            ProxyError::BadRequest => GrpcCode::Internal,
            ProxyError::BodyTooLarge | ProxyError::HeadersTooLarge => GrpcCode::ResourceExhausted,
        }
    }

    /// The answer to a gRPC call: HTTP 200, trailers-only (`grpc-status`,
    /// `grpc-message`, no body), which every gRPC client reads as the
    /// call's status.
    pub fn grpc_response<B: Default>(self) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.headers_mut() = grpc::trailers_only(self.grpc_code(), self.message());
        response
    }

    /// The JSON body `{"error": .., "route": .., "arm": ..}`; `route` and
    /// `arm` appear when known.
    pub fn body(self, route: Option<&str>, arm: Option<Arm>) -> Bytes {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), self.message().into());
        if let Some(route) = route {
            body.insert("route".into(), route.into());
        }
        if let Some(arm) = arm {
            body.insert("arm".into(), arm.as_str().into());
        }
        Bytes::from(serde_json::Value::Object(body).to_string())
    }

    /// A complete response with the JSON body.
    pub fn response<B: From<Bytes>>(self, route: Option<&str>, arm: Option<Arm>) -> Response<B> {
        let mut response = Response::new(B::from(self.body(route, arm)));
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn json(e: ProxyError, route: Option<&str>, arm: Option<Arm>) -> serde_json::Value {
        serde_json::from_slice(&e.body(route, arm)).unwrap()
    }

    #[test]
    fn each_error_maps_to_its_status() {
        let cases = [
            (ProxyError::NoRoute, 404),
            (ProxyError::UpstreamUnreachable, 502),
            (ProxyError::UpstreamTimeout, 504),
            (ProxyError::BadRequest, 400),
            (ProxyError::BodyTooLarge, 413),
            (ProxyError::HeadersTooLarge, 431),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(json(error, None, None)["error"], error.message());
        }
    }

    #[test]
    fn grpc_calls_get_grpc_answers() {
        let cases = [
            (ProxyError::NoRoute, "12"),
            (ProxyError::UpstreamUnreachable, "14"),
            (ProxyError::UpstreamTimeout, "4"),
            (ProxyError::BadRequest, "13"),
            (ProxyError::BodyTooLarge, "8"),
            (ProxyError::HeadersTooLarge, "8"),
        ];
        for (error, code) in cases {
            let r: Response<String> = error.grpc_response();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["grpc-status"], code, "{error:?}");
            assert_eq!(r.headers()["grpc-message"], error.message());
            assert_eq!(r.headers()["content-type"], "application/grpc");
            assert!(r.body().is_empty());
        }
    }

    #[test]
    fn body_names_route_and_arm_when_known() {
        let v = json(
            ProxyError::UpstreamTimeout,
            Some("recommend"),
            Some(Arm::Canary),
        );
        assert_eq!(v["route"], "recommend");
        assert_eq!(v["arm"], "canary");
        let v = json(ProxyError::NoRoute, None, None);
        assert!(v.get("route").is_none() && v.get("arm").is_none());
        let r: Response<Bytes> = ProxyError::NoRoute.response(None, None);
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["content-type"], "application/json");
    }
}
