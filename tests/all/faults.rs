//! Redis going away and coming back.

use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn triggers_fire_after_a_redis_restart_and_notifications_are_restored() {
    let mut redis = RedisServer::start();
    let mut host = Host::start(&redis, &plugin_entry("recorder", "recorder", &["rec_"]));
    set_expiring(&mut redis.conn(8), b"acme:EXPTRIGGER:rec_before:1", 50);
    host.wait_for(
        "a dispatch before the restart",
        Duration::from_secs(10),
        |e| is_dispatch(e, "rec_before", "1"),
    );

    redis.restart();
    // The fresh server starts with notifications off.
    let flags: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query(&mut redis.conn(0))
        .unwrap();
    let restarted_at = Instant::now();
    host.wait_for_n(
        "the listener to resubscribe",
        Duration::from_secs(10),
        2,
        |e| e["event"] == "listening",
    );
    let resubscribed_ms = restarted_at.elapsed().as_millis();
    let flags_after: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query(&mut redis.conn(0))
        .unwrap();
    assert!(
        flags_after[1].contains('E') && flags_after[1].contains('x'),
        "notify-keyspace-events was {flags:?} after the restart and {flags_after:?} later"
    );
    host.wait_for("the gap to be logged", Duration::from_secs(1), |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("listener reconnected after a gap"))
            && e["gap_ms"].as_u64().is_some()
    });

    let mut db8 = redis.conn(8);
    let set_at = Instant::now();
    for i in 0..3 {
        set_expiring(
            &mut db8,
            format!("acme:EXPTRIGGER:rec_after:{i}").as_bytes(),
            100,
        );
    }
    for i in 0..3 {
        let id = i.to_string();
        let e = host.wait_for(
            "a dispatch after the restart",
            Duration::from_secs(2),
            |e| is_dispatch(e, "rec_after", &id),
        );
        // The plugin's own trigger write goes through a reconnected pool.
        assert_eq!(e["outcome"], "ok", "{e}");
    }
    println!(
        "resubscribed {resubscribed_ms} ms after the restart; 3 triggers (100 ms TTL) dispatched {} ms after being set",
        set_at.elapsed().as_millis()
    );
}

#[test]
fn the_host_starts_while_redis_is_down_and_listens_once_it_is_up() {
    let mut redis = RedisServer::start();
    redis.stop();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &plugin_entry("recorder", "recorder", &["rec_"]),
        "",
    );
    let mut host = Host::spawn(&manifest, &redis, dir);
    host.wait_for("a reconnect warning", Duration::from_secs(10), |e| {
        e["event"] == "listener_disconnected"
    });
    redis.restart();
    host.wait_for("the listener to subscribe", Duration::from_secs(10), |e| {
        e["event"] == "listening"
    });
    set_expiring(&mut redis.conn(8), b"acme:EXPTRIGGER:rec_late:1", 50);
    let e = host.wait_for("the dispatch", Duration::from_secs(5), |e| {
        is_dispatch(e, "rec_late", "1")
    });
    assert_eq!(e["outcome"], "ok", "{e}");
}

#[test]
fn a_server_that_refuses_config_stops_the_host_with_the_fix() {
    let redis = RedisServer::start_with(&["--rename-command", "CONFIG", ""]);
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &plugin_entry("recorder", "recorder", &["rec_"]),
        "",
    );
    let out = host_cmd()
        .arg("run")
        .arg(&manifest)
        .env("SYMPHONY_REDIS_URL", redis.url())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot read notify-keyspace-events"),
        "{stderr}"
    );
    assert!(stderr.contains("notify-keyspace-events Ex"), "{stderr}");
    assert!(
        stderr.contains("notify_keyspace_events = \"assume\""),
        "{stderr}"
    );

    // With `assume` the host runs; the flags were set on the server's command line.
    let redis = RedisServer::start_with(&[
        "--rename-command",
        "CONFIG",
        "",
        "--notify-keyspace-events",
        "Ex",
    ]);
    let mut host = Host::start_with(
        &redis,
        &plugin_entry("recorder", "recorder", &["rec_"]),
        "[listener]\nnotify_keyspace_events = \"assume\"",
    );
    set_expiring(&mut redis.conn(8), b"acme:EXPTRIGGER:rec_assumed:1", 50);
    let e = host.wait_for("the dispatch", Duration::from_secs(5), |e| {
        is_dispatch(e, "rec_assumed", "1")
    });
    assert_eq!(e["outcome"], "ok", "{e}");
}

/// Tests with a wall-clock bound: `scripts/test.sh` runs them apart from
/// the parallel suite, one at a time (`timing::`).
mod timing {
    use super::*;

    #[test]
    fn a_killed_subscription_is_resubscribed_at_once() {
        let redis = RedisServer::start();
        let mut host = Host::start(&redis, &plugin_entry("recorder", "recorder", &["rec_"]));
        let killed = redis.kill_pubsub_clients();
        assert_eq!(killed, 1, "one subscription connection: the listener's");
        let e = host.wait_for("the gap to be logged", Duration::from_secs(5), |e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("listener reconnected after a gap"))
        });
        let gap = e["gap_ms"].as_u64().unwrap();
        assert!(gap < 1_000, "resubscribed after {gap} ms");
        set_expiring(&mut redis.conn(8), b"acme:EXPTRIGGER:rec_after_kill:1", 50);
        let e = host.wait_for("a dispatch after the kill", Duration::from_secs(5), |e| {
            is_dispatch(e, "rec_after_kill", "1")
        });
        assert_eq!(e["outcome"], "ok", "{e}");
    }
}
