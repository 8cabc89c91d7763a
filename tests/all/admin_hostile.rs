//! The admin server against a hostile browser and a hostile client: DNS
//! rebinding (a request naming the attacker's host) and connections that
//! send nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(30);

/// The `host:port` of a host's admin server.
fn admin_addr(host: &Host) -> String {
    let url = host.admin_url();
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Sends one request with the given `Host` header and body; the status.
fn status_for(addr: &str, method: &str, path: &str, host: &str, body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// With no token (loopback only), a page on another origin that rebinds
/// its name to 127.0.0.1 got 200 from the API and purged the dead letters.
/// Now only a loopback `Host` (or one listed in `[admin] host_names`) is
/// answered; the probes answer any.
#[test]
fn without_a_token_only_loopback_host_names_are_answered() {
    let redis = RedisServer::start();
    let host = Host::start_with(
        &redis,
        &plugin_entry("recorder", "recorder", &["rec_"]),
        "[admin]\nhost_names = [\"admin.internal\"]\n",
    );
    let addr = admin_addr(&host);
    let port = addr.rsplit(':').next().unwrap();
    for evil in [
        format!("rebind.attacker.example:{port}"),
        "rebind.attacker.example".to_owned(),
        format!("127.0.0.1.attacker.example:{port}"),
        format!("localhost:{}", port.parse::<u16>().unwrap() ^ 1),
        String::new(),
    ] {
        for (method, path, body) in [
            ("GET", "/api/overview", ""),
            ("GET", "/api/triggers?tenant=acme", ""),
            ("POST", "/api/dead/purge", "{}"),
            ("GET", "/", ""),
            ("GET", "/metrics", ""),
        ] {
            let status = status_for(&addr, method, path, &evil, body);
            assert_eq!(status, 421, "{method} {path} with Host {evil:?}");
        }
        for probe in ["/healthz", "/readyz"] {
            let status = status_for(&addr, "GET", probe, &evil, "");
            assert_eq!(status, 200, "{probe} with Host {evil:?}");
        }
    }
    for good in [
        addr.clone(),
        format!("localhost:{port}"),
        format!("admin.internal:{port}"),
        format!("LOCALHOST:{port}"),
    ] {
        let status = status_for(&addr, "GET", "/api/overview", &good, "");
        assert_eq!(status, 200, "Host {good:?}");
    }
    let status = status_for(&addr, "POST", "/api/dead/purge", &addr, "{}");
    assert_eq!(status, 200, "a purge from a loopback page");
    // Tenant parameters follow the tenant rule.
    for (method, path, body) in [
        ("GET", "/api/triggers?tenant=__keyevent@8__", ""),
        ("GET", "/api/dead?tenant=symphony", ""),
        ("POST", "/api/dead/purge", r#"{"tenant":"a{b}"}"#),
        (
            "POST",
            "/api/triggers/cancel",
            r#"{"tenant":"pending_batches","action":"a","id":"1"}"#,
        ),
    ] {
        let status = status_for(&addr, method, path, &addr, body);
        assert_eq!(status, 400, "{method} {path} {body}");
    }
}

/// One client opened connections and sent nothing: the host's descriptors
/// filled and `/healthz` stopped answering. Now at most 128 are served at
/// once (the rest closed at once) and an idle one is closed after 10 s.
#[test]
fn idle_connections_are_capped_and_closed() {
    let redis = RedisServer::start();
    let host = Host::start(&redis, &plugin_entry("recorder", "recorder", &["rec_"]));
    let addr = admin_addr(&host);
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", host.pid()))
            .unwrap()
            .count()
    };
    let before = fds();
    let mut idle: Vec<TcpStream> = (0..400)
        .map(|_| {
            let s = TcpStream::connect(&addr).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    // Give the server time to accept them all: wait until the count settles.
    let mut last = 0;
    let deadline = Instant::now() + WAIT;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = fds();
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let grown = fds().saturating_sub(before);
    assert!(
        grown <= 128 + 16,
        "400 idle connections took {grown} descriptors of the host"
    );
    // Every idle connection is closed by the server within the timeout.
    let start = Instant::now();
    while !idle.is_empty() {
        idle.retain_mut(|s| {
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Ok(0) => false,
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            }
        });
        assert!(
            start.elapsed() < WAIT,
            "{} idle connections still open after {:?}",
            idle.len(),
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = status_for(&addr, "GET", "/healthz", &addr, "");
    assert_eq!(status, 200);
}
