//! Expiry to plugin: arguments, tenant, routing, bad input, failures.

use std::time::Duration;

use redis::Commands;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn a_trigger_runs_its_plugin_with_the_arguments_and_tenant() {
    let redis = RedisServer::start();
    let mut host = Host::start(&redis, &plugin_entry("recorder", "recorder", &["rec_"]));
    let mut db8 = redis.conn(8);

    set_expiring(&mut db8, b"acme:EXPTRIGGER:rec_a:user_1", 200);
    // A hand-written key whose id holds ':' (mimeiapify's parse keeps it).
    set_expiring(&mut db8, b"globex:EXPTRIGGER:rec_b:id:with:colons", 200);

    let e = host.wait_for("the rec_a dispatch", WAIT, |e| {
        is_dispatch(e, "rec_a", "user_1")
    });
    assert_eq!(e["tenant"], "acme");
    assert_eq!(e["plugin"], "recorder");
    assert_eq!(e["outcome"], "ok", "{e}");
    assert!(e["duration_us"].as_u64().is_some(), "{e}");
    // The job span's fields, at the top level beside the event's own.
    assert_eq!(e["target"], "symphony::dispatch", "{e}");
    assert_eq!(e["attempt"], 1, "{e}");
    assert_eq!(e["generation"], 0, "{e}");
    assert_eq!(e["name"], "job", "the span's name: {e}");
    assert_eq!(e["version"].as_str().map(str::len), Some(12), "{e}");
    assert!(e.get("error").is_none(), "an ok dispatch has no error: {e}");
    let e = host.wait_for("the rec_b dispatch", WAIT, |e| {
        is_dispatch(e, "rec_b", "id:with:colons")
    });
    assert_eq!(e["tenant"], "globex");
    assert_eq!(e["outcome"], "ok", "{e}");

    // The plugin saw the arguments and the host's tenant...
    host.wait_for("the plugin's own log line", WAIT, |e| {
        e["message"]
            == "recorded tenant=acme action=rec_a id=user_1 key=acme:EXPTRIGGER:rec_a:user_1"
            && e["tenant"] == "acme"
            && e["plugin"] == "recorder"
            && e["event"] == "plugin_log"
            && e["action"] == "rec_a"
            && e["id"] == "user_1"
            && e["attempt"] == 1
    });
    // Each field once per line: the span's and the event's never clash.
    for line in host
        .log()
        .lines()
        .filter(|l| l.contains(r#""event":"dispatch""#))
    {
        for field in ["\"tenant\":", "\"id\":", "\"attempt\":", "\"message\":"] {
            assert_eq!(line.matches(field).count(), 1, "{field} in {line}");
        }
    }
    // ...and its trigger import wrote into that tenant only, escaping ':' in the id.
    let exists: bool = db8.exists("acme:EXPTRIGGER:seen_rec_a:user_1").unwrap();
    assert!(exists, "the plugin's follow-up trigger is missing");
    let exists: bool = db8
        .exists("globex:EXPTRIGGER:seen_rec_b:id_with_colons")
        .unwrap();
    assert!(exists, "the globex follow-up trigger is missing");
    let value: String = db8.get("acme:EXPTRIGGER:seen_rec_a:user_1").unwrap();
    assert!(
        value.starts_with("trigger:20"),
        "mimeiapify-compatible value, got {value:?}"
    );
}

#[test]
fn the_longest_prefix_wins_across_plugins() {
    let redis = RedisServer::start();
    let plugins = format!(
        "{}{}",
        plugin_entry("short", "recorder", &["rec_"]),
        plugin_entry("long", "recorder", &["rec_long_", "other"])
    );
    let mut host = Host::start(&redis, &plugins);
    let mut db8 = redis.conn(8);
    for key in [
        "t:EXPTRIGGER:rec_x:1",
        "t:EXPTRIGGER:rec_long_y:2",
        "t:EXPTRIGGER:rec_lon:3",
        "t:EXPTRIGGER:other_thing:4",
    ] {
        set_expiring(&mut db8, key.as_bytes(), 100);
    }
    let plugin_of = |host: &mut Host, action: &str, id: &str| {
        host.wait_for(&format!("{action} dispatched"), WAIT, |e| {
            is_dispatch(e, action, id)
        })["plugin"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(plugin_of(&mut host, "rec_x", "1"), "short");
    assert_eq!(plugin_of(&mut host, "rec_long_y", "2"), "long");
    assert_eq!(plugin_of(&mut host, "rec_lon", "3"), "short");
    assert_eq!(plugin_of(&mut host, "other_thing", "4"), "long");
}

#[test]
fn unknown_actions_and_other_keys_are_ignored_harmlessly() {
    let redis = RedisServer::start();
    let mut host = Host::start(&redis, &plugin_entry("recorder", "recorder", &["rec_"]));
    let mut db8 = redis.conn(8);
    let ignored: [&[u8]; 6] = [
        b"plain_key",
        b"acme:EXPTRIGGER:nobody_owns_this:1",
        b"te:nant:EXPTRIGGER:rec_a:1",
        b":EXPTRIGGER:rec_a:1",
        b"acme:EXPTRIGGER:rec_a",
        b"acme:EXPTRIGGER:rec_\xff\xfe:1",
    ];
    for key in ignored {
        set_expiring(&mut db8, key, 50);
    }
    // Another DB's expiries are not ours.
    set_expiring(&mut redis.conn(10), b"acme:EXPTRIGGER:rec_other_db:1", 50);
    // Wait until every ignored key is gone, then prove the host still works.
    eventually(WAIT, "the ignored keys to expire", || {
        let left: usize = ignored
            .iter()
            .map(|k| db8.exists::<_, bool>(*k).unwrap() as usize)
            .sum();
        (left == 0).then_some(()).ok_or(format!("{left} left"))
    });
    set_expiring(&mut db8, b"acme:EXPTRIGGER:rec_after:ok", 50);
    let e = host.wait_for("a good trigger after the bad ones", WAIT, |e| {
        is_dispatch(e, "rec_after", "ok")
    });
    assert_eq!(e["outcome"], "ok");
    let dispatches = host.events(|e| e["event"] == "dispatch");
    assert_eq!(
        dispatches.len(),
        1,
        "only the good trigger runs: {dispatches:?}"
    );
    // Counted and logged (throttled: the first of each kind at least).
    host.wait_for("the not-a-trigger log line", WAIT, |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("ignored an expired key"))
    });
    host.wait_for("the unrouted log line", WAIT, |e| {
        e["event"] == "unrouted" && e["action"] == "nobody_owns_this"
    });
    let status = host.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
    let totals = host.wait_for("the totals", WAIT, |e| e["event"] == "dispatch_totals");
    // Claimed from the index: the unowned trigger and the good one.
    assert_eq!(totals["heard"], 2, "{totals}");
    assert_eq!(totals["not_trigger"], 5, "{totals}");
    assert_eq!(totals["unrouted"], 1, "{totals}");
    assert_eq!(totals["ok"], 1, "{totals}");
}

#[test]
fn failing_trapping_and_looping_plugins_are_logged_and_dispatch_goes_on() {
    let redis = RedisServer::start();
    let mut host = Host::start_with(
        &redis,
        &plugin_entry("recorder", "recorder", &["rec_", "fail", "trap", "spin"]),
        "",
    );
    let mut db8 = redis.conn(8);
    set_expiring(&mut db8, b"acme:EXPTRIGGER:fail_now:1", 50);
    set_expiring(&mut db8, b"acme:EXPTRIGGER:trap_now:2", 50);
    set_expiring(&mut db8, b"acme:EXPTRIGGER:spin_now:3", 50);

    let e = host.wait_for("the failing dispatch", WAIT, |e| {
        is_dispatch(e, "fail_now", "1")
    });
    assert_eq!(e["outcome"], "error", "{e}");
    assert_eq!(e["error"], "recorder failed on purpose", "{e}");
    assert_eq!(e["level"], "WARN");
    let e = host.wait_for("the trapping dispatch", WAIT, |e| {
        is_dispatch(e, "trap_now", "2")
    });
    assert_eq!(e["outcome"], "trap", "{e}");
    assert_eq!(e["level"], "ERROR");
    // The guest's panic message reaches the log through its stderr.
    host.wait_for("the panic message", WAIT, |e| {
        e["stream"] == "stderr"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("recorder trapped on purpose"))
    });
    // The manifest's timeout is 2 s; the loop is interrupted soon after.
    let e = host.wait_for("the looping dispatch", WAIT, |e| {
        is_dispatch(e, "spin_now", "3")
    });
    assert_eq!(e["outcome"], "timeout", "{e}");
    let took = e["duration_us"].as_u64().unwrap();
    assert!(
        (2_000_000..3_000_000).contains(&took),
        "interrupted after {took} µs"
    );
    println!("looping plugin interrupted after {took} µs (timeout 2 s)");

    for i in 0..5 {
        set_expiring(
            &mut db8,
            format!("acme:EXPTRIGGER:rec_after:{i}").as_bytes(),
            50,
        );
    }
    for i in 0..5 {
        let id = i.to_string();
        let e = host.wait_for("dispatches after the failures", WAIT, |e| {
            is_dispatch(e, "rec_after", &id)
        });
        assert_eq!(e["outcome"], "ok", "{e}");
    }
}

/// The job's fields ride on a span at ERROR level, so a filter that keeps
/// only warnings still gets them on a failed job's events.
#[test]
fn a_warn_only_filter_keeps_the_job_fields_on_its_events() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &plugin_entry_with(
            "failing",
            "recorder",
            &["fail"],
            "tenants = [\"*\"]\n[plugin.retry]\nmax_attempts = 2\nbackoff = \"100ms\"",
        ),
        "",
    );
    // No `listening` line at warn to wait for: the trigger is armed through
    // the index, which the host sweeps whenever it is up.
    let mut host = Host::spawn_logging(&manifest, &redis, dir, "warn");
    arm(
        &redis,
        &[("acme".into(), "fail_now".into(), "w1".into(), 100)],
    );
    let failed = host.wait_for("the failed dispatch", Duration::from_secs(20), |e| {
        is_dispatch(e, "fail_now", "w1") && e["attempt"] == 1
    });
    assert_eq!(failed["level"], "WARN", "{failed}");
    assert_eq!(failed["tenant"], "acme", "{failed}");
    assert_eq!(failed["plugin"], "failing", "{failed}");
    assert_eq!(failed["outcome"], "error", "{failed}");
    let retry = host.wait_for("the retry line", WAIT, |e| e["event"] == "retry_scheduled");
    assert_eq!(retry["id"], "w1", "{retry}");
    assert_eq!(retry["action"], "fail_now", "{retry}");
    let dead = host.wait_for("the dead letter", WAIT, |e| e["event"] == "dead_lettered");
    assert_eq!(dead["attempt"], 2, "{dead}");
    assert_eq!(dead["tenant"], "acme", "{dead}");
    assert!(
        host.events(|e| e["level"] == "INFO").is_empty(),
        "the filter lets no info line through"
    );
}
