//! Pure header rewriting between client and upstream, and the request as
//! the upstream gets it (no I/O).
//!
//! RFC 9110 §7.6.1: hop-by-hop headers, and every header the `Connection`
//! header names, belong to one connection and must not be forwarded.

use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Request, Uri, Version};

use crate::domain::Arm;
use crate::proxy::body::RequestBody;

/// Headers that are always hop-by-hop (RFC 9110 §7.6.1 plus the legacy
/// `keep-alive` and `proxy-connection`). A `static`, not a `const`: a const
/// array is built (and its nine names dropped) at every use.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// `x-forwarded-for`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `x-grayproxy-fallback`, set on answers stable gave in place of the canary.
pub const X_GRAYPROXY_FALLBACK: HeaderName = HeaderName::from_static("x-grayproxy-fallback");

/// What the proxy knows about the client connection.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    /// Peer IP address.
    pub ip: IpAddr,
    /// `"http"` or `"https"`.
    pub proto: &'static str,
    /// `ip` as an `x-forwarded-for` value, made once per connection rather
    /// than formatted and copied for every request.
    forwarded_for: Option<HeaderValue>,
}

impl ClientInfo {
    /// A client at `ip`, speaking `proto` (`"http"` or `"https"`).
    pub fn new(ip: IpAddr, proto: &'static str) -> ClientInfo {
        let mut buf = [0u8; 64];
        ClientInfo {
            ip,
            proto,
            forwarded_for: HeaderValue::from_str(format_ip(ip, &mut buf)).ok(),
        }
    }
}

/// The index of `name` in [`HOP_BY_HOP`], if it is one of them.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    // Names are lowercase; every hop-by-hop name is 2, 7, 10, 16, 17, 18 or
    // 19 bytes long, so most names are ruled out by their length alone.
    let n = name.as_str();
    match n.len() {
        2 | 7 | 10 | 16..=19 => {}
        _ => return None,
    }
    match n {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "te" => Some(3),
        "trailer" => Some(4),
        "transfer-encoding" => Some(5),
        "upgrade" => Some(6),
        "proxy-authorization" => Some(7),
        "proxy-authenticate" => Some(8),
        _ => None,
    }
}

/// Whether a `Connection` value names nothing but `keep-alive` or `close`
/// (the usual values), so no other header has to be looked for.
fn names_no_other_header(value: &HeaderValue) -> bool {
    let v = value.as_bytes();
    v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close")
}

/// Removes hop-by-hop headers and those the `Connection` header names.
///
/// One pass over the header lines finds which hop-by-hop headers are there;
/// only those are removed (most messages carry none, or a `Connection:
/// keep-alive` at most), instead of hashing and probing all nine names every
/// time. A `Connection` header that says only `keep-alive` or `close` is not
/// parsed for other names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = 0u16;
    let mut names_others = false;
    for (name, value) in headers.iter() {
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
            if i == 0 && !names_no_other_header(value) {
                names_others = true;
            }
        }
    }
    if present == 0 {
        return;
    }
    if names_others {
        // Collect named headers first: removing while iterating `Connection`
        // values would borrow the map twice. Names that are hop-by-hop anyway
        // (`keep-alive`, `upgrade`) are left to the loop below.
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            let Ok(text) = value.to_str() else { continue };
            for token in text.split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("keep-alive") {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    // `Host` is never hop-by-hop: an HTTP/1.1 request must
                    // carry one, and the proxy has decided it sends it.
                    if hop_by_hop_index(&name).is_none() && name != header::HOST {
                        named.push(name);
                    }
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Rewrites a client request's headers for the upstream: hop-by-hop removed,
/// `x-forwarded-for` appended, `x-forwarded-proto`/`-host` and the arm header
/// set (replacing what the client sent). `host` is the request's host (the
/// `Host` header or, for HTTP/2, the `:authority`); it is kept as `Host`.
pub fn rewrite_request(
    headers: &mut HeaderMap,
    client: &ClientInfo,
    host: Option<&HeaderValue>,
    arm: Arm,
    arm_header: Option<&HeaderName>,
) {
    let host = host.map(|h| match headers.contains_key(header::HOST) {
        true => RequestHost::Kept(h),
        false => RequestHost::Added(h),
    });
    rewrite_request_for(headers, client, host, arm, arm_header);
}

/// The request's host (for `x-forwarded-host`), and whether the request
/// already has a `Host` header.
#[derive(Clone, Copy, Debug)]
pub enum RequestHost<'a> {
    /// The request has a `Host` header, which is kept as it is.
    Kept(&'a HeaderValue),
    /// The request has none (HTTP/2): this host, its URI's authority, is
    /// sent as `Host`.
    Added(&'a HeaderValue),
}

/// [`rewrite_request`], told whether the host is already the `Host` header
/// (the proxy knows from looking it up once).
pub fn rewrite_request_for(
    headers: &mut HeaderMap,
    client: &ClientInfo,
    host: Option<RequestHost<'_>>,
    arm: Arm,
    arm_header: Option<&HeaderName>,
) {
    strip_hop_by_hop(headers);
    append_forwarded_for(headers, client);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(client.proto));
    match host {
        Some(RequestHost::Kept(h)) => {
            headers.insert(X_FORWARDED_HOST, h.clone());
        }
        Some(RequestHost::Added(h)) => {
            headers.insert(header::HOST, h.clone());
            headers.insert(X_FORWARDED_HOST, h.clone());
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
    set_arm(headers, arm, arm_header);
}

/// Rewrites an upstream response's headers for the client: hop-by-hop
/// removed, arm header stamped.
pub fn rewrite_response(headers: &mut HeaderMap, arm: Arm, arm_header: Option<&HeaderName>) {
    strip_hop_by_hop(headers);
    set_arm(headers, arm, arm_header);
}

/// Sets the arm header (replacing any value) when one is configured.
pub fn set_arm(headers: &mut HeaderMap, arm: Arm, arm_header: Option<&HeaderName>) {
    if let Some(name) = arm_header {
        headers.insert(name.clone(), HeaderValue::from_static(arm.as_str()));
    }
}

/// Appends the client IP to `x-forwarded-for`, folding several incoming
/// `x-forwarded-for` lines into one as RFC 9110 §5.3 allows. One lookup:
/// most requests carry none, and get the connection's ready-made value.
fn append_forwarded_for(headers: &mut HeaderMap, client: &ClientInfo) {
    let mut entry = match headers.entry(X_FORWARDED_FOR) {
        Entry::Vacant(vacant) => {
            if let Some(value) = &client.forwarded_for {
                vacant.insert(value.clone());
            }
            return;
        }
        Entry::Occupied(entry) => entry,
    };
    let mut ip_buf = [0u8; 64];
    let ip_text = format_ip(client.ip, &mut ip_buf);
    let mut v = Vec::new();
    for (i, value) in entry.iter().enumerate() {
        if i > 0 {
            v.extend_from_slice(b", ");
        }
        v.extend_from_slice(value.as_bytes());
    }
    v.extend_from_slice(b", ");
    v.extend_from_slice(ip_text.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&v) {
        // Replaces every incoming line with the folded one.
        entry.insert(value);
    }
}

/// Step: the request as the upstream sees it (origin-form URI, HTTP/1.1,
/// headers rewritten for `arm`), and whether it has a `Host` header.
pub fn upstream_request(
    mut parts: Parts,
    body: RequestBody,
    client: &ClientInfo,
    arm: Arm,
    arm_header: Option<&HeaderName>,
    grpc: bool,
) -> (Request<RequestBody>, bool) {
    // The host is looked up once: the rewrite and the send are told
    // whether it is the `Host` header instead of looking again.
    let authority = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let host_header = match authority {
        Some(_) => None,
        None => parts.headers.get(header::HOST).cloned(),
    };
    let host = match (&authority, &host_header) {
        (Some(a), _) if parts.headers.contains_key(header::HOST) => Some(RequestHost::Kept(a)),
        (Some(a), _) => Some(RequestHost::Added(a)),
        (None, Some(h)) => Some(RequestHost::Kept(h)),
        (None, None) => None,
    };
    rewrite_request_for(&mut parts.headers, client, host, arm, arm_header);
    let has_host = host.is_some();
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::from(path);
    if grpc {
        // gRPC servers require it (it tells them trailers will be read);
        // removed above with the other hop-by-hop headers.
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    parts.version = Version::HTTP_11;
    (Request::from_parts(parts, body), has_host)
}

/// A copy of a request, for resending it to stable: body-less, or with a
/// body read whole (an idempotent gRPC call). `None` when the body streams
/// once and cannot be resent.
pub fn resend_head(req: &Request<RequestBody>) -> Option<Request<RequestBody>> {
    use http_body::Body;
    let body = if req.body().is_end_stream() {
        RequestBody::Empty
    } else {
        req.body().try_clone()?
    };
    let mut copy = Request::new(body);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// Formats an IP into a stack buffer (no allocation on the hot path).
fn format_ip(ip: IpAddr, buf: &mut [u8; 64]) -> &str {
    use std::io::Write;
    if let IpAddr::V4(v4) = ip {
        // By hand: `write!` goes through the formatting machinery, about
        // 200 instructions per request for the usual IPv4 client.
        let mut len = 0;
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                buf[len] = b'.';
                len += 1;
            }
            let (hundreds, tens) = (octet / 100, octet / 10 % 10);
            if hundreds > 0 {
                buf[len] = b'0' + hundreds;
                len += 1;
            }
            if hundreds > 0 || tens > 0 {
                buf[len] = b'0' + tens;
                len += 1;
            }
            buf[len] = b'0' + octet % 10;
            len += 1;
        }
        return std::str::from_utf8(&buf[..len]).unwrap_or("");
    }
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // 64 bytes hold any IPv4 or IPv6 text form, so the write cannot fail.
    let _ = write!(cursor, "{ip}");
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn client() -> ClientInfo {
        ClientInfo::new("10.0.0.7".parse().unwrap(), "http")
    }

    fn arm_header() -> HeaderName {
        HeaderName::from_static("x-grayproxy-arm")
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, X-Secret, close".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("proxy-authorization", "Basic x".parse().unwrap());
        h.insert("x-end-to-end", "kept".parse().unwrap());
        let host = HeaderValue::from_static("shop.example");
        h.insert("host", host.clone());
        rewrite_request(
            &mut h,
            &client(),
            Some(&host),
            Arm::Canary,
            Some(&arm_header()),
        );
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "upgrade",
            "proxy-authorization",
        ] {
            assert!(!h.contains_key(gone), "{gone} must not be forwarded");
        }
        assert_eq!(h["x-end-to-end"], "kept");
        assert_eq!(h["host"], "shop.example");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-grayproxy-arm"], "canary");
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
    }

    #[test]
    fn forwarded_for_is_appended_and_folded() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
        rewrite_request(&mut h, &client(), None, Arm::Stable, None);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.7");

        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "1.1.1.1".parse().unwrap());
        h.append("x-forwarded-for", "2.2.2.2, 3.3.3.3".parse().unwrap());
        rewrite_request(&mut h, &client(), None, Arm::Stable, None);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.7");
    }

    #[test]
    fn client_cannot_spoof_proxy_set_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-grayproxy-arm", "canary".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-forwarded-host", "evil.example".parse().unwrap());
        let host = HeaderValue::from_static("shop.example");
        rewrite_request(
            &mut h,
            &client(),
            Some(&host),
            Arm::Stable,
            Some(&arm_header()),
        );
        assert_eq!(h["x-grayproxy-arm"], "stable");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        // HTTP/2 clients send no Host header: the authority becomes Host.
        assert_eq!(h["host"], "shop.example");
    }

    #[test]
    fn ipv4_formatting_matches_display() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.7",
            "192.168.100.1",
            "1.20.103.40",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            let mut buf = [0u8; 64];
            assert_eq!(format_ip(ip, &mut buf), text);
        }
    }

    #[test]
    fn every_hop_by_hop_name_is_recognised() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        for other in [
            "host",
            "x-forwarded-for",
            "content-length",
            "connectio",
            "tea",
        ] {
            assert_eq!(hop_by_hop_index(&HeaderName::from_static(other)), None);
        }
    }

    #[test]
    fn connection_close_or_keep_alive_values_name_nothing_else() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("Close"));
        h.append("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("x-keep").is_some());
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-drop"));
        h.append("x-drop", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(
            h.get("x-drop").is_none(),
            "a second Connection line still names headers"
        );
    }

    #[test]
    fn connection_keep_alive_alone_leaves_other_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Keep-Alive".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["content-type"], "application/json");
        let mut none = HeaderMap::new();
        none.insert("x-a", "1".parse().unwrap());
        strip_hop_by_hop(&mut none);
        assert_eq!(none.len(), 1);
    }

    #[test]
    fn ipv6_client_and_disabled_arm_header() {
        let mut h = HeaderMap::new();
        let c = ClientInfo::new("2001:db8::1".parse().unwrap(), "https");
        rewrite_request(&mut h, &c, None, Arm::Canary, None);
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert!(!h.contains_key("x-grayproxy-arm"));
    }

    #[test]
    fn response_rewrite_stamps_arm_and_strips_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("x-grayproxy-arm", "stable".parse().unwrap());
        rewrite_response(&mut h, Arm::Canary, Some(&arm_header()));
        assert!(!h.contains_key("connection"));
        assert!(!h.contains_key("transfer-encoding"));
        assert_eq!(h["x-grayproxy-arm"], "canary");
    }

    /// `Connection: host` cannot take the `Host` header away: the upstream
    /// still gets it, as the rewrite and the send were told.
    #[test]
    fn a_connection_header_naming_host_keeps_the_host() {
        let mut req = Request::new(RequestBody::Empty);
        *req.uri_mut() = "/x".parse().unwrap();
        let h = req.headers_mut();
        h.insert("host", "shop.example".parse().unwrap());
        h.insert("connection", "host, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        let (parts, body) = req.into_parts();
        let (out, has_host) = upstream_request(parts, body, &client(), Arm::Stable, None, false);
        assert!(has_host);
        assert_eq!(out.headers()["host"], "shop.example");
        assert_eq!(out.headers()["x-forwarded-host"], "shop.example");
        assert!(!out.headers().contains_key("x-secret"));
        assert!(!out.headers().contains_key("connection"));
    }
}
