//! Per-tenant Redis memory budgets (`[tenants."name"] max_memory_kib`): a
//! tenant that stores without end is stopped at its budget with a `quota`
//! error, so with `maxmemory` above the sum of the budgets another
//! tenant's application and jobs never see `OOM`.

use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::Value;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(30);

fn used_memory(redis: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut redis.conn(0))
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO memory gives used_memory")
}

/// How many values an `h_fill` run stored, and the error that stopped it.
fn filled(e: &Value) -> (u32, String) {
    let error = e["error"].as_str().unwrap_or_default().to_owned();
    let stored = error
        .strip_prefix("stored ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an h_fill error: {e}"));
    (stored, error)
}

/// Arms `h_fill` for `tenant` with `id` and waits for its end.
fn fill(host: &mut Host, redis: &RedisServer, tenant: &str, id: &str) -> (u32, String) {
    let key = format!("{tenant}:EXPTRIGGER:h_fill:{id}");
    set_expiring(&mut redis.conn(8), key.as_bytes(), 20);
    let e = host.wait_for(&format!("{tenant}'s fill {id}"), WAIT, |e| {
        is_dispatch(e, "h_fill", id)
    });
    assert_eq!(e["outcome"], "error", "{e}");
    filled(&e)
}

fn delete_all(redis: &RedisServer, pattern: &str) {
    for db in 0..16 {
        let mut conn = redis.conn(db);
        let keys: Vec<String> = conn.keys(pattern).unwrap();
        if !keys.is_empty() {
            let _: u64 = conn.del(keys).unwrap();
        }
    }
}

#[test]
fn a_tenant_at_its_memory_budget_cannot_make_another_run_out_of_memory() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let plugins = plugin_entry_with(
        "hostile",
        "hostile",
        &["h_"],
        "tenants = [\"*\"]\ncapabilities = [\"generic\"]\n[plugin.retry]\nmax_attempts = 1",
    );
    let mut host = Host::start_with(&redis, &plugins, "[tenants.\"*\"]\nmax_memory_kib = 1024");
    // Room for both tenants' budgets (1 MiB each), and 2 MiB to spare.
    let limit = used_memory(&redis) + (4 << 20);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(limit)
        .query(&mut redis.conn(0))
        .unwrap();

    let (stored, error) = fill(&mut host, &redis, "hog", "1");
    assert!(
        error.contains("quota") && error.contains("max_memory_kib") && !error.contains("OOM"),
        "the hog was not stopped by its budget: {error}"
    );
    assert!(stored >= 30, "stopped early, at {stored} values: {error}");
    println!("the hog stored {stored} values of 16 KiB, then: {error}");

    // The other tenant's application and job still write.
    let blob = "a".repeat(256 << 10);
    let set: redis::RedisResult<()> = redis.conn(0).set_ex("other:app:blob", &blob, 300);
    assert!(set.is_ok(), "the other tenant's SETEX failed: {set:?}");
    let (stored, error) = fill(&mut host, &redis, "other", "2");
    assert!(
        error.contains("quota") && !error.contains("OOM"),
        "the other tenant's job met: {error}"
    );
    assert!(
        stored >= 20,
        "the other tenant stored only {stored}: {error}"
    );
    let used = used_memory(&redis);
    println!("the other tenant stored {stored}; used_memory {used} of maxmemory {limit}");
    assert!(used < limit, "used_memory {used} reached maxmemory {limit}");

    // Deleting frees the budget: once a walk has measured it, the hog
    // stores again.
    delete_all(&redis, "hog:*");
    let deadline = Instant::now() + WAIT;
    let mut id = 3;
    loop {
        let (stored, error) = fill(&mut host, &redis, "hog", &id.to_string());
        if stored >= 30 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hog's budget was not freed: {error}"
        );
        id += 1;
    }
    assert!(
        host.log().contains("max_memory_kib"),
        "the refusal was not logged"
    );
}

/// A list is measured whole: five small items first, then items of 200 KiB
/// one per job (`MEMORY USAGE` samples a list's first five nodes by
/// default, and this list once read as a fiftieth of its size, so it grew
/// a budget every walk).
#[test]
fn a_list_with_small_first_items_is_measured_whole() {
    let mut d = crate::repos::Driver::start_with("[tenants.\"*\"]\nmax_memory_kib = 1024");
    let small = "p".repeat(5000);
    let calls: Vec<Value> = (0..5)
        .map(|_| serde_json::json!(["batch.enqueue", "s", "e", "a", small]))
        .collect();
    d.run("evil", Value::Array(calls));
    let big = "B".repeat(200 << 10);
    let script = serde_json::json!([["batch.enqueue", "s", "e", "a", big]]);
    let (mut accepted, mut refused) = (0, 0);
    // Three walks' time (a walk every 2 s). The driver stores its result
    // too, so a refused enqueue (or result) ends the job with an error.
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        let (n, e) = d.dispatch("evil", &script);
        // The driver's own script (200 KiB of it) is not the list's.
        let _: u64 = d
            .redis
            .db(15)
            .del(&[format!("evil:script:{n}"), format!("evil:result:{n}")])
            .unwrap();
        if e["outcome"] == "ok" {
            accepted += 1;
        } else {
            assert!(
                e["error"].as_str().is_some_and(|m| m.contains("quota")),
                "{e}"
            );
            refused += 1;
        }
    }
    let size: u64 = (0..16)
        .find_map(|db| {
            redis::cmd("MEMORY")
                .arg("USAGE")
                .arg("evil:batch:s:e:a")
                .arg("SAMPLES")
                .arg(0)
                .query::<Option<u64>>(&mut d.redis.db(db))
                .ok()
                .flatten()
        })
        .expect("the list exists");
    println!(
        "{accepted} items of 200 KiB accepted, {refused} refused; the list takes {size} bytes"
    );
    assert!(refused > 0, "nothing was refused ({accepted} accepted)");
    assert!(
        size < 1_700_000,
        "the list grew to {size} bytes under a 1 MiB budget ({accepted} items accepted)"
    );
}

/// What the host keeps for a budgeted tenant's failing firings between
/// attempts counts against the budget, and is small: 600 firings failing
/// with 16 KiB errors, waiting for a retry, once held 9.6 MiB of retry
/// metadata under a 1 MiB budget (and another tenant's `SETEX` met `OOM`).
/// The error kept is cut to 1 KiB, and the tenant's own writes are refused
/// once the metadata and its keys fill its budget.
#[test]
fn a_tenants_retry_metadata_is_capped_and_counted() {
    let redis = RedisServer::start();
    let plugins = plugin_entry_with(
        "hostile",
        "hostile",
        &["h_"],
        "tenants = [\"*\"]\ncapabilities = [\"generic\"]\n\
         [plugin.retry]\nmax_attempts = 3\nbackoff = \"10m\"\nmax_backoff = \"10m\"",
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &plugins,
        "[tenants.\"*\"]\nmax_memory_kib = 1024",
    );
    let filter = "info,symphony::budget=debug";
    let mut host = Host::spawn_logging(&manifest, &redis, dir, filter);
    host.wait_for("the listener", WAIT, |e| e["event"] == "listening");
    let n = 600;
    let triggers: Vec<_> = (0..n)
        .map(|i| ("evil".to_owned(), "h_err16k".to_owned(), i.to_string(), 20))
        .collect();
    arm(&redis, &triggers);
    host.wait_for_n("the failing firings", WAIT, n, |e| {
        e["event"] == "dispatch" && e["action"] == "h_err16k"
    });
    // Every failure is in the retry metadata (field: the firing's member).
    let bytes = eventually(WAIT, &format!("{n} retries recorded"), || {
        let meta: Vec<(Vec<u8>, Vec<u8>)> = redis.conn(8).hgetall("symphony:meta").unwrap();
        let bytes: usize = meta.iter().map(|(f, v)| f.len() + v.len()).sum();
        match meta.len() >= n {
            true => Ok(bytes),
            false => Err(format!("{} recorded", meta.len())),
        }
    });
    println!("{n} failing firings keep {bytes} bytes of retry metadata");
    assert!(
        bytes < n * 1400,
        "{bytes} bytes of retry metadata for {n} firings"
    );
    // Once a walk has counted the metadata (about 700 KiB: two walks
    // ended since it was all there), the tenant's own writes fill only
    // what is left of its 1 MiB.
    let walks = host.events(|e| e["event"] == "memory_measured").len();
    host.wait_for_n("two walks", WAIT, walks + 2, |e| {
        e["event"] == "memory_measured"
    });
    let (stored, error) = fill(&mut host, &redis, "evil", "f");
    println!(
        "with its retry metadata counted, the tenant stored {stored} values of 16 KiB: {error}"
    );
    assert!(error.contains("quota"), "{error}");
    assert!(
        stored <= 25,
        "the retry metadata is not counted: the tenant stored {stored} values of 16 KiB"
    );
}

/// A write is charged for what Redis makes of it: an upsert of a wide
/// object becomes a hash table of 5 to 7 KB for 1.2 KB of arguments, and
/// 400 of them in one job, each charged at its arguments, took a tenant to
/// 1.8 times its 1 MiB budget before a walk could see it (and another
/// tenant's `SET` met `OOM`). Each field is charged now.
#[test]
fn wide_hashes_are_charged_for_their_fields() {
    let mut d = crate::repos::Driver::start_with("[tenants.\"*\"]\nmax_memory_kib = 1024");
    let mut wide: serde_json::Map<String, Value> = (0..130)
        .map(|i| (format!("f{i}"), Value::from(i)))
        .collect();
    // One value over 64 bytes: Redis keeps the hash as a hash table.
    wide.insert("long".to_owned(), Value::from("L".repeat(70)));
    let calls: Vec<Value> = (0..400)
        .map(|i| serde_json::json!(["user.upsert", format!("u{i}"), wide, null]))
        .collect();
    let (_, e) = d.dispatch("evil", &Value::Array(calls));
    // What the job stored (the driver's script, 520 KB, is the test's).
    let taken: u64 = (0..16)
        .map(|db| {
            let mut conn = d.redis.db(db);
            let keys: Vec<String> = conn.keys("evil:*").unwrap();
            let keys: Vec<&String> = keys.iter().filter(|k| !k.contains(":script:")).collect();
            keys.iter()
                .map(|k| {
                    redis::cmd("MEMORY")
                        .arg("USAGE")
                        .arg(k)
                        .arg("SAMPLES")
                        .arg(0)
                        .query::<Option<u64>>(&mut conn)
                        .unwrap()
                        .unwrap_or(0)
                })
                .sum::<u64>()
        })
        .sum();
    let stored = e["error"].as_str().unwrap_or_default();
    println!(
        "400 wide upserts under a 1 MiB budget: the job's keys take {taken} bytes; {stored:.300}"
    );
    assert!(
        taken < 1_100_000,
        "the job's keys take {taken} bytes under a 1 MiB budget"
    );
}
