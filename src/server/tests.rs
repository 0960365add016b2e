//! Accept-loop tests on real sockets: limits, timeouts, keep-alive, drain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn server_config(extra: &str) -> ServerConfig {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [upstreams.v1]\nendpoints = [\"127.0.0.1:1\"]\n\
         [[routes]]\nname = \"r\"\nstable = \"v1\"\ncanary = \"v1\"\n"
    );
    crate::config::parse(&text, Path::new("/etc/gp/c.toml"))
        .unwrap()
        .config
        .server
}

/// A connected pair: (client side, server side).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

#[test]
fn the_direct_builders_carry_the_auto_builders_limits() {
    for extra in [
        "",
        "max_headers = 50\nmax_header_bytes = 16384\nheader_read_timeout = \"2s\"",
    ] {
        let server = server_config(extra);
        let auto = format!("{:?}", builder(&server));
        let h1 = format!("{:?}", http1_builder(&server));
        let h2 = format!("{:?}", http2_builder(&server));
        assert!(auto.contains(&h1), "{auto}\n does not carry\n{h1}");
        assert!(auto.contains(&h2), "{auto}\n does not carry\n{h2}");
    }
}

#[tokio::test]
async fn sniffing_peeks_without_consuming() {
    let (mut client, server) = pair().await;
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    assert_eq!(sniff(&server).await, Sniffed::Http1);
    let mut buf = [0u8; 4];
    assert_eq!(server.peek(&mut buf).await.unwrap(), 4);
    assert_eq!(&buf, b"GET ");

    let (mut client, server) = pair().await;
    client.write_all(H2_PREFACE).await.unwrap();
    assert_eq!(sniff(&server).await, Sniffed::Http2);

    let (mut client, server) = pair().await;
    client.write_all(&H2_PREFACE[..10]).await.unwrap();
    assert_eq!(sniff(&server).await, Sniffed::Unsure);

    let (client, server) = pair().await;
    drop(client);
    assert_eq!(sniff(&server).await, Sniffed::Gone);
}

/// Serves one accepted connection with an always-200 service; returns
/// the client side.
async fn served(extra: &str) -> (TcpStream, tokio::task::JoinHandle<()>) {
    served_after(extra, Duration::ZERO).await
}

/// [`served`], with a service that answers after `delay`.
async fn served_after(extra: &str, delay: Duration) -> (TcpStream, tokio::task::JoinHandle<()>) {
    let (client, stream) = pair().await;
    let peer = stream.peer_addr().unwrap();
    let activity = Arc::new(Activity::default());
    let service = boxed_service(
        move |_req: Request<Incoming>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(Response::new(ResponseBody::from(
                bytes::Bytes::from_static(b"ok"),
            )))
        },
        activity.clone(),
    );
    let graceful = Drain::new();
    let (tx, shutdown) = watch::channel(false);
    let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
    let server = server_config(extra);
    let task = tokio::spawn(async move {
        serve_cleartext(Box::new(Accepted {
            stream,
            peer,
            service,
            activity,
            server,
            watcher: graceful.watcher(),
            shutdown,
            permit,
        }))
        .await;
        drop((tx, graceful));
    });
    (client, task)
}

/// Reads until `want` shows up (or EOF); returns what was read.
async fn read_until(client: &mut TcpStream, want: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(want.len()).any(|w| w == want) {
        let n = client.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[tokio::test]
async fn cleartext_connections_speak_http1() {
    let (mut client, _task) = served("").await;
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let got = read_until(&mut client, b"\r\n\r\nok").await;
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

/// h2c with prior knowledge, the preface in one piece or split so that
/// the first peek sees only part of it: the server answers with its
/// SETTINGS frame (type 4) and acknowledges ours.
#[tokio::test]
async fn cleartext_connections_speak_h2c_even_with_a_split_preface() {
    const SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
    const SETTINGS_ACK: [u8; 9] = [0, 0, 0, 4, 1, 0, 0, 0, 0];
    for split in [H2_PREFACE.len(), 10] {
        let (mut client, _task) = served("").await;
        client.write_all(&H2_PREFACE[..split]).await.unwrap();
        client.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(&H2_PREFACE[split..]).await.unwrap();
        client.write_all(&SETTINGS).await.unwrap();
        let got = read_until(&mut client, &SETTINGS_ACK).await;
        assert_eq!(got.get(3), Some(&4), "split {split}: {got:?}");
        assert!(
            got.windows(9).any(|w| w == SETTINGS_ACK),
            "split {split}: {got:?}"
        );
    }
}

/// Short deadlines for the keep-alive tests: the header timeout, then
/// the keep-alive timeout, well apart.
const SHORT: &str = "header_read_timeout = \"1s\"\nkeepalive_timeout = \"3s\"";

/// Reads until the server closes the connection (EOF or reset), within
/// `bound`; returns when that was.
async fn closed_within(client: &mut TcpStream, bound: Duration) -> tokio::time::Instant {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(bound, async {
        while let Ok(n) = client.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .expect("the server closes the connection");
    tokio::time::Instant::now()
}

async fn request_ok(client: &mut TcpStream) {
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let got = read_until(client, b"\r\n\r\nok").await;
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

/// A client that connects and never sends a byte is idle, not slow: it
/// is closed after keepalive_timeout, not after header_read_timeout.
#[tokio::test]
async fn a_silent_connection_is_closed_after_keepalive_timeout() {
    let (mut client, task) = served(SHORT).await;
    let started = tokio::time::Instant::now();
    let closed = closed_within(&mut client, Duration::from_secs(10)).await;
    let after = closed - started;
    assert!(
        after >= Duration::from_millis(2900),
        "closed after {after:?}"
    );
    task.await.unwrap();
}

/// Waits for the server to close an idle connection, and checks it did so
/// one keep-alive period (3 s in `SHORT`) after the connection went idle,
/// i.e. after now.
async fn closed_after_one_keepalive_period(client: &mut TcpStream) {
    let idle_from = tokio::time::Instant::now();
    let closed = closed_within(client, Duration::from_secs(10)).await;
    let idle = closed - idle_from;
    assert!(
        idle >= Duration::from_millis(2900) && idle < Duration::from_secs(6),
        "closed after {idle:?} idle"
    );
}

/// Between requests too: an idle keep-alive connection outlives the
/// header timeout, serves its next request, and is closed once it has
/// been idle for keepalive_timeout.
#[tokio::test]
async fn an_idle_keepalive_connection_outlives_the_header_timeout() {
    let (mut client, task) = served(SHORT).await;
    request_ok(&mut client).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    request_ok(&mut client).await;
    closed_after_one_keepalive_period(&mut client).await;
    task.await.unwrap();
}

/// A request served for longer than keepalive_timeout is not cut (busy is
/// not idle), and the idle time counts from the end of its response.
#[tokio::test]
async fn a_request_longer_than_keepalive_is_served_and_idle_counts_from_its_end() {
    let (mut client, task) = served_after(SHORT, Duration::from_millis(4500)).await;
    request_ok(&mut client).await;
    closed_after_one_keepalive_period(&mut client).await;
    task.await.unwrap();
}

/// Slowloris still loses: a head trickled a byte at a time after an
/// idle spell is cut header_read_timeout after its first byte, on a
/// fresh connection and on a kept-alive one.
#[tokio::test]
async fn a_trickling_head_is_cut_at_header_read_timeout() {
    for kept_alive in [false, true] {
        let (mut client, task) = served(SHORT).await;
        if kept_alive {
            request_ok(&mut client).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let first_byte = tokio::time::Instant::now();
        let head: &[u8] =
            b"GET / HTTP/1.1\r\nhost: a\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut buf = [0u8; 1024];
        // A byte every 100 ms (5.5 s for all of it), watching for the close.
        for b in head {
            if client.write_all(&[*b]).await.is_err() {
                break;
            }
            let read = tokio::time::timeout(Duration::from_millis(100), client.read(&mut buf));
            if let Ok(Ok(0) | Err(_)) = read.await {
                break;
            }
        }
        let closed = tokio::time::Instant::now();
        let after = closed - first_byte;
        // Closed at 1 s; the trickle notices within its next write or
        // two, and would have gone on for 5 s.
        assert!(
            after >= Duration::from_millis(900) && after < Duration::from_millis(2500),
            "kept alive {kept_alive}: closed {after:?} after the first byte"
        );
        task.await.unwrap();
    }
}

/// Every idle client connection is one task; keep its future small (it
/// was about 3.6 KiB with hyper-util's auto connection inline, 1.7 KiB
/// with the config and the moved-out socket and service kept in it).
#[tokio::test]
async fn the_connection_task_stays_small() {
    let (_client, stream) = pair().await;
    let peer = stream.peer_addr().unwrap();
    let activity = Arc::new(Activity::default());
    let service = boxed_service(
        |_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(ResponseBody::from(bytes::Bytes::new())))
        },
        activity.clone(),
    );
    let graceful = Drain::new();
    let (_tx, shutdown) = watch::channel(false);
    let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
    let task = serve_cleartext(Box::new(Accepted {
        stream,
        peer,
        service,
        activity,
        server: server_config(""),
        watcher: graceful.watcher(),
        shutdown,
        permit,
    }));
    let size = std::mem::size_of_val(&task);
    println!("connection task future: {size} bytes");
    assert!(size <= 1152, "connection task future is {size} bytes");
}
