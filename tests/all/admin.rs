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

/// `GET url` as JSON, asserting 200.
fn get_json(url: &str) -> serde_json::Value {
    let (status, body) = get(url, None);
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}

#[test]
fn every_host_on_one_redis_shows_in_each_hosts_api_until_it_stops() {
    let redis = RedisServer::start();
    let plugins = plugin_entry_with(
        "recorder",
        "recorder",
        &["rec_", "fail_"],
        "tenants = [\"*\"]\ncapabilities = [\"trigger\"]\n[plugin.retry]\nmax_attempts = 1",
    );
    let a = Host::start(&redis, &plugins);
    let mut b = Host::start(&redis, &plugins);
    let (url_a, url_b) = (a.admin_url(), b.admin_url());
    let alive = |url: &str| -> Vec<u64> {
        let v = get_json(&format!("{url}api/hosts"));
        let mut pids: Vec<u64> = v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["alive"] == true)
            .map(|h| h["pid"].as_u64().unwrap())
            .collect();
        pids.sort_unstable();
        pids
    };
    let mut both = vec![u64::from(a.pid()), u64::from(b.pid())];
    both.sort_unstable();
    eventually(WAIT, "host A to list both hosts", || {
        let seen = alive(&url_a);
        (seen == both).then_some(()).ok_or(format!("{seen:?}"))
    });
    assert_eq!(alive(&url_b), both, "host B sees the same fleet");

    // Jobs run by either host count in the fleet's minute on both.
    let mut db8 = redis.conn(8);
    for i in 0..4 {
        set_expiring(
            &mut db8,
            format!("acme:EXPTRIGGER:rec_f:{i}").as_bytes(),
            50,
        );
    }
    set_expiring(&mut db8, b"acme:EXPTRIGGER:fail_f:x", 50);
    let fleet = |url: &str| get_json(&format!("{url}api/overview"))["fleet"].clone();
    let fa = eventually(
        WAIT,
        "both hosts to count 5 jobs in the fleet's minute",
        || {
            let (fa, fb) = (fleet(&url_a), fleet(&url_b));
            match fa["minute_dispatches"] == 5 && fb["minute_dispatches"] == 5 {
                true => Ok(fa),
                false => Err(format!("A {fa}, B {fb}")),
            }
        },
    );
    assert_eq!(fa["minute_failed"], 1, "{fa}");
    assert_eq!(fa["hosts"], 2, "{fa}");
    let v = get_json(&format!("{url_a}api/hosts"));
    let me = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["pid"] == a.pid())
        .unwrap()
        .clone();
    assert_eq!(me["admin_url"].as_str(), Some(url_a.as_str()), "{me}");
    assert_eq!(me["version"], env!("CARGO_PKG_VERSION"), "{me}");
    assert!(me["started_ms"].as_i64().unwrap() <= me["last_seen_ms"].as_i64().unwrap());

    // B stops cleanly: its record goes at once.
    assert!(b.terminate(Duration::from_secs(20)).success());
    eventually(WAIT, "host B to leave host A's list", || {
        let seen = alive(&url_a);
        (seen == vec![u64::from(a.pid())])
            .then_some(())
            .ok_or(format!("{seen:?}"))
    });
}

#[test]
fn the_plugins_api_shows_the_live_set_and_the_last_reload_error() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest_path = dir.path().join("manifest.toml");
    let mut host = Host::start_in(
        dir,
        &redis,
        &plugin_entry_with(
            "recorder",
            "recorder",
            &["rec_", "seen_"],
            "tenants = [\"acme\"]\ncapabilities = [\"trigger\", \"user:read\"]",
        ),
        "",
    );
    let base = host.admin_url();
    let v = get_json(&format!("{base}api/plugins"));
    assert_eq!(v["generation"], 0, "{v}");
    assert!(v["last_reload_error"].is_null(), "{v}");
    let p = &v["plugins"][0];
    assert_eq!(p["name"], "recorder", "{v}");
    assert_eq!(p["version"].as_str().map(str::len), Some(12), "{v}");
    assert_eq!(p["actions"], serde_json::json!(["rec_", "seen_"]), "{v}");
    assert_eq!(p["tenants"], serde_json::json!(["acme"]), "{v}");
    assert_eq!(
        p["capabilities"],
        serde_json::json!(["user:read", "trigger"]),
        "{v}"
    );
    assert!(p["limits"]["timeout_ms"].as_u64().unwrap() > 0, "{v}");

    // A broken manifest is rejected: the set stays, the error shows.
    let good = std::fs::read_to_string(&manifest_path).unwrap();
    std::fs::write(
        &manifest_path,
        format!("{good}\n[[plugin]]\nname = \"broken\"\n"),
    )
    .unwrap();
    host.wait_for("the rejected reload", WAIT, |e| {
        e["event"] == "reload_rejected"
    });
    let v = get_json(&format!("{base}api/plugins"));
    assert_eq!(v["plugins"].as_array().unwrap().len(), 1, "{v}");
    let err = v["last_reload_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("manifest.toml"),
        "the error names the file: {v}"
    );
    let (_, page) = get(&format!("{base}metrics"), None);
    assert_eq!(
        sample(&page, r#"symphony_reloads_total{result="failed"}"#),
        Some(1.0),
        "{page}"
    );
}

/// `POST url` with a JSON body (or `content_type`'s) and an optional
/// bearer token: status and body.
fn post_as(url: &str, token: Option<&str>, body: &str, content_type: &str) -> (u16, String) {
    let mut req = agent().post(url).header("Content-Type", content_type);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut res = req.send(body).unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = res.status().as_u16();
    (status, res.body_mut().read_to_string().unwrap())
}

fn post(url: &str, token: Option<&str>, body: &str) -> (u16, String) {
    post_as(url, token, body, "application/json")
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// `GET url` with `token` as JSON, asserting 200.
fn get_json_with(url: &str, token: &str) -> serde_json::Value {
    let (status, body) = get(url, Some(token));
    assert_eq!(status, 200, "GET {url}: {body}");
    json(&body)
}

#[test]
fn every_change_through_the_api_needs_the_token_and_does_what_the_cli_does() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), "tok-123\n").unwrap();
    let mut host = Host::start_in(
        dir,
        &redis,
        &plugin_entry_with(
            "recorder",
            "recorder",
            &["rec_", "fail_"],
            "tenants = [\"*\"]\ncapabilities = [\"trigger\"]\n[plugin.retry]\nmax_attempts = 1",
        ),
        "[admin]\ntoken_file = \"admin.token\"\n",
    );
    let base = host.admin_url();
    const TOKEN: &str = "tok-123";

    // One scheduled trigger and one dead letter.
    arm(
        &redis,
        &[("acme".into(), "rec_later".into(), "c1".into(), 60_000)],
    );
    set_expiring(&mut redis.conn(8), b"acme:EXPTRIGGER:fail_x:f1", 50);
    host.wait_for("the dead letter", WAIT, |e| e["event"] == "dead_lettered");
    let scheduled = |host_base: &str| -> Vec<String> {
        get_json_with(&format!("{host_base}api/triggers?tenant=acme"), TOKEN)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let dead = || {
        get_json_with(&format!("{base}api/dead"), TOKEN)["total"]
            .as_u64()
            .unwrap()
    };
    let generation = || {
        get_json_with(&format!("{base}api/plugins"), TOKEN)["generation"]
            .as_u64()
            .unwrap()
    };
    // The dead_lettered event is logged just before the letter is written.
    let await_dead = |n: u64| {
        eventually(WAIT, &format!("{n} dead letters"), || {
            let seen = dead();
            (seen == n).then_some(()).ok_or(format!("{seen}"))
        });
    };
    assert_eq!(scheduled(&base), ["c1"]);
    await_dead(1);

    // Every change, without the token and with a wrong one: 401, nothing done.
    let changes = [
        (
            "api/triggers/cancel",
            r#"{"tenant":"acme","action":"rec_later","id":"c1"}"#,
        ),
        ("api/dead/retry", "{}"),
        ("api/dead/purge", "{}"),
        ("api/plugins/reload", "{}"),
    ];
    for (path, body) in changes {
        for token in [None, Some("tok-12"), Some("tok-1234"), Some("")] {
            let (status, answer) = post(&format!("{base}{path}"), token, body);
            assert_eq!(status, 401, "POST {path} with {token:?}: {answer}");
        }
        // With the token but not as JSON (as a cross-site form would): refused.
        let (status, answer) = post_as(&format!("{base}{path}"), Some(TOKEN), body, "text/plain");
        assert_eq!(status, 415, "POST {path} as text/plain: {answer}");
        // No change by GET.
        let (status, _) = get(&format!("{base}{path}"), Some(TOKEN));
        assert_eq!(status, 405, "GET {path}");
    }
    for (path, _) in [
        ("api/triggers", ""),
        ("api/dead", ""),
        ("api/in-flight", ""),
        ("api/overview", ""),
        ("api/dispatches", ""),
        ("api/hosts", ""),
        ("api/plugins", ""),
    ] {
        assert_eq!(
            get(&format!("{base}{path}"), None).0,
            401,
            "GET {path} without the token"
        );
    }
    assert_eq!(scheduled(&base), ["c1"], "nothing was cancelled");
    assert_eq!(dead(), 1, "nothing was retried or purged");
    assert_eq!(generation(), 0, "nothing was reloaded");
    assert!(host.events(|e| e["event"] == "reloaded").is_empty());

    // With the token: each does what it says (200, and the answer's field).
    let change = |path: &str, body: &str, field: &str| -> serde_json::Value {
        let (status, answer) = post(&format!("{base}{path}"), Some(TOKEN), body);
        assert_eq!(status, 200, "POST {path} {body}: {answer}");
        json(&answer)[field].clone()
    };
    assert_eq!(
        change("api/triggers/cancel", changes[0].1, "cancelled"),
        true
    );
    assert!(scheduled(&base).is_empty());
    let exists: bool = redis::cmd("EXISTS")
        .arg("acme:EXPTRIGGER:rec_later:c1")
        .query(&mut redis.conn(8))
        .unwrap();
    assert!(!exists, "the trigger key is gone");
    assert_eq!(
        change("api/triggers/cancel", changes[0].1, "cancelled"),
        false
    );
    let (status, answer) = post(
        &format!("{base}api/triggers/cancel"),
        Some(TOKEN),
        r#"{"tenant":"acme","action":"a","id":"x\u0000y"}"#,
    );
    assert_eq!(status, 400, "a NUL in the id is refused: {answer}");

    assert_eq!(
        change("api/dead/retry", r#"{"tenant":"other"}"#, "retried"),
        0
    );
    assert_eq!(
        change(
            "api/dead/retry",
            r#"{"key":"acme:EXPTRIGGER:fail_x:f1"}"#,
            "retried"
        ),
        1
    );
    host.wait_for_n("the retried letter to die again", WAIT, 2, |e| {
        e["event"] == "dead_lettered"
    });
    await_dead(1);
    assert_eq!(
        change("api/dead/purge", r#"{"action":"fail_x"}"#, "purged"),
        1
    );
    assert_eq!(dead(), 0);

    assert_eq!(change("api/plugins/reload", "{}", "generation"), 1);
    assert_eq!(generation(), 1);

    // The recent dispatches and the overview saw the failures.
    let recent = get_json_with(&format!("{base}api/dispatches"), TOKEN);
    let items = recent["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{recent}");
    assert_eq!(items[0]["outcome"], "error", "{recent}");
    assert_eq!(items[0]["error"], "recorder failed on purpose", "{recent}");
    let overview = get_json_with(&format!("{base}api/overview"), TOKEN);
    assert_eq!(overview["minute"]["total"]["count"], 2, "{overview}");
    assert_eq!(
        overview["minute"]["plugins"]["recorder"]["outcomes"]["error"], 2,
        "{overview}"
    );
    assert_eq!(
        overview["hour"]["tenants"]["acme"]["count"], 2,
        "{overview}"
    );

    // Headers: API answers are not cached, the page has its CSP, all are nosniff.
    let res = agent()
        .get(&format!("{base}api/overview"))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .unwrap();
    assert_eq!(res.headers().get("cache-control").unwrap(), "no-store");
    assert_eq!(
        res.headers().get("x-content-type-options").unwrap(),
        "nosniff"
    );
    let res = agent().get(&base).call().unwrap();
    let csp = res
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(res.headers().get("x-frame-options").unwrap(), "DENY");
}

/// Writes `n` index entries of `tenant` due from `from_ms`, `per_ms` to a
/// millisecond (so many share a due time), without their keys: what the
/// scheduled view reads.
fn index_entries(redis: &RedisServer, tenant: &str, n: usize, from_ms: i64, per_ms: usize) {
    let mut conn = redis.conn(8);
    let due = format!("symphony:due:{tenant}");
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(&due);
        for i in chunk {
            cmd.arg(from_ms + (*i / per_ms) as i64)
                .arg(format!("{tenant}:EXPTRIGGER:act{}:{i:07}", i % 3));
        }
        let _: () = cmd.query(&mut conn).unwrap();
    }
    let _: () = redis::cmd("ZADD")
        .arg("symphony:ready")
        .arg(from_ms)
        .arg(tenant)
        .query(&mut conn)
        .unwrap();
}

#[test]
fn with_the_admin_server_off_the_host_runs_without_one() {
    let redis = RedisServer::start();
    let mut host = Host::start_with_args(
        &redis,
        &plugin_entry("recorder", "recorder", &["rec_"]),
        "",
        &["--admin-listen", "off"],
    );
    set_expiring(&mut redis.conn(8), b"acme:EXPTRIGGER:rec_m:1", 50);
    host.wait_for("the dispatch", WAIT, |e| is_dispatch(e, "rec_m", "1"));
    assert!(
        host.events(|e| e["event"] == "admin_listening").is_empty(),
        "{}",
        host.log()
    );
}

/// Tests with a wall-clock bound: `scripts/test.sh` runs them apart from
/// the parallel suite, one at a time (`timing::`).
mod timing {
    use super::*;

    #[test]
    fn the_scheduled_view_pages_a_million_triggers_in_order_within_200_ms() {
        let redis = RedisServer::start();
        let host = Host::start(&redis, &plugin_entry("recorder", "recorder", &["rec_"]));
        let base = host.admin_url();
        let hour_ahead = {
            let (secs, micros): (i64, i64) = redis::cmd("TIME").query(&mut redis.conn(8)).unwrap();
            secs * 1000 + micros / 1000 + 3_600_000
        };

        // Three small tenants, due times shared by many entries: walking every
        // page yields each entry once, in (due, key) order.
        for (t, n) in [("ta", 40), ("tb", 25), ("tab", 31)] {
            index_entries(&redis, t, n, hour_ahead, 7);
        }
        let mut want: Vec<(i64, String)> = [("ta", 40), ("tb", 25), ("tab", 31)]
            .iter()
            .flat_map(|(t, n)| {
                (0..*n).map(move |i| {
                    (
                        hour_ahead + (i / 7) as i64,
                        format!("{t}:EXPTRIGGER:act{}:{i:07}", i % 3),
                    )
                })
            })
            .collect();
        want.sort();
        let walk = |query: &str| -> Vec<(i64, String)> {
            let mut got = Vec::new();
            let mut after = String::new();
            for _ in 0..1000 {
                let page = get_json(&format!("{base}api/triggers?limit=6&after={after}{query}"));
                for t in page["items"].as_array().unwrap() {
                    got.push((
                        t["due_ms"].as_i64().unwrap(),
                        t["key"].as_str().unwrap().to_owned(),
                    ));
                }
                match page["next"].as_str() {
                    Some(n) => after = n.to_owned(),
                    None => return got,
                }
            }
            panic!("the pages never ended");
        };
        assert_eq!(walk(""), want, "every entry once, in order");
        let act1: Vec<_> = want
            .iter()
            .filter(|(_, k)| k.contains(":act1:"))
            .cloned()
            .collect();
        assert_eq!(walk("&action=act1"), act1, "filtered by action");
        let tb: Vec<_> = want
            .iter()
            .filter(|(_, k)| k.starts_with("tb:"))
            .cloned()
            .collect();
        assert_eq!(walk("&tenant=tb"), tb, "one tenant");

        // A million pending in one tenant: pages stay fast wherever they start.
        index_entries(&redis, "big", 1_000_000, hour_ahead, 50);
        let timed = |query: &str| -> (Duration, serde_json::Value) {
            let mut worst = Duration::ZERO;
            let mut last = serde_json::Value::Null;
            for _ in 0..5 {
                let start = Instant::now();
                last = get_json(&format!("{base}api/triggers?{query}"));
                worst = worst.max(start.elapsed());
            }
            (worst, last)
        };
        let middle = format!(
            "{}-{}",
            hour_ahead + 500_000 / 50,
            "big:EXPTRIGGER:act2:0500000"
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        for (what, query) in [
            ("the first page", "limit=50".to_owned()),
            ("one tenant's first page", "tenant=big&limit=50".to_owned()),
            (
                "a page from the middle",
                format!("tenant=big&limit=50&after={middle}"),
            ),
            (
                "all tenants from the middle",
                format!("limit=50&after={middle}"),
            ),
            (
                "an id prefix that matches late",
                "tenant=big&id_prefix=0999&limit=50".to_owned(),
            ),
        ] {
            let (worst, page) = timed(&query);
            eprintln!(
                "{what}: worst of 5 {worst:?}, {} items, {} read",
                page["items"].as_array().unwrap().len(),
                page["scanned"]
            );
            assert!(worst < Duration::from_millis(200), "{what} took {worst:?}");
            if what == "a page from the middle" {
                // Within a due time, keys sort as strings: act0, act1, then act2.
                assert_eq!(
                    page["items"][0]["key"], "big:EXPTRIGGER:act2:0500003",
                    "{page}"
                );
                assert_eq!(page["items"].as_array().unwrap().len(), 50);
            }
            if what.starts_with("an id prefix") {
                assert!(
                    page["scanned"].as_u64().unwrap() <= 5000,
                    "the read is bounded: {page}"
                );
                assert!(page["next"].is_string(), "and says where to go on: {page}");
            }
        }
    }
}
