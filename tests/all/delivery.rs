//! Delivery guarantees under faults: nothing lost, nothing run twice, on time.
//! Each test prints its figures.

use std::process::Command;
use std::time::{Duration, Instant};

use redis::Commands;

use crate::support::*;

/// The longest wait for an event that should come at once.
const WAIT: Duration = Duration::from_secs(10);

fn counter() -> String {
    plugin_entry_with("ver", "versioned-v1", &["ver_"], "tenants = [\"*\"]")
}

fn assert_exactly_once(hosts: &[&Host], action: &str, n: usize, what: &str) {
    let counts = dispatch_counts(hosts, action);
    if let Some((id, _)) = counts.iter().find(|(_, c)| **c > 1) {
        let runs: Vec<String> = hosts
            .iter()
            .enumerate()
            .flat_map(|(i, h)| {
                h.events(|e| e["id"] == id.as_str() && e["action"] == action)
                    .into_iter()
                    .map(move |e| format!("host {i}: {e}"))
            })
            .collect();
        panic!(
            "{what}: {action}:{id} ran more than once:\n{}",
            runs.join("\n")
        );
    }
    assert_eq!(counts.len(), n, "{what}: lost {}", n - counts.len());
}

#[test]
fn a_killed_subscription_during_1000_triggers_loses_none() {
    let redis = RedisServer::start();
    let host = Host::start(&redis, &counter());
    let n = 1000;
    let started = Instant::now();
    arm(&redis, &spread("ver_kill", n, 500, 3000));
    // Mid-stream, by state: a quarter has run.
    wait_dispatched(&[&host], "ver_kill", n / 4, Duration::from_secs(30));
    let killed = redis.kill_pubsub_clients();
    assert_eq!(killed, 1);
    let counts = wait_dispatched(&[&host], "ver_kill", n, Duration::from_secs(30));
    wait_settled(&redis, "acme", Duration::from_secs(20));
    assert_exactly_once(&[&host], "ver_kill", n, "pubsub killed");
    println!(
        "pubsub connection killed mid-stream: {} of {n} dispatched, 0 lost, 0 twice, in {} ms",
        counts.len(),
        started.elapsed().as_millis()
    );
}

#[test]
fn a_host_stopped_for_3_s_loses_none() {
    let redis = RedisServer::start();
    let mut first = Host::start(&redis, &counter());
    let n = 1000;
    arm(&redis, &spread("ver_down", n, 500, 4000));
    // Mid-stream, by state: a tenth has run.
    wait_dispatched(&[&first], "ver_down", n / 10, Duration::from_secs(30));
    assert!(first.terminate(Duration::from_secs(20)).success());
    let before = dispatch_counts(&[&first], "ver_down").len();
    std::thread::sleep(Duration::from_secs(3));
    let second = Host::start(&redis, &counter());
    wait_dispatched(&[&first, &second], "ver_down", n, Duration::from_secs(30));
    wait_settled(&redis, "acme", Duration::from_secs(20));
    assert_exactly_once(&[&first, &second], "ver_down", n, "host down");
    let late: Vec<u64> = second
        .events(|e| e["event"] == "dispatch" && e["action"] == "ver_down")
        .iter()
        .filter_map(|e| e["late_us"].as_u64())
        .collect();
    println!(
        "host stopped 3 s: {before} dispatched before, {} after the restart (latest {} ms late), 0 lost, 0 twice",
        n - before,
        late.iter().max().unwrap_or(&0) / 1000
    );
}

#[test]
fn a_redis_restart_with_appendonly_loses_none() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    // A claim Redis ran (and wrote to its AOF) whose reply the kill cut off
    // is leased to nobody: it runs when its lease ends. A short lease keeps
    // that within the wait below (under load it happens; the default lease
    // of 60 s would outlast the wait).
    let host = Host::start_with(&redis, &counter(), "[delivery]\nlease = \"4s\"");
    let n = 500;
    arm(&redis, &spread("ver_aof", n, 500, 4000));
    // Mid-stream, by state: a quarter has run.
    wait_dispatched(&[&host], "ver_aof", n / 4, Duration::from_secs(30));
    redis.restart();
    let restarted = Instant::now();
    let counts = wait_dispatched(&[&host], "ver_aof", n, Duration::from_secs(40));
    wait_settled(&redis, "acme", Duration::from_secs(20));
    let counts_after = dispatch_counts(&[&host], "ver_aof");
    assert_eq!(counts.len(), n, "lost {}", n - counts.len());
    let twice = counts_after.values().filter(|c| **c > 1).count();
    println!(
        "redis-server restarted (AOF): {n} of {n} dispatched, 0 lost, {twice} run twice (in flight at the crash), all done {} ms after the restart",
        restarted.elapsed().as_millis()
    );
}

#[test]
fn a_host_killed_mid_handler_leaves_the_job_to_run_again_once() {
    let redis = RedisServer::start();
    let slow = plugin_entry_with(
        "slow",
        "recorder",
        &["slow"],
        "tenants = [\"*\"]\ncapabilities = [\"trigger\"]\n[plugin.limits]\ntimeout = \"2s\"",
    );
    let extra = "[delivery]\nlease = \"3s\"";
    let mut first = Host::start_with(&redis, &slow, extra);
    arm(
        &redis,
        &[("acme".into(), "slow_job".into(), "1".into(), 100)],
    );
    first.wait_for("the handler to start", Duration::from_secs(10), |e| {
        e["message"] == "slow start"
    });
    let killed_at = Instant::now();
    let _ = Command::new("kill")
        .args(["-KILL", &first.pid().to_string()])
        .status();
    let mut second = Host::start_with(&redis, &slow, extra);
    let e = second.wait_for("the job to run again", Duration::from_secs(20), |e| {
        is_dispatch(e, "slow_job", "1")
    });
    assert_eq!(e["outcome"], "ok", "{e}");
    let rerun_ms = killed_at.elapsed().as_millis();
    std::thread::sleep(Duration::from_secs(4));
    assert!(first.events(|e| is_dispatch(e, "slow_job", "1")).is_empty());
    assert_eq!(
        second.events(|e| is_dispatch(e, "slow_job", "1")).len(),
        1,
        "ran more than once again"
    );
    println!(
        "host SIGKILLed mid-handler: the job ran again once, {rerun_ms} ms after the kill (lease 3 s)"
    );
}

#[test]
fn three_hosts_share_10000_triggers_without_duplicates_or_loss() {
    let redis = RedisServer::start();
    let hosts: Vec<Host> = (0..3).map(|_| Host::start(&redis, &counter())).collect();
    let n = 10_000;
    let started = Instant::now();
    arm(&redis, &spread("ver_many", n, 1000, 5000));
    let armed_ms = started.elapsed().as_millis();
    let refs: Vec<&Host> = hosts.iter().collect();
    wait_dispatched(&refs, "ver_many", n, Duration::from_secs(60));
    let done_ms = started.elapsed().as_millis();
    wait_settled(&redis, "acme", Duration::from_secs(20));
    assert_exactly_once(&refs, "ver_many", n, "3 hosts");
    let per_host: Vec<usize> = hosts
        .iter()
        .map(|h| {
            h.events(|e| e["event"] == "dispatch" && e["action"] == "ver_many")
                .len()
        })
        .collect();
    println!(
        "3 hosts, {n} triggers: 0 duplicates, 0 lost; per host {per_host:?}; armed in {armed_ms} ms, all done {done_ms} ms after the first was armed"
    );
}

#[test]
fn plain_setex_triggers_from_another_client_run_exactly_once() {
    let redis = RedisServer::start();
    let hosts: Vec<Host> = (0..2).map(|_| Host::start(&redis, &counter())).collect();
    let n = 1000;
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("SETEX")
            .arg(format!("acme:EXPTRIGGER:ver_plain:{i}"))
            .arg(1 + i % 3)
            .arg("")
            .ignore();
    }
    let _: () = pipe.query(&mut redis.conn(8)).unwrap();
    let refs: Vec<&Host> = hosts.iter().collect();
    wait_dispatched(&refs, "ver_plain", n, Duration::from_secs(30));
    wait_settled(&redis, "acme", Duration::from_secs(20));
    assert_exactly_once(&refs, "ver_plain", n, "plain SETEX");
    let late: Vec<u64> = refs
        .iter()
        .flat_map(|h| h.events(|e| e["event"] == "dispatch" && e["action"] == "ver_plain"))
        .filter_map(|e| e["late_us"].as_u64())
        .collect();
    let mut late = late;
    late.sort_unstable();
    println!(
        "{n} plain SETEX triggers, 2 hosts: each dispatched exactly once; lateness p50 {} ms, p99 {} ms",
        late.get(late.len() / 2).unwrap_or(&0) / 1000,
        late.get(late.len() * 99 / 100).unwrap_or(&0) / 1000
    );
}

/// An arming through the library indexes its key itself and a claim
/// removes its entry, so neither may cost every host a keyevent to apply:
/// the arming renames its key into place (no `expire`), the claim renames
/// it away (no `del`). A plain SETEX and DEL by another client still emit
/// both, and the listener still acts on them.
#[test]
fn armings_and_claims_of_the_library_emit_no_expire_or_del_keyevents() {
    let redis = RedisServer::start();
    let host = Host::start(&redis, &counter());
    let mut sub = redis::Client::open(format!("{}/8", redis.url()))
        .unwrap()
        .get_connection()
        .unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("__keyevent@8__:expire").unwrap();
    pubsub.subscribe("__keyevent@8__:del").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let n = 300;
    arm(&redis, &spread("ver_quiet", n, 500, 500));
    let mut db8 = redis.db(8);
    let _: () = db8.set_ex("acme:EXPTRIGGER:ver_loud:0", "", 60).unwrap();
    let _: i64 = db8.del("acme:EXPTRIGGER:ver_loud:0").unwrap();
    wait_dispatched(&[&host], "ver_quiet", n, Duration::from_secs(30));
    assert_exactly_once(&[&host], "ver_quiet", n, "quiet armings");
    let mut heard: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match pubsub.get_message() {
            Ok(msg) => heard.push((
                msg.get_channel_name().to_owned(),
                msg.get_payload::<String>().unwrap(),
            )),
            Err(e) if e.is_timeout() => {}
            Err(e) => panic!("subscription failed: {e}"),
        }
    }
    let loud: Vec<&(String, String)> = heard
        .iter()
        .filter(|(_, k)| k.contains("ver_loud"))
        .collect();
    assert_eq!(
        loud.len(),
        2,
        "the plain SETEX and DEL of another client emit `expire` and `del`: heard {loud:?}"
    );
    let quiet: Vec<&(String, String)> = heard
        .iter()
        .filter(|(_, k)| k.starts_with("acme:EXPTRIGGER:ver_quiet:"))
        .collect();
    assert!(
        quiet.is_empty(),
        "{} keyevents for triggers the library armed and the host claimed, e.g. {:?}",
        quiet.len(),
        quiet.first()
    );
    println!("{n} triggers armed through the library and claimed: 0 `expire` or `del` keyevents");
}

fn cancelled_triggers_never_run(cluster: bool) {
    let redis = start_backend(cluster);
    let host = Host::start(&redis, &counter());
    let mut db8 = redis.db(8);
    // 200 through our API, 200 by plain SETEX; half of each cancelled.
    arm(&redis, &spread("ver_api", 200, 1500, 500));
    for i in 0..200 {
        let _: () = db8
            .set_ex(format!("acme:EXPTRIGGER:ver_raw:{i}"), "", 2)
            .unwrap();
    }
    // Give the host a moment to index the plain SETEXs (if it has not,
    // their cancellation below is only easier).
    std::thread::sleep(Duration::from_millis(200));
    with_pools(&redis, |pools| async move {
        let repo = symphony_host::repo::TriggerRepo::new(&pools, "acme").unwrap();
        for i in (0..200).step_by(2) {
            assert!(repo.delete("ver_api", &i.to_string()).await.unwrap());
        }
    });
    for i in (0..200).step_by(2) {
        let n: i64 = db8.del(format!("acme:EXPTRIGGER:ver_raw:{i}")).unwrap();
        assert_eq!(n, 1);
    }
    wait_dispatched(&[&host], "ver_api", 100, Duration::from_secs(20));
    wait_dispatched(&[&host], "ver_raw", 100, Duration::from_secs(20));
    wait_drained(&redis, Duration::from_secs(20));
    for action in ["ver_api", "ver_raw"] {
        let counts = dispatch_counts(&[&host], action);
        let cancelled_ran: Vec<&String> = counts
            .keys()
            .filter(|id| id.parse::<u32>().is_ok_and(|i| i % 2 == 0))
            .collect();
        assert!(
            cancelled_ran.is_empty(),
            "{action}: cancelled triggers ran: {cancelled_ran:?}"
        );
        assert_eq!(counts.len(), 100, "{action}");
    }
    println!(
        "cancelled before due: 0 of 200 dispatched (100 by our API, 100 by plain DEL); the other 200 ran once"
    );
}

fn failing_handlers_are_retried_then_dead_lettered_and_managed_from_the_cli(cluster: bool) {
    let redis = start_backend(cluster);
    let failing = plugin_entry_with(
        "failing",
        "recorder",
        &["fail"],
        "tenants = [\"*\"]\n[plugin.retry]\nmax_attempts = 3\nbackoff = \"100ms\"",
    );
    let mut host = Host::start(&redis, &failing);
    arm(
        &redis,
        &[("acme".into(), "fail_always".into(), "x:1".into(), 100)],
    );
    let gave_up = host.wait_for("the dead letter", Duration::from_secs(20), |e| {
        e["event"] == "dead_lettered"
    });
    assert_eq!(gave_up["attempt"], 3);
    let attempts: Vec<u64> = host
        .events(|e| is_dispatch(e, "fail_always", "x_1"))
        .iter()
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, vec![1, 2, 3]);

    let command = |args: &[&str]| {
        let mut cmd = host_cmd();
        cmd.args(args);
        redis.point(&mut cmd);
        cmd
    };
    let cli = |args: &[&str]| run_ok(&mut command(args));
    // The letter's list: `symphony:dead:acme`, or on a cluster its slot's.
    let list = std::cell::RefCell::new(String::new());
    let out = &list;
    with_pools(&redis, |pools| async move {
        let delivery = symphony_host::delivery::Delivery::new(&pools).unwrap();
        *out.borrow_mut() = delivery
            .space_of("acme:EXPTRIGGER:fail_always:x_1")
            .dead_of("acme");
    });
    let list = list.into_inner();
    // An entry another client pushed is reported, not silently dropped, and
    // neither `list` nor `retry` trips on it.
    let _: u64 = redis.db(8).rpush(&list, "not a letter").unwrap();
    let out = command(&["dead", "list"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && stderr.contains("entry 1 of the dead-letter list is not a dead letter"),
        "{stderr}"
    );
    let listed = cli(&["dead", "list"]);
    let letter: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(letter["tenant"], "acme");
    assert_eq!(letter["action"], "fail_always");
    assert_eq!(letter["id"], "x_1");
    assert_eq!(letter["attempts"], 3);
    assert_eq!(letter["last_error"], "recorder failed on purpose");
    assert!(letter["first_due_ms"].as_i64().unwrap() <= letter["failed_at_ms"].as_i64().unwrap());

    assert!(cli(&["dead", "retry"]).contains("1 dead letter(s) queued again"));
    host.wait_for_n("the retried run", Duration::from_secs(20), 4, |e| {
        is_dispatch(e, "fail_always", "x_1")
    });
    host.wait_for_n("the second dead letter", Duration::from_secs(20), 2, |e| {
        e["event"] == "dead_lettered"
    });
    // The second letter and the foreign entry.
    assert!(cli(&["dead", "purge"]).contains("purged 2 dead letter(s)"));
    assert_eq!(cli(&["dead", "list"]).trim(), "");
    let len: u64 = redis.db(8).llen(&list).unwrap();
    assert_eq!(len, 0);
}

#[test]
fn a_firing_missed_while_down_survives_a_re_arm_of_its_key() {
    let redis = RedisServer::start();
    // No host runs: the trigger comes due unseen, then a client re-arms it.
    arm(
        &redis,
        &[("acme".into(), "ver_rearm".into(), "1".into(), 200)],
    );
    std::thread::sleep(Duration::from_millis(700));
    let _: () = redis
        .conn(8)
        .set_ex("acme:EXPTRIGGER:ver_rearm:1", "", 2)
        .unwrap();
    let started = Instant::now();
    let mut host = Host::start(&redis, &counter());
    let runs = host.wait_for_n("both firings", Duration::from_secs(10), 2, |e| {
        is_dispatch(e, "ver_rearm", "1") && e["outcome"] == "ok"
    });
    let first_late = runs[0]["late_us"].as_i64().unwrap();
    let second_late = runs[1]["late_us"].as_i64().unwrap();
    assert!(
        first_late > 400_000,
        "the missed firing ran {first_late} µs late, when the host came"
    );
    assert!(
        second_late < 100_000,
        "the re-armed firing ran on time: {second_late} µs"
    );
    assert!(started.elapsed() > Duration::from_millis(1500));
}

/// A trigger's index entry is due exactly when Redis expires its key,
/// however long the script that armed or indexed it ran. Redis sets a TTL
/// from its clock when the `SET` runs, later in a long script than the
/// time the script read at its start; an entry scored from that start was
/// up to the script's length early. A claim that found such an entry past
/// due with its key still alive took the key for one armed again (a new
/// arming it must keep) and ran the trigger twice: 4 of 2000 in a burst of
/// the bench's cluster section. Keys in one cluster slot, as there: one
/// arming script per 1000.
fn index_entries_are_due_exactly_when_their_keys_expire(cluster: bool) {
    use symphony_host::delivery::Delivery;
    use symphony_host::pools::PoolAlias;
    use symphony_host::repo::TriggerRepo;
    let redis = start_backend(cluster);
    let n = 3000;
    let armed: Vec<(String, String, Duration)> = (0..n)
        .map(|i| {
            let ttl = Duration::from_millis(3_600_000 + i);
            ("ver_exact".to_owned(), format!("{{b}}{i}"), ttl)
        })
        .collect();
    // Keys another client sets, which the host indexes from their
    // `expire` keyevents (here: the same call, made directly).
    let raw: Vec<String> = (0..n)
        .map(|i| format!("acme:EXPTRIGGER:ver_rawexact:{{b}}{i}"))
        .collect();
    let mut db8 = redis.db(8);
    for (i, key) in raw.iter().enumerate() {
        let _: () = db8.pset_ex(key, "", 3_600_000 + i as u64).unwrap();
    }
    with_pools(&redis, |pools| async move {
        let repo = TriggerRepo::new(&pools, "acme").unwrap();
        let keys = repo.set_many(&armed).await.unwrap();
        let delivery = Delivery::for_pool(&pools, PoolAlias::Expiry).unwrap();
        let indexed = delivery.index(&raw).await.unwrap();
        assert_eq!(indexed, raw.len() as u64, "every raw key indexed");
        let index = delivery.space_of(&keys[0]).due("acme");
        for (what, keys) in [("armed by the library", &keys), ("indexed", &raw)] {
            let mut off = Vec::new();
            for key in keys.iter() {
                let expiry: i64 = redis::cmd("PEXPIRETIME").arg(key).query(&mut db8).unwrap();
                let due: Option<i64> = db8.zscore(&index, key).unwrap();
                if due != Some(expiry) {
                    off.push(format!("{key}: expires {expiry}, due {due:?}"));
                }
            }
            assert!(
                off.is_empty(),
                "{what}: {} of {} keys are due at another time than they expire, e.g. {:?}",
                off.len(),
                keys.len(),
                &off[..off.len().min(3)]
            );
        }
    });
    println!("{n} armed and {n} indexed triggers: each due exactly when its key expires");
}

/// These tests run on a standalone server and on a 3-primary cluster.
mod standalone {
    #[test]
    fn cancelled_triggers_never_run() {
        super::cancelled_triggers_never_run(false)
    }
    #[test]
    fn index_entries_are_due_exactly_when_their_keys_expire() {
        super::index_entries_are_due_exactly_when_their_keys_expire(false)
    }
    #[test]
    fn failing_handlers_are_retried_then_dead_lettered_and_managed_from_the_cli() {
        super::failing_handlers_are_retried_then_dead_lettered_and_managed_from_the_cli(false)
    }
}

mod cluster {
    #[test]
    fn cancelled_triggers_never_run() {
        super::cancelled_triggers_never_run(true)
    }
    #[test]
    fn index_entries_are_due_exactly_when_their_keys_expire() {
        super::index_entries_are_due_exactly_when_their_keys_expire(true)
    }
    #[test]
    fn failing_handlers_are_retried_then_dead_lettered_and_managed_from_the_cli() {
        super::failing_handlers_are_retried_then_dead_lettered_and_managed_from_the_cli(true)
    }
}

/// Found by an attack: a trigger whose key expired while no host ran is
/// still cancelled by our API (its entry is removed, it never runs), and
/// the cancel says it removed it (it said "no pending trigger").
#[test]
fn a_cancel_after_the_key_expired_unseen_cancels_and_says_so() {
    let redis = RedisServer::start();
    arm(
        &redis,
        &[("acme".into(), "ver_late".into(), "1".into(), 100)],
    );
    let mut db8 = redis.conn(8);
    eventually(WAIT, "the key to expire", || {
        match db8.exists::<_, bool>("acme:EXPTRIGGER:ver_late:1").unwrap() {
            false => Ok(()),
            true => Err("it still exists".into()),
        }
    });
    let removed = std::cell::Cell::new(false);
    let out = &removed;
    with_pools(&redis, |pools| async move {
        let repo = symphony_host::repo::TriggerRepo::new(&pools, "acme").unwrap();
        out.set(repo.delete("ver_late", "1").await.unwrap());
    });
    assert!(removed.get(), "the cancel removed the entry, and says so");
    let mut host = Host::start(&redis, &counter());
    arm(
        &redis,
        &[("acme".into(), "ver_late".into(), "after".into(), 200)],
    );
    host.wait_for("a trigger armed after the cancel", WAIT, |e| {
        is_dispatch(e, "ver_late", "after")
    });
    assert!(host.events(|e| is_dispatch(e, "ver_late", "1")).is_empty());
}

/// Tests with a wall-clock bound: `scripts/test.sh` runs them apart from
/// the parallel suite, one at a time (`timing::`).
mod timing {
    use super::*;

    #[test]
    fn lateness_at_200_per_second() {
        let redis = RedisServer::start();
        let host = Host::start(&redis, &counter());
        let n = 1000;
        arm(&redis, &spread("ver_late", n, 1000, 5000));
        wait_dispatched(&[&host], "ver_late", n, Duration::from_secs(30));
        let mut late: Vec<i64> = host
            .events(|e| e["event"] == "dispatch" && e["action"] == "ver_late")
            .iter()
            .filter_map(|e| e["late_us"].as_i64())
            .collect();
        late.sort_unstable();
        let p = |q: f64| late[((late.len() as f64 * q) as usize).min(late.len() - 1)];
        println!(
            "lateness at 200/s ({n} triggers): p50 {} µs, p99 {} µs, max {} µs (from the due time to the handler's start)",
            p(0.5),
            p(0.99),
            late.last().unwrap()
        );
        assert!(p(0.99) < 100_000, "p99 lateness {} µs", p(0.99));
    }

    /// Entries an earlier version left in its single index, `symphony:due`
    /// (one due already, one not yet, one a pending retry), are moved to their
    /// tenants' indexes by the next host, and each runs once, on time.
    #[test]
    fn entries_of_the_old_single_index_are_migrated_and_run_once() {
        let redis = RedisServer::start();
        let mut db8 = redis.conn(8);
        let t: Vec<i64> = redis::cmd("TIME").query(&mut db8).unwrap();
        let now_ms = t[0] * 1000 + t[1] / 1000;
        // As the old arming script left them: the key with its TTL, its entry.
        let _: () = db8.set_ex("acme:EXPTRIGGER:ver_old:soon", "", 2).unwrap();
        let _: () = db8
            .zadd(
                "symphony:due",
                "acme:EXPTRIGGER:ver_old:soon",
                now_ms + 2000,
            )
            .unwrap();
        let _: () = db8
            .zadd(
                "symphony:due",
                "globex:EXPTRIGGER:ver_old:past",
                now_ms - 500,
            )
            .unwrap();
        let _: () = db8
            .zadd(
                "symphony:due",
                "globex:EXPTRIGGER:ver_old:retry\0r1",
                now_ms - 100,
            )
            .unwrap();
        let mut host = Host::start(&redis, &counter());
        let runs = host.wait_for_n("the three old entries", Duration::from_secs(10), 3, |e| {
            e["event"] == "dispatch" && e["action"] == "ver_old"
        });
        let mut ran: Vec<String> = runs
            .iter()
            .map(|e| {
                format!(
                    "{}/{}",
                    e["tenant"].as_str().unwrap(),
                    e["id"].as_str().unwrap()
                )
            })
            .collect();
        ran.sort();
        assert_eq!(ran, ["acme/soon", "globex/past", "globex/retry"]);
        let soon = runs.iter().find(|e| e["id"] == "soon").unwrap();
        assert!(
            soon["late_us"].as_i64().unwrap() < 100_000,
            "the migrated entry ran late: {soon}"
        );
        assert_eq!(db8.zcard::<_, u64>("symphony:due").unwrap(), 0);
        // Nothing runs twice afterwards.
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(
            host.events(|e| e["event"] == "dispatch" && e["action"] == "ver_old")
                .len(),
            3
        );
    }
}
