//! The sandbox: hostile plugins, capabilities, tenants, limits and fairness.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::Value;

use crate::repos::Driver;
use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);

fn hostile_entry() -> String {
    plugin_entry_with(
        "hostile",
        "hostile",
        &["h_"],
        "tenants = [\"evil\"]\n\
         capabilities = [\"user:read\", \"generic\", \"table:read\", \"shared-state:read\"]\n\
         [plugin.limits]\ntimeout = \"1s\"\nmax_memory_mib = 32",
    )
}

#[test]
fn a_tenant_the_plugin_does_not_serve_is_not_dispatched() {
    let redis = RedisServer::start();
    let mut host = Host::start(
        &redis,
        &plugin_entry_with(
            "acme_only",
            "recorder",
            &["rec_"],
            "tenants = [\"acme\"]\ncapabilities = [\"trigger\"]",
        ),
    );
    let mut db8 = redis.conn(8);
    set_expiring(&mut db8, b"globex:EXPTRIGGER:rec_x:1", 20);
    host.wait_for("the refusal", WAIT, |e| {
        e["message"].as_str().is_some_and(|m| {
            m.starts_with("the plugin owning this action may not serve this tenant")
        }) && e["tenant"] == "globex"
    });
    set_expiring(&mut db8, b"acme:EXPTRIGGER:rec_x:2", 20);
    host.wait_for("acme's dispatch", WAIT, |e| is_dispatch(e, "rec_x", "2"));
    assert!(host.events(|e| is_dispatch(e, "rec_x", "1")).is_empty());
    assert!(
        !db8.exists::<_, bool>("globex:EXPTRIGGER:seen_rec_x:1")
            .unwrap()
    );
}

#[test]
fn values_over_the_size_limit_are_refused() {
    let mut d = Driver::start_with_plugin(&plugin_entry_with(
        "driver",
        "driver",
        &["drive"],
        &format!(
            "tenants = [\"*\"]\ncapabilities = {ALL_CAPABILITIES}\n[plugin.limits]\nmax_value_kib = 1"
        ),
    ));
    let (kind, msg) = d.err("acme", serde_json::json!(["generic.set-big", "k", 2000]));
    assert_eq!(kind, "invalid-input");
    assert!(
        msg.contains("over this plugin's max_value_kib (1024 bytes)"),
        "{msg}"
    );
    // A big value written by someone else cannot be read back through the boundary.
    let _: () = d.redis.conn(15).set("acme:big", "y".repeat(5000)).unwrap();
    let (kind, msg) = d.err("acme", serde_json::json!(["generic.get", "big"]));
    assert_eq!(kind, "invalid-input");
    assert!(msg.contains("the result is"), "{msg}");
    assert_eq!(
        d.ok(
            "acme",
            serde_json::json!(["generic.set", "k", "small", null])
        ),
        Value::Null
    );
    // Lists are read in slices in Redis: under the cap, any range comes
    // back as LRANGE gives it, across slices of 1, 2, 4, ... 128 items.
    // (From 10: the codec reads "0" and "1" as booleans, as mimeiapify does.)
    let mut db10 = d.redis.conn(10);
    for i in 10..210 {
        let _: () = db10.rpush("acme:batch:s:e:small", i.to_string()).unwrap();
    }
    for (start, stop) in [(0, -1), (3, 150), (-50, -1), (190, 500), (-500, 2)] {
        let want: Vec<i64> = db10.lrange("acme:batch:s:e:small", start, stop).unwrap();
        let got = d.ok(
            "acme",
            serde_json::json!(["batch.get-chunk", "s", "e", "small", start, stop]),
        );
        assert_eq!(got, serde_json::json!(want), "range {start}..{stop}");
    }
    // Over the cap: items near it are refused after two of them; a big
    // item after small ones is refused when its slice is read.
    for (list, items) in [
        ("near", vec![600; 5]),
        ("late", [vec![1; 10], vec![2000]].concat()),
    ] {
        for n in items {
            let item = format!("\"{}\"", "x".repeat(n));
            let _: () = db10.rpush(format!("acme:batch:s:e:{list}"), item).unwrap();
        }
        let (kind, msg) = d.err(
            "acme",
            serde_json::json!(["batch.get-chunk", "s", "e", list, 0, -1]),
        );
        assert_eq!(kind, "invalid-input", "{list}: {msg}");
        assert!(
            msg.contains("nothing over the limit was read"),
            "{list}: {msg}"
        );
    }
}

#[test]
fn one_tenants_flood_does_not_starve_another() {
    let redis = RedisServer::start();
    let mut host = Host::start_with(
        &redis,
        &plugin_entry_with(
            "slow",
            "recorder",
            &["slow"],
            "tenants = [\"*\"]\ncapabilities = [\"trigger\"]\n[plugin.limits]\nmax_instances = 8",
        ),
        "concurrency = 4\nper_tenant_concurrency = 2",
    );
    let mut db8 = redis.conn(8);
    // 100 one-second jobs from one tenant: 50 s of work at 2 at a time.
    for i in 0..100 {
        set_expiring(
            &mut db8,
            format!("flood:EXPTRIGGER:slow_job:{i}").as_bytes(),
            20,
        );
    }
    host.wait_for_n("the flood to start", WAIT, 2, |e| {
        e["message"] == "slow start" && e["tenant"] == "flood"
    });
    let set_at = Instant::now();
    set_expiring(&mut db8, b"calm:EXPTRIGGER:slow_job:1", 20);
    let e = host.wait_for("the calm tenant's job", WAIT, |e| {
        is_dispatch(e, "slow_job", "1") && e["tenant"] == "calm"
    });
    assert_eq!(e["outcome"], "ok", "{e}");
    let queued = e["queued_us"].as_u64().unwrap();
    assert!(
        queued < 500_000,
        "the calm tenant waited {queued} µs behind the flood"
    );
    println!(
        "calm tenant: waited {} ms for a slot, done {} ms after its trigger was set, with 100 flood jobs queued",
        queued / 1000,
        set_at.elapsed().as_millis()
    );
    // The flood never had more than its share (per_tenant_concurrency = 2)
    // running: walk the log in order, a `slow start` opens a job, its
    // dispatch line closes it. And the calm job did not wait for the flood
    // to drain: fewer than its 100 jobs had ended when it did.
    let (mut running, mut most, mut flood_done) = (0, 0, 0);
    let mut flood_done_at_calm = None;
    for e in host.events(|_| true) {
        let dispatch = e["event"] == "dispatch" && e["action"] == "slow_job";
        if e["tenant"] == "flood" && e["message"] == "slow start" {
            running += 1;
            most = most.max(running);
        } else if e["tenant"] == "flood" && dispatch {
            running -= 1;
            flood_done += 1;
        } else if e["tenant"] == "calm" && dispatch {
            flood_done_at_calm = Some(flood_done);
        }
    }
    assert!(
        most <= 2,
        "{most} flood jobs ran at once, over its share of 2"
    );
    let at_calm = flood_done_at_calm.expect("the calm tenant's dispatch line");
    assert!(
        at_calm < 100,
        "the calm tenant's job ended after all {at_calm} of the flood's: the flood was not queued"
    );
}

#[test]
fn max_instances_runs_one_plugin_at_a_time() {
    let redis = RedisServer::start();
    let mut host = Host::start(
        &redis,
        &plugin_entry_with(
            "single",
            "recorder",
            &["slow"],
            "tenants = [\"*\"]\ncapabilities = [\"trigger\"]\n[plugin.limits]\nmax_instances = 1",
        ),
    );
    let mut db8 = redis.conn(8);
    for i in 0..3 {
        set_expiring(
            &mut db8,
            format!("t{i}:EXPTRIGGER:slow_one:{i}").as_bytes(),
            20,
        );
    }
    let done = host.wait_for_n("three slow jobs", WAIT, 3, |e| {
        e["event"] == "dispatch" && e["action"] == "slow_one"
    });
    let mut waits: Vec<u64> = done
        .iter()
        .map(|e| e["queued_us"].as_u64().unwrap())
        .collect();
    waits.sort_unstable();
    // One at a time: the last waited for the two before it (about 1 s each).
    assert!(waits[2] > 1_800_000, "waits {waits:?}");
}

#[test]
fn warm_instances_serve_a_bounded_number_of_jobs_of_one_tenant() {
    let redis = RedisServer::start();
    let mut host = Host::start(
        &redis,
        &plugin_entry_with(
            "warm",
            "versioned-v1",
            &["ver_"],
            "tenants = [\"*\"]\nreuse_instances = 3\n[plugin.limits]\nmax_instances = 1",
        ),
    );
    let mut db8 = redis.conn(8);
    let mut calls = Vec::new();
    for i in 0..6 {
        set_expiring(
            &mut db8,
            format!("acme:EXPTRIGGER:ver_warm:{i}").as_bytes(),
            20,
        );
        let id = i.to_string();
        let e = host.wait_for("a warm call", WAIT, |e| {
            e["id"] == id.as_str()
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("instance call "))
        });
        calls.push(e["message"].as_str().unwrap()[14..].parse::<u32>().unwrap());
    }
    assert_eq!(
        calls,
        vec![1, 2, 3, 1, 2, 3],
        "an instance serves 3 jobs, then a fresh one"
    );
    // Another tenant never gets this tenant's warm instance.
    set_expiring(&mut db8, b"globex:EXPTRIGGER:ver_warm:g", 20);
    let e = host.wait_for("the other tenant's call", WAIT, |e| {
        e["id"] == "g"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("instance call "))
    });
    assert_eq!(e["message"], "instance call 1");
}

/// Tests with a wall-clock bound: `scripts/test.sh` runs them apart from
/// the parallel suite, one at a time (`timing::`).
mod timing {
    use super::*;

    #[test]
    fn hostile_plugins_end_with_clear_outcomes_while_others_run_on_time() {
        let redis = RedisServer::start();
        let plugins = format!(
            "{}{}",
            hostile_entry(),
            plugin_entry_with(
                "good",
                "recorder",
                &["rec_"],
                "tenants = [\"*\"]\ncapabilities = [\"trigger\"]"
            )
        );
        let mut host = Host::start_with(
            &redis,
            &plugins,
            "concurrency = 8\nper_tenant_concurrency = 4",
        );
        // Another tenant's data the hostile plugin must not reach.
        let mut db11 = redis.conn(11);
        let mut db15 = redis.conn(15);
        let _: () = db11.hset("other:user:u1", "name", "secret").unwrap();
        let _: () = db15.set("other:secret", "keep").unwrap();
        let rss_before = host.proc_status_kib("VmRSS");

        let mut db8 = redis.conn(8);
        // Each attack, the outcome it must end with, and what its error must
        // say. Every case is checked, and every failure reported at the end.
        let cases: &[(&str, &str, &[&str])] = &[
            ("h_loop", "timeout", &[]),
            ("h_grow", "memory", &["over its 32 MiB limit"]),
            ("h_recurse", "trap", &["call stack exhausted"]),
            ("h_panic", "trap", &[]),
            ("h_bigret", "memory", &[]),
            ("h_calls", "limit", &["max_host_calls (10000)"]),
            ("h_file", "error", &["read: Err", "write: Err", "list: Err"]),
            ("h_socket", "error", &["tcp: Err", "udp: Err"]),
            ("h_sleep", "timeout", &[]),
            ("h_exit", "trap", &["exit"]),
            ("h_steal", "ok", &[]),
            ("h_nocap", "denied", &["lacks the capability `trigger`"]),
        ];
        let hostile = cases.iter().map(|(action, _, _)| *action);
        for action in hostile {
            let id = if action == "h_socket" {
                redis.port.to_string()
            } else {
                "1".into()
            };
            set_expiring(
                &mut db8,
                format!("evil:EXPTRIGGER:{action}:{id}").as_bytes(),
                20,
            );
        }
        // Meanwhile another tenant's triggers keep coming, one every 100 ms.
        let good = 30;
        for i in 0..good {
            set_expiring(
                &mut db8,
                format!("good:EXPTRIGGER:rec_tick:{i}").as_bytes(),
                20,
            );
            std::thread::sleep(Duration::from_millis(100));
        }

        let mut failures = Vec::new();
        let mut seen = HashMap::new();
        for &(action, want, says) in cases {
            let Some(e) =
                host.try_wait_for(WAIT, |e| e["event"] == "dispatch" && e["action"] == action)
            else {
                failures.push(format!("{action}: no dispatch line within {WAIT:?}"));
                continue;
            };
            if e["outcome"] != want {
                failures.push(format!(
                    "{action}: outcome {}, want {want}: {e}",
                    e["outcome"]
                ));
            }
            let error = e["error"].as_str().unwrap_or("");
            for part in says {
                if !error.contains(part) {
                    failures.push(format!("{action}: the error lacks {part:?}: {error}"));
                }
            }
            seen.insert(action, e);
        }
        assert!(
            failures.is_empty(),
            "{} of the {} hostile cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
        assert!(!std::path::Path::new("/tmp/symphony-hostile-was-here").exists());
        for action in ["h_loop", "h_sleep"] {
            let took = seen[action]["duration_us"].as_u64().unwrap();
            assert!(
                (1_000_000..3_000_000).contains(&took),
                "{action} stopped after {took} µs"
            );
            println!(
                "{action}: stopped {} ms after its 1 s timeout",
                (took - 1_000_000) / 1000
            );
        }

        // The other tenant was served on time throughout.
        let ticks = host.wait_for_n("the good tenant's triggers", WAIT, good, |e| {
            e["event"] == "dispatch" && e["action"] == "rec_tick"
        });
        let mut worst_queue = 0;
        for e in &ticks {
            assert_eq!(e["outcome"], "ok", "{e}");
            worst_queue = worst_queue.max(e["queued_us"].as_u64().unwrap());
        }
        assert!(
            worst_queue < 500_000,
            "a good trigger waited {worst_queue} µs for a slot"
        );

        // Nothing of the other tenant was read or written.
        let name: String = db11.hget("other:user:u1", "name").unwrap();
        assert_eq!(name, "secret");
        let kept: String = db15.get("other:secret").unwrap();
        assert_eq!(kept, "keep");
        assert!(
            db15.exists::<_, bool>("evil:other:secret").unwrap(),
            "crafted keys stay in evil:"
        );

        // The host is alive, and its memory stayed bounded.
        set_expiring(&mut db8, b"good:EXPTRIGGER:rec_after:1", 20);
        let e = host.wait_for("a dispatch after the suite", WAIT, |e| {
            is_dispatch(e, "rec_after", "1")
        });
        assert_eq!(e["outcome"], "ok");
        let hwm = host.proc_status_kib("VmHWM");
        let rss = host.proc_status_kib("VmRSS");
        println!(
            "host memory: RSS {} MiB before, {} MiB after, peak {} MiB (plugin limit 32 MiB, 4 hostile at once)",
            rss_before / 1024,
            rss / 1024,
            hwm / 1024
        );
        assert!(hwm < 512 * 1024, "host peak RSS {} MiB", hwm / 1024);
        println!(
            "good tenant: worst wait for a slot {} µs over {good} triggers",
            worst_queue
        );
    }

    #[test]
    fn fuel_stops_a_loop() {
        let redis = RedisServer::start();
        let mut host = Host::start(
            &redis,
            &plugin_entry_with(
                "metered",
                "hostile",
                &["h_"],
                "tenants = [\"*\"]\n[plugin.limits]\nfuel = 10000000\ntimeout = \"10s\"",
            ),
        );
        set_expiring(&mut redis.conn(8), b"t:EXPTRIGGER:h_loop:1", 20);
        let e = host.wait_for("the metered loop", WAIT, |e| is_dispatch(e, "h_loop", "1"));
        assert_eq!(e["outcome"], "fuel", "{e}");
        assert!(e["duration_us"].as_u64().unwrap() < 5_000_000, "{e}");
    }
}
