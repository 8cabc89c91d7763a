//! Multi-tenant hardening: what a hostile tenant (`evil`) tried against a
//! benign one (`victim`), each case reproducing an attack that once worked.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::{Value, json};

use crate::repos::Driver;
use crate::support::*;

const WAIT: Duration = Duration::from_secs(30);

/// Percentile (nearest rank) of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A backlog several times the lease: the lease starts at the claim, so
/// without renewal the reaper handed queued firings to "another host" (here,
/// the same one) and they ran twice.
#[test]
fn a_backlog_longer_than_the_lease_runs_each_firing_once() {
    let redis = RedisServer::start();
    let mut host = Host::start_with(
        &redis,
        &plugin_entry_with(
            "slow",
            "recorder",
            &["slow"],
            "tenants = [\"*\"]\ncapabilities = [\"trigger\"]\n\
             [plugin.limits]\nmax_instances = 2\n[plugin.retry]\nmax_attempts = 1",
        ),
        "[delivery]\nlease = \"3s\"",
    );
    // 30 one-second jobs, 2 at a time: a 15 s backlog, five times the lease.
    let n = 30;
    let triggers: Vec<_> = (0..n)
        .map(|i| ("acme".to_owned(), "slow_bk".to_owned(), i.to_string(), 50))
        .collect();
    arm(&redis, &triggers);
    let counts = wait_dispatched(&[&host], "slow_bk", n, Duration::from_secs(40));
    // A duplicate would come at least a lease after its firing was reaped.
    std::thread::sleep(Duration::from_secs(2));
    let counts_after = dispatch_counts(&[&host], "slow_bk");
    assert_eq!(
        counts, counts_after,
        "more dispatches after the backlog drained"
    );
    let twice: Vec<_> = counts_after.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "ran twice: {twice:?}");
    let reaped = host.events(|e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("leases ended without an answer"))
    });
    assert!(reaped.is_empty(), "leases were reaped: {reaped:?}");
    let _ = host.terminate(Duration::from_secs(10));
    println!("backlog of {n} one-second jobs (2 at a time) with a 3 s lease: each ran once");
}

/// NUL separates a key from its tag in the index: an id holding one is
/// refused at every entry point, and such a key written by another client is
/// reported, never run (let alone twice).
#[test]
fn control_characters_in_ids_are_refused_everywhere_and_never_run_twice() {
    let mut d = Driver::start();
    // The WIT import.
    let (kind, msg) = d.err(
        "acme",
        json!(["trigger.set", "x_nulchild", "n1\u{0}r1", 300000]),
    );
    assert_eq!(kind, "invalid-input", "{msg}");
    assert!(msg.contains("control character"), "{msg}");
    let (kind, msg) = d.err(
        "acme",
        json!(["trigger.set", "x_child", "line\nbreak", 300000]),
    );
    assert_eq!(kind, "invalid-input", "{msg}");
    // A TTL past what Redis accepts: invalid input with the range, not `unavailable`.
    let (kind, msg) = d.err("acme", json!(["trigger.set", "x_far", "1", -1]));
    assert_eq!(kind, "invalid-input", "{msg}");
    assert!(msg.contains("from 1 ms to"), "{msg}");
    let mut db8 = d.redis.conn(8);
    let keys: Vec<String> = db8.keys("acme:EXPTRIGGER:x_*").unwrap();
    assert!(keys.is_empty(), "{keys:?}");

    // The CLI.
    let manifest = d.host.dir().join("manifest.toml");
    let out = host_cmd()
        .env("SYMPHONY_REDIS_URL", d.redis.url())
        .args(["trigger", "set", "--manifest"])
        .arg(&manifest)
        .args(["acme", "x_cli", "bad\u{1b}id", "--ttl", "5m"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("control character"), "{stderr}");

    // The library.
    with_pools(&d.redis, |pools| async move {
        let repo = symphony_host::repo::TriggerRepo::new(&pools, "acme").unwrap();
        let err = repo
            .set("x_lib", "n1\0r1", Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("control character"), "{err}");
        let err = repo
            .set("x_lib", "1", Duration::from_millis(u64::MAX))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
    });

    // Another client writes a key whose id holds NUL: reported, not run.
    set_expiring(&mut db8, b"acme:EXPTRIGGER:drive:n1\0r1", 30);
    d.host.wait_for("the NUL key reported", WAIT, |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("ignored an expired key that is not a trigger"))
            && e["key"].as_str().is_some_and(|k| k.contains("n1\0r1"))
    });
    // The host goes on.
    assert_eq!(
        d.ok("acme", json!(["generic.set", "after", 1, null])),
        Value::Null
    );
    assert!(
        d.host
            .events(
                |e| e["event"] == "dispatch" && e["id"].as_str().is_some_and(|i| i.contains('\0'))
            )
            .is_empty()
    );
}

/// A `check` refuses a component over the pool's per-component bounds, so
/// no plugin can hold the memories another's job needs.
#[test]
fn components_over_the_per_component_bounds_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    // Three core modules of one memory each: over the bound of two.
    let wat = r#"(component
        (core module $m1 (memory 1))
        (core module $m2 (memory 1))
        (core module $m3 (memory 1))
        (core instance (instantiate $m1))
        (core instance (instantiate $m2))
        (core instance (instantiate $m3)))"#;
    let wasm = wat::parse_str(wat).unwrap();
    let path = dir.path().join("many-memories.wasm");
    std::fs::write(&path, wasm).unwrap();
    let manifest = write_manifest(
        dir.path(),
        &format!(
            "[[plugin]]\nname = \"hoarder\"\npath = {:?}\nactions = [\"hoard\"]\ntenants = [\"*\"]\n",
            path.display().to_string()
        ),
        "",
    );
    let out = host_cmd().arg("check").arg(&manifest).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plugin hoarder") && stderr.contains("3 Wasm linear memories"),
        "{stderr}"
    );
}

/// Errors a plugin returns are capped before they reach the log, the retry
/// meta and the dead-letter list, and the dead-letter list itself is capped.
#[test]
fn error_text_and_the_dead_letter_list_are_capped() {
    let redis = RedisServer::start();
    let plugins = format!(
        "{}{}",
        plugin_entry_with(
            "hostile",
            "hostile",
            &["h_"],
            "tenants = [\"evil\"]\n[plugin.limits]\nmax_memory_mib = 64\n\
             [plugin.retry]\nmax_attempts = 1",
        ),
        plugin_entry_with(
            "failing",
            "recorder",
            &["fail"],
            "tenants = [\"*\"]\n[plugin.retry]\nmax_attempts = 1"
        ),
    );
    let mut host = Host::start_with(&redis, &plugins, "[delivery]\nmax_dead_letters = 3");
    let mut db8 = redis.conn(8);
    set_expiring(&mut db8, b"evil:EXPTRIGGER:h_bigerr:1", 20);
    let e = host.wait_for("the big error", WAIT, |e| is_dispatch(e, "h_bigerr", "1"));
    assert_eq!(e["outcome"], "error", "{e}");
    let error = e["error"].as_str().unwrap();
    assert!(
        error.len() <= 16 * 1024 + 16 && error.ends_with("[truncated]"),
        "error of {} bytes",
        error.len()
    );
    let longest = host.log().lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 64 * 1024, "a log line of {longest} bytes");
    let letters = wait_dead_letters(&redis, "evil", 1);
    assert!(
        letters[0].len() < 20 * 1024,
        "dead letter of {} bytes",
        letters[0].len()
    );

    // Five more failures: the list keeps the newest three, and says so.
    for i in 0..5 {
        set_expiring(&mut db8, format!("t:EXPTRIGGER:fail_x:{i}").as_bytes(), 20);
    }
    host.wait_for_n("five failures", WAIT, 5, |e| {
        e["event"] == "dispatch" && e["action"] == "fail_x"
    });
    host.wait_for("the trimming logged", WAIT, |e| {
        e["message"].as_str().is_some_and(|m| {
            m.starts_with("the tenant's dead-letter list is at [delivery] max_dead_letters")
        })
    });
    let letters = wait_dead_letters(&redis, "t", 3);
    std::thread::sleep(Duration::from_millis(300));
    let len: usize = db8.llen("symphony:dead:t").unwrap();
    assert_eq!(len, 3, "{letters:?}");
    assert!(letters.iter().all(|l| l.contains("fail_x")), "{letters:?}");
}

/// Waits (bounded) until `tenant`'s dead-letter list holds at least `n`
/// entries.
fn wait_dead_letters(redis: &RedisServer, tenant: &str, n: usize) -> Vec<String> {
    let mut db8 = redis.conn(8);
    eventually(WAIT, &format!("{n} dead letters of {tenant}"), || {
        let letters: Vec<String> = db8
            .lrange(format!("symphony:dead:{tenant}"), 0, -1)
            .unwrap();
        match letters.len() >= n {
            true => Ok(letters),
            false => Err(format!("{} letters", letters.len())),
        }
    })
}

/// WASI calls are not host calls: two million clock reads end `ok` under a
/// budget of 10000 host calls, as `docs/security.md` says, bounded by the
/// timeout like any other guest work.
#[test]
fn wasi_calls_are_bounded_by_time_not_by_the_host_call_budget() {
    let redis = RedisServer::start();
    let mut host = Host::start(
        &redis,
        &plugin_entry_with("hostile", "hostile", &["h_"], "tenants = [\"*\"]"),
    );
    set_expiring(&mut redis.conn(8), b"evil:EXPTRIGGER:h_clocks:1", 20);
    let e = host.wait_for("the clock reads", WAIT, |e| is_dispatch(e, "h_clocks", "1"));
    assert!(e["outcome"] == "ok" || e["outcome"] == "timeout", "{e}");
    println!(
        "2,000,000 clock reads: outcome {}, {} ms",
        e["outcome"],
        e["duration_us"].as_u64().unwrap_or(0) / 1000
    );
}

/// In the text log format (the default), plugin-controlled strings cannot
/// break a line: an id and a log message holding newlines, carriage returns
/// and ANSI escapes stay inside their own line, escaped.
#[test]
fn plugin_text_cannot_forge_log_lines() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &plugin_entry_with(
            "good",
            "recorder",
            &["rec_"],
            "tenants = [\"*\"]\ncapabilities = [\"trigger\"]",
        ),
        "",
    );
    let mut child = host_cmd()
        .env("SYMPHONY_REDIS_URL", redis.url())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .arg("run")
        .arg(&manifest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let wait_line = |what: &str, pred: &dyn Fn(&str) -> bool, lines: &mut Vec<String>| {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                let hit = pred(&line);
                lines.push(line);
                if hit {
                    return;
                }
            }
        }
        panic!("no line for {what} in {WAIT:?}:\n{}", lines.join("\n"));
    };
    wait_line(
        "listening",
        &|l| l.contains("listening for expiries"),
        &mut lines,
    );
    let forged = "x\n2026-01-01T00:00:00.000000Z  INFO symphony::dispatch: dispatch tenant=victim id=FORGED outcome=\"ok\"\r\u{1b}[2K";
    let key = format!("evil:EXPTRIGGER:rec_forge:{forged}");
    set_expiring(&mut redis.conn(8), key.as_bytes(), 20);
    wait_line(
        "the dispatch",
        &|l| l.contains("dispatch") && l.contains("rec_forge") && l.contains("outcome"),
        &mut lines,
    );
    let _ = nix_term(&mut child);
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        lines.push(line);
    }
    let stamp = |l: &str| {
        l.len() > 20 && l.as_bytes()[4] == b'-' && l.as_bytes()[10] == b'T' && l.starts_with("20")
    };
    let mut by_start: HashMap<bool, usize> = HashMap::new();
    for line in &lines {
        *by_start.entry(stamp(line)).or_default() += 1;
        assert!(stamp(line), "a line that is not the host's own: {line:?}");
        assert!(!line.contains('\u{1b}') && !line.contains('\r'), "{line:?}");
        assert!(
            !line.starts_with("2026-01-01T00:00:00.000000Z"),
            "forged: {line:?}"
        );
    }
    let escaped = lines
        .iter()
        .filter(|l| l.contains("x\\n2026-01-01T00:00:00.000000Z"))
        .count();
    assert!(
        escaped >= 1,
        "the id is shown escaped:\n{}",
        lines.join("\n")
    );
    println!(
        "{} log lines, every one the host's own; the forged id shown escaped {escaped} times",
        lines.len()
    );
}

/// Stops a child with SIGTERM and waits for it.
fn nix_term(child: &mut std::process::Child) -> std::io::Result<std::process::ExitStatus> {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    child.wait()
}

/// Reads of the 96 MiB list per evil job.
const EVIL_READS: usize = 100;

/// One tenant reads a list far over its `max_value_kib`, four jobs at once,
/// again and again: the host never holds more than the cap of it (the reads
/// stop in Redis), and another tenant's repository calls are not held up
/// behind those replies.
#[test]
fn big_reads_are_refused_in_redis_and_do_not_hold_up_another_tenant() {
    let redis = RedisServer::start();
    let mut host = Host::start_with(
        &redis,
        &plugin_entry_with(
            "driver",
            "driver",
            &["drive"],
            &format!(
                "tenants = [\"*\"]\ncapabilities = {ALL_CAPABILITIES}\n\
                 [plugin.limits]\nmax_memory_mib = 64\ntimeout = \"20s\"\n\
                 [plugin.retry]\nmax_attempts = 1"
            ),
        ),
        "concurrency = 8\nper_tenant_concurrency = 4\n[delivery]\nlease = \"30s\"",
    );
    // evil's list: 96 items of 1 MiB (the Redis-side cost of the attack).
    let mut db10 = redis.conn(10);
    let item = format!("\"{}\"", "b".repeat((1 << 20) - 2));
    for _ in 0..96 {
        let _: () = db10.rpush("evil:batch:svc:ent:act", &item).unwrap();
    }
    let _: () = db10
        .hset("victim:state:chat:u1", "step", "\"start\"")
        .unwrap();
    let mut db15 = redis.conn(15);
    // Redis's own time for each command, to bound the victim's wait by it.
    for (name, value) in [
        ("slowlog-log-slower-than", "0"),
        ("slowlog-max-len", "100000"),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query(&mut db15)
            .unwrap();
    }
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut db15).unwrap();
    let rss_before = host.proc_status_kib("VmRSS");
    let read_all = json!(["batch.get-chunk", "svc", "ent", "act", 0, -1]);
    let evil_script = Value::Array(vec![read_all; EVIL_READS]).to_string();
    let victim_script = json!([["timed", ["state.get", "chat", "u1"]]]).to_string();
    let mut db8 = redis.conn(8);
    // One victim call first, so its connection and scripts are warm: what
    // is measured below is the wait behind evil's reads.
    let _: () = db15.set("victim:script:warm", &victim_script).unwrap();
    set_expiring(&mut db8, b"victim:EXPTRIGGER:drive:warm", 20);
    host.wait_for("the victim's first call", WAIT, |e| {
        is_dispatch(e, "drive", "warm")
    });
    // Four evil jobs, then the victim's calls every 20 ms while they run.
    for i in 0..4 {
        let _: () = db15.set(format!("evil:script:e{i}"), &evil_script).unwrap();
        set_expiring(
            &mut db8,
            format!("evil:EXPTRIGGER:drive:e{i}").as_bytes(),
            20,
        );
    }
    // 100 calls, one every 20 ms, while evil reads.
    let victims = 100;
    for i in 0..victims {
        let _: () = db15
            .set(format!("victim:script:v{i}"), &victim_script)
            .unwrap();
        set_expiring(
            &mut db8,
            format!("victim:EXPTRIGGER:drive:v{i}").as_bytes(),
            20,
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let evil = host.wait_for_n("the evil jobs", WAIT, 4, |e| {
        e["event"] == "dispatch" && e["tenant"] == "evil"
    });
    let victim = host.wait_for_n("the victim's jobs", WAIT, victims + 1, |e| {
        e["event"] == "dispatch" && e["tenant"] == "victim"
    });
    // The evil jobs ran their reads, each refused before it was read.
    for i in 0..4 {
        let raw: String = db15.get(format!("evil:result:e{i}")).unwrap();
        let results: Vec<Value> = serde_json::from_str(&raw).unwrap();
        assert_eq!(results.len(), EVIL_READS, "{raw}");
        for r in results {
            assert_eq!(r["err"]["kind"], "invalid-input", "{r}");
            let msg = r["err"]["message"].as_str().unwrap();
            assert!(msg.contains("nothing over the limit was read"), "{msg}");
        }
    }
    for e in &evil {
        assert_eq!(e["outcome"], "ok", "{e}");
    }
    for e in &victim {
        assert_eq!(e["outcome"], "ok", "{e}");
    }
    // Each victim call's time, measured in the guest around the call.
    let mut took: Vec<u64> = (0..victims)
        .map(|i| {
            let raw: String = db15.get(format!("victim:result:v{i}")).unwrap();
            let results: Vec<Value> = serde_json::from_str(&raw).unwrap();
            assert_eq!(results[0]["result"]["ok"]["step"], "start", "{raw}");
            results[0]["us"].as_u64().unwrap()
        })
        .collect();
    println!("victim's state.get calls in order, µs: {took:?}");
    took.sort_unstable();
    // The longest of evil's refused reads in Redis (wall time, so it grows
    // when other tests load the cores, as the victim's waits do).
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query(&mut db15)
        .unwrap();
    let evil_read_us = entries
        .iter()
        .filter_map(|e| {
            let redis::Value::Array(fields) = e else {
                return None;
            };
            let us: u64 = redis::from_redis_value_ref(fields.get(2)?).ok()?;
            let args: Vec<String> = redis::from_redis_value_ref(fields.get(3)?).ok()?;
            args.iter()
                .any(|a| a == "evil:batch:svc:ent:act")
                .then_some(us)
        })
        .max()
        .expect("evil's reads in Redis's slow log");
    // A victim's call waits in Redis behind at most one read per evil job
    // running (4), then runs: p95 within 4 of the longest reads, plus 20 ms
    // for the host and the victim's own call. Held up behind evil's reads
    // (100 per job), it would wait for many more. p95, not p99: two or
    // three calls slowed by another test on the same cores do not count.
    let p95 = percentile(&took, 0.95);
    let bound = 4 * evil_read_us + 20_000;
    println!(
        "evil's longest read took Redis {evil_read_us} µs: the victim's p95 bound is {bound} µs"
    );
    let hwm = host.proc_status_kib("VmHWM");
    let grew_mib = hwm.saturating_sub(rss_before) / 1024;
    println!(
        "4 jobs reading a 96 MiB list {EVIL_READS} times each: host peak RSS +{grew_mib} MiB; \
         victim's state.get calls p50 {} ms, p95 {} ms",
        percentile(&took, 0.5) / 1000,
        p95 / 1000
    );
    assert!(grew_mib < 64, "host peak RSS grew {grew_mib} MiB");
    assert!(
        p95 <= bound,
        "victim calls p95 {p95} µs, over {bound} µs: {took:?}"
    );
}

/// Per-tenant quotas defer a tenant's work at its rate, logged and counted,
/// while other tenants run unhindered.
#[test]
fn quotas_defer_a_tenants_dispatches_and_redis_calls() {
    let redis = RedisServer::start();
    let plugins = format!(
        "{}{}",
        plugin_entry_with(
            "good",
            "recorder",
            &["rec_"],
            "tenants = [\"*\"]\ncapabilities = [\"trigger\"]"
        ),
        plugin_entry_with(
            "driver",
            "driver",
            &["drive"],
            &format!(
                "tenants = [\"*\"]\ncapabilities = {ALL_CAPABILITIES}\n[plugin.limits]\ntimeout = \"10s\""
            ),
        ),
    );
    let mut host = Host::start_with(
        &redis,
        &plugins,
        "[tenants.\"*\"]\ndispatches_per_second = 1000\n\
         [tenants.evil]\ndispatches_per_second = 5\nredis_calls_per_second = 20",
    );
    // 20 of evil's triggers due at once, and 10 of victim's.
    let mut triggers: Vec<_> = (0..20)
        .map(|i| ("evil".to_owned(), "rec_q".to_owned(), i.to_string(), 200))
        .collect();
    triggers.extend((0..10).map(|i| ("victim".to_owned(), "rec_q".to_owned(), i.to_string(), 200)));
    arm(&redis, &triggers);
    let all = host.wait_for_n("every dispatch", WAIT, 30, |e| {
        e["event"] == "dispatch" && e["action"] == "rec_q"
    });
    let starts = |tenant: &str| -> Vec<i64> {
        let mut s: Vec<i64> = all
            .iter()
            .filter(|e| e["tenant"] == tenant)
            .map(|e| e["due_ms"].as_i64().unwrap() + e["late_us"].as_i64().unwrap() / 1000)
            .collect();
        s.sort_unstable();
        s
    };
    let (evil, victim) = (starts("evil"), starts("victim"));
    // A burst of 5, then 5 a second: the last of 20 about 3 s after the first.
    let evil_span = evil[19] - evil[0];
    let victim_span = victim[9] - victim[0];
    println!(
        "quota of 5 dispatches/s: evil's 20 started over {evil_span} ms; victim's 10 over {victim_span} ms"
    );
    assert!(
        evil_span >= 2_500,
        "evil's dispatches spread over {evil_span} ms"
    );
    assert!(
        victim_span < 500,
        "victim's dispatches spread over {victim_span} ms"
    );
    host.wait_for("the deferral logged", WAIT, |e| {
        e["event"] == "quota_deferred"
            && e["tenant"] == "evil"
            && e["quota"] == "dispatches_per_second"
    });

    // 40 Redis calls at 20 a second: the first 20 at once, the rest over a second.
    let mut db15 = redis.conn(15);
    let calls = Value::Array(vec![json!(["generic.get", "k"]); 40]).to_string();
    let _: () = db15.set("evil:script:q1", &calls).unwrap();
    set_expiring(&mut redis.conn(8), b"evil:EXPTRIGGER:drive:q1", 20);
    let e = host.wait_for("the throttled job", WAIT, |e| is_dispatch(e, "drive", "q1"));
    assert_eq!(e["outcome"], "ok", "{e}");
    let took_ms = e["duration_us"].as_u64().unwrap() / 1000;
    println!("quota of 20 Redis calls/s: 42 calls took {took_ms} ms");
    assert!(took_ms >= 900, "the calls took {took_ms} ms");
    host.wait_for("the call deferral logged", WAIT, |e| {
        e["event"] == "quota_deferred" && e["quota"] == "redis_calls_per_second"
    });
}

/// Most of a flood's jobs that may start between another tenant's due time
/// and its start: a few rounds of the host's job slots (64).
const AHEAD_OF_VICTIM: usize = 300;

/// `max_pending_triggers`: a plugin's new trigger beyond the tenant's
/// count pending is refused with `denied("quota: ...")`, counted and
/// logged; re-arming a pending one, and other tenants, are not affected.
#[test]
fn a_tenants_pending_triggers_are_capped() {
    pending_triggers_are_capped(false);
}

/// The same on a Redis Cluster, where the host counts the tenant's index
/// over the slots.
#[test]
fn a_tenants_pending_triggers_are_capped_on_a_cluster() {
    pending_triggers_are_capped(true);
}

fn pending_triggers_are_capped(cluster: bool) {
    let mut driver = Driver::on(cluster, "[tenants.evil]\nmax_pending_triggers = 100");
    let sets = |tenant: &str, from: usize, to: usize| -> Value {
        Value::Array(
            (from..to)
                .map(|i| json!(["trigger.set", "later", format!("{tenant}{i}"), 600_000]))
                .collect(),
        )
    };
    let results = driver.run("evil", sets("p", 0, 120));
    let ok = results.iter().filter(|r| r.get("ok").is_some()).count();
    assert_eq!(ok, 100, "{results:?}");
    let refused = &results[100];
    assert_eq!(refused["err"]["kind"], "denied", "{refused}");
    assert!(
        refused["err"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("quota:") && m.contains("max_pending_triggers")),
        "{refused}"
    );
    let mut db8 = driver.redis.db(8);
    if !cluster {
        assert_eq!(db8.zcard::<_, u64>("symphony:due:evil").unwrap(), 100);
    }
    let set: Vec<bool> = (0..120)
        .map(|i| db8.exists(format!("evil:EXPTRIGGER:later:p{i}")).unwrap())
        .collect();
    assert!(
        set[..100].iter().all(|s| *s) && !set[100..].iter().any(|s| *s),
        "not exactly the first 100 set: {set:?}"
    );
    drop(db8);
    // Re-arming a pending one is not a new one; a cancel makes room.
    let results = driver.run(
        "evil",
        json!([
            ["trigger.set", "later", "p5", 900_000],
            ["trigger.delete", "later", "p6"],
            ["trigger.set", "later", "p100", 600_000],
            ["trigger.set", "later", "p101", 600_000],
        ]),
    );
    let kinds: Vec<bool> = results.iter().map(|r| r.get("ok").is_some()).collect();
    assert_eq!(kinds, [true, true, true, false], "{results:?}");
    // Another tenant has no such cap.
    let results = driver.run("victim", sets("v", 0, 120));
    assert!(results.iter().all(|r| r.get("ok").is_some()), "{results:?}");
    driver.host.wait_for("the refusal logged", WAIT, |e| {
        e["event"] == "quota_refused" && e["tenant"] == "evil" && e["limit"] == 100
    });
}

/// Tests with a wall-clock bound: `scripts/test.sh` runs them apart from
/// the parallel suite, one at a time (`timing::`).
mod timing {
    use super::*;

    /// CPU-bound guests of one tenant fill its slots; another tenant's triggers
    /// still start on time, and their lateness is measured from the real due time.
    #[test]
    fn spinning_guests_do_not_delay_another_tenant() {
        let redis = RedisServer::start();
        let plugins = format!(
            "{}{}",
            plugin_entry_with(
                "spinner",
                "recorder",
                &["spin_"],
                "tenants = [\"evil\"]\n[plugin.limits]\ntimeout = \"3s\"\nmax_instances = 8\n\
                 [plugin.retry]\nmax_attempts = 1",
            ),
            plugin_entry_with(
                "good",
                "recorder",
                &["rec_"],
                "tenants = [\"victim\"]\ncapabilities = [\"trigger\"]"
            ),
        );
        let mut host = Host::start_with(
            &redis,
            &plugins,
            "concurrency = 8\nper_tenant_concurrency = 4",
        );
        // Four spinning jobs: more than the two cores.
        let evil: Vec<_> = (0..4)
            .map(|i| ("evil".to_owned(), "spin_hog".to_owned(), i.to_string(), 50))
            .collect();
        arm(&redis, &evil);
        // The spinning jobs are claimed (and so queued or running).
        let mut db8 = redis.conn(8);
        eventually(WAIT, "the spinning jobs to be claimed", || {
            let leased: u64 = db8.zcard("symphony:leases").unwrap();
            (leased >= 4)
                .then_some(())
                .ok_or(format!("{leased} leased"))
        });
        // Meanwhile 40 of the victim's triggers, due every 50 ms over 2 s.
        let victim: Vec<_> = (0..40u64)
            .map(|i| {
                (
                    "victim".to_owned(),
                    "rec_tick".to_owned(),
                    i.to_string(),
                    300 + 50 * i,
                )
            })
            .collect();
        arm(&redis, &victim);
        let ticks = host.wait_for_n("the victim's triggers", WAIT, victim.len(), |e| {
            e["event"] == "dispatch" && e["action"] == "rec_tick"
        });
        let spins = host.wait_for_n("the spinning jobs to time out", WAIT, 4, |e| {
            e["event"] == "dispatch" && e["action"] == "spin_hog"
        });
        for e in &spins {
            assert_eq!(e["outcome"], "timeout", "{e}");
        }
        let mut late: Vec<u64> = ticks
            .iter()
            .map(|e| {
                assert_eq!(e["outcome"], "ok", "{e}");
                e["late_us"].as_u64().unwrap_or(0)
            })
            .collect();
        late.sort_unstable();
        let (p50, p99) = (percentile(&late, 0.5), percentile(&late, 0.99));
        println!(
            "victim lateness with 4 spinning guests on 2 cores: p50 {} ms, p99 {} ms, max {} ms",
            p50 / 1000,
            p99 / 1000,
            late.last().unwrap() / 1000
        );
        assert!(p99 <= 50_000, "victim p99 lateness {p99} µs: {late:?}");
    }

    /// A flood of one tenant's due triggers: claims are shared across the
    /// tenants with work due, and a host claims no more of a tenant than it
    /// can soon start, so another tenant's trigger starts on time. (Claimed in
    /// due order over one index, the victim's waited for all of the flood.)
    #[test]
    fn a_flood_of_one_tenants_due_triggers_does_not_hold_up_another() {
        flood_of_one_tenant(false, 109_890);
    }

    /// The same on a Redis Cluster, where the flood spreads over every slot and
    /// the sweep finds tenants through the hint buckets (fewer triggers: the
    /// cluster in a debug build is slower, and the flood must still be running
    /// when the victim's trigger is due).
    #[test]
    fn a_flood_of_one_tenants_due_triggers_does_not_hold_up_another_on_a_cluster() {
        flood_of_one_tenant(true, 30_000);
    }

    fn flood_of_one_tenant(cluster: bool, n: usize) {
        use symphony_host::repo::TriggerRepo;
        let redis = start_backend(cluster);
        let mut host = Host::start(&redis, &plugin_entry("rec", "recorder", &["rec_"]));
        let armed = Instant::now();
        with_pools(&redis, |pools| async move {
            let flood: Vec<_> = (0..n)
                .map(|i| ("rec_flood", i.to_string(), Duration::from_secs(3)))
                .collect();
            // Setting a key again is harmless: a call that timed out (a
            // cluster under the whole suite's load once did) is made again.
            let evil = TriggerRepo::new(&pools, "evil").unwrap();
            let mut attempt = 1;
            while let Err(e) = evil.set_many(&flood).await {
                assert!(attempt < 3, "arming the flood failed {attempt} times: {e}");
                attempt += 1;
            }
            // Armed after the flood with 2 s more: due at least 2 s after all of it.
            TriggerRepo::new(&pools, "victim")
                .unwrap()
                .set("rec_v", "1", Duration::from_secs(5))
                .await
                .unwrap();
        });
        println!(
            "armed {n} of evil's triggers and victim's in {} ms",
            armed.elapsed().as_millis()
        );
        let e = host.wait_for("the victim's trigger", WAIT, |e| {
            is_dispatch(e, "rec_v", "1")
        });
        assert_eq!(e["outcome"], "ok", "{e}");
        let late_us = e["late_us"].as_u64().unwrap();
        let flood = host.events(|e| e["event"] == "dispatch" && e["action"] == "rec_flood");
        // The flood's jobs that started after the victim's was due and before
        // it started: what it waited for, counted in jobs, whatever the
        // machine's speed (claimed in due order, it waited for the whole flood).
        let started_ms = |e: &serde_json::Value| {
            e["due_ms"].as_i64().unwrap_or(0) + e["late_us"].as_i64().unwrap_or(0) / 1000
        };
        let (due, start) = (e["due_ms"].as_i64().unwrap(), started_ms(&e));
        let ahead = flood
            .iter()
            .filter(|f| (due..start).contains(&started_ms(f)))
            .count();
        println!(
            "victim's trigger started {} ms late, with {} of evil's {n} earlier ones run, \
             {ahead} of them after it was due",
            late_us / 1000,
            flood.len()
        );
        assert!(
            flood.len() < n,
            "the flood was run already ({}): nothing was tested",
            flood.len()
        );
        assert!(
            ahead <= AHEAD_OF_VICTIM,
            "{ahead} of the flood's jobs started after the victim's was due, before it"
        );
        assert!(late_us <= 1_000_000, "victim's trigger {late_us} µs late");
        let _ = host.terminate(Duration::from_secs(20));
    }
}

/// Found by an attack: with `[redis.pools] default` naming the expiry DB,
/// a plugin granted only `generic` wrote `{t}:EXPTRIGGER:...` and so ran
/// another plugin. Where the default pool shares its DB with another pool,
/// a generic key starting with a typed repository's word is refused, as on
/// a cluster; where it does not, the same key is harmless and allowed.
#[test]
fn a_generic_key_cannot_forge_a_trigger_where_pools_share_a_db() {
    use symphony_host::pools::{PoolAlias, Pools, RedisTarget, RedisUrl, seed_pool_urls};
    use symphony_host::repo::{GenericRepo, RepoError};
    let redis = RedisServer::start();
    let base: RedisUrl = redis.url().parse().unwrap();
    let separate = seed_pool_urls(&base);
    let mut shared = separate.clone();
    shared.insert(PoolAlias::Default, base.with_db(8));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let forge = |urls| async move {
            let pools = Pools::connect(&RedisTarget::Servers(urls)).unwrap();
            let repo = GenericRepo::new(&pools, "evil").unwrap();
            repo.set("EXPTRIGGER:rec:forged", &json!("x"), Some(60))
                .await
        };
        let refused = forge(shared).await;
        assert!(
            matches!(&refused, Err(RepoError::InvalidInput(m)) if m.contains("shares its DB")),
            "{refused:?}"
        );
        assert!(forge(separate).await.is_ok(), "DB 15 holds no triggers");
    });
    let mut db8 = redis.conn(8);
    assert!(!db8.exists::<_, bool>("evil:EXPTRIGGER:rec:forged").unwrap());
    let mut db15 = redis.conn(15);
    assert!(
        db15.exists::<_, bool>("evil:EXPTRIGGER:rec:forged")
            .unwrap()
    );
}
