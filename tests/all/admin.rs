//! The admin server: health probes, Prometheus metrics, the token, and
//! start-up errors for an address it cannot or must not take.

use std::time::{Duration, Instant};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);

/// An HTTP agent that hands back 4xx and 5xx answers instead of erroring.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

/// `GET url` with an optional bearer token: status and body.
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = agent().get(url);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut res = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = res.status().as_u16();
    (status, res.body_mut().read_to_string().unwrap())
}

/// Polls `GET url` until its status is `want`, up to `timeout`; the time it took.
fn await_status(url: &str, want: u16, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (status, body) = get(url, None);
        if status == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "{url} still answers {status} ({body}) after {timeout:?}, waiting for {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the sample `name` (with its labels as written) in a
/// Prometheus text page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn probes_follow_redis_and_metrics_count_dispatches() {
    let mut redis = RedisServer::start();
    let mut host = Host::start(&redis, &plugin_entry("recorder", "recorder", &["rec_"]));
    let base = host.admin_url();

    let (status, body) = get(&format!("{base}healthz"), None);
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    await_status(&format!("{base}readyz"), 200, WAIT);

    let mut db8 = redis.conn(8);
    set_expiring(&mut db8, b"acme:EXPTRIGGER:rec_m:1", 100);
    set_expiring(&mut db8, b"acme:EXPTRIGGER:rec_m:2", 100);
    set_expiring(&mut db8, b"acme:EXPTRIGGER:nobody_owns:3", 100);
    host.wait_for_n("two dispatches", WAIT, 2, |e| {
        e["event"] == "dispatch" && e["action"] == "rec_m"
    });
    host.wait_for("the unrouted key", WAIT, |e| e["event"] == "unrouted");
    let (status, page) = get(&format!("{base}metrics"), None);
    assert_eq!(status, 200, "{page}");
    for (name, want) in [
        (
            r#"symphony_dispatches_total{plugin="recorder",outcome="ok"}"#,
            2.0,
        ),
        (
            r#"symphony_dispatch_duration_seconds_count{plugin="recorder"}"#,
            2.0,
        ),
        (
            r#"symphony_dispatch_lateness_seconds_count{plugin="recorder"}"#,
            2.0,
        ),
        (r#"symphony_keys_ignored_total{reason="unrouted"}"#, 1.0),
        ("symphony_plugins_loaded", 1.0),
        ("symphony_plugin_set_generation", 0.0),
        (r#"symphony_listener_connected{pool="expiry"}"#, 1.0),
        (r#"symphony_listener_reconnects_total{pool="expiry"}"#, 0.0),
        ("symphony_jobs_in_flight", 0.0),
        ("symphony_leases_held", 0.0),
        ("symphony_dead_letters", 0.0),
    ] {
        assert_eq!(sample(&page, name), Some(want), "{name} in\n{page}");
    }
    assert!(
        page.ends_with("# EOF\n"),
        "an OpenMetrics page ends with # EOF"
    );

    // Redis stops: not ready within 2 s, naming what is not.
    redis.stop();
    let took = await_status(&format!("{base}readyz"), 503, Duration::from_secs(2));
    let (_, body) = get(&format!("{base}readyz"), None);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let checks: Vec<&str> = body["not_ready"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["check"].as_str())
        .collect();
    assert!(checks.contains(&"redis"), "{body}");
    assert!(checks.contains(&"listener"), "{body}");
    eprintln!("readyz went 503 {took:?} after redis stopped");
    // The process still serves.
    assert_eq!(get(&format!("{base}healthz"), None).0, 200);

    // Back: ready again, and the listener's reconnect is counted.
    redis.restart();
    await_status(&format!("{base}readyz"), 200, Duration::from_secs(15));
    let (_, page) = get(&format!("{base}metrics"), None);
    assert_eq!(
        sample(
            &page,
            r#"symphony_listener_reconnects_total{pool="expiry"}"#
        ),
        Some(1.0),
        "{page}"
    );
}

#[test]
fn a_token_guards_metrics_but_not_the_probes() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), "s3cret-token\n").unwrap();
    let host = Host::start_in(
        dir,
        &redis,
        &plugin_entry("recorder", "recorder", &["rec_"]),
        "[admin]\ntoken_file = \"admin.token\"\n",
    );
    let base = host.admin_url();
    assert_eq!(get(&format!("{base}healthz"), None).0, 200);
    assert_eq!(get(&format!("{base}readyz"), None).0, 200);
    for token in [
        None,
        Some("wrong"),
        Some("s3cret-toke"),
        Some("s3cret-token2"),
    ] {
        let (status, body) = get(&format!("{base}metrics"), token);
        assert_eq!(status, 401, "token {token:?}: {body}");
    }
    let (status, page) = get(&format!("{base}metrics"), Some("s3cret-token"));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("symphony_plugins_loaded 1"), "{page}");
}

/// `run` with `--admin-listen addr` (and `extra` env): its exit status and stderr.
fn run_expecting_exit(redis: &RedisServer, addr: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &plugin_entry("recorder", "recorder", &["rec_"]),
        "",
    );
    let mut cmd = host_cmd();
    cmd.args(["run", "--admin-listen", addr])
        .arg(&manifest)
        .env("SYMPHONY_REDIS_URL", redis.url())
        .env_remove("SYMPHONY_ADMIN_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("symphony-host run --admin-listen {addr} did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_admin_address_in_use_or_beyond_loopback_without_a_token_fails_the_start() {
    let redis = RedisServer::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, err) = run_expecting_exit(&redis, &addr, &[]);
    assert!(!ok);
    assert!(
        err.contains(&format!("cannot listen for the admin server on {addr}")),
        "{err}"
    );

    let (ok, err) = run_expecting_exit(&redis, "0.0.0.0:0", &[]);
    assert!(!ok);
    assert!(err.contains("without a token"), "{err}");

    let (ok, err) = run_expecting_exit(&redis, "not-an-address", &[]);
    assert!(!ok);
    assert!(err.contains("is not an admin listen address"), "{err}");
}
