//! Hot reload: plugins and the manifest swap live, the listener stays.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);

fn versioned_entry(path: &Path, extra: &str) -> String {
    format!(
        "[[plugin]]\nname = \"versioned\"\npath = {:?}\nactions = [\"ver_\"]\ntenants = [\"*\"]\n{extra}\n",
        path.display().to_string()
    )
}

/// The pub/sub connection ids on the server (the listener's).
fn pubsub_clients(redis: &RedisServer) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut redis.conn(0))
        .unwrap();
    list.lines()
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .map(str::to_owned)
        })
        .collect()
}

fn reloaded(host: &mut Host, generation: u64) -> Value {
    host.wait_for(&format!("generation {generation}"), WAIT, |e| {
        e["event"] == "reloaded" && e["generation"] == generation
    })
}

#[test]
fn plugins_swap_under_load_each_trigger_once_on_the_live_version() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("versioned.wasm");
    let v1 = plugins_dir().join("versioned-v1.wasm");
    let v2 = plugins_dir().join("versioned-v2.wasm");
    std::fs::copy(&v1, &live).unwrap();
    let mut host = Host::start_in(dir, &redis, &versioned_entry(&live, ""), "concurrency = 16");
    let listener_before = pubsub_clients(&redis);
    assert_eq!(listener_before.len(), 1);

    // 1000 triggers due over 5 s, starting in 0.5 s.
    let n = 1000;
    let mut pipe = redis::pipe();
    pipe.cmd("SELECT").arg(8).ignore();
    for i in 0..n {
        pipe.cmd("SET")
            .arg(format!("acme:EXPTRIGGER:ver_job:{i}"))
            .arg("")
            .arg("PX")
            .arg(500 + i * 5)
            .ignore();
    }
    let _: () = pipe.query(&mut redis.conn(8)).unwrap();

    // v1 -> v2 three times (with v1 back in between), then a broken file.
    let mut expected: HashMap<u64, &str> = HashMap::from([(0, "v1")]);
    let mut live_after_write = Vec::new();
    let steps = [
        (&v2, "v2"),
        (&v1, "v1"),
        (&v2, "v2"),
        (&v1, "v1"),
        (&v2, "v2"),
    ];
    for (generation, (source, version)) in (1u64..).zip(steps) {
        std::thread::sleep(Duration::from_millis(700));
        let written = Instant::now();
        std::fs::copy(source, &live).unwrap();
        reloaded(&mut host, generation);
        let took = written.elapsed();
        expected.insert(generation, version);
        if version == "v2" {
            live_after_write.push(took.as_millis());
            assert!(
                took < Duration::from_millis(500),
                "v2 live {took:?} after the write"
            );
        }
    }
    // Past the watcher's debounce: this write is a change of its own.
    std::thread::sleep(symphony_host::reload::DEBOUNCE * 3);
    std::fs::write(&live, b"\0asm\x0d\0\x01\0 this is not a component").unwrap();
    let rejected = host.wait_for("the broken file's rejection", WAIT, |e| {
        e["event"] == "reload_rejected"
    });
    assert!(
        rejected["error"]
            .as_str()
            .unwrap()
            .contains("plugin versioned"),
        "{rejected}"
    );

    let dispatches = host.wait_for_n("every trigger", Duration::from_secs(60), n as usize, |e| {
        e["event"] == "dispatch" && e["action"] == "ver_job"
    });
    // Exactly once each, ok, on the version of the generation it ran in.
    let mut seen: HashMap<String, u64> = HashMap::new();
    for e in &dispatches {
        assert_eq!(e["outcome"], "ok", "{e}");
        let id = e["id"].as_str().unwrap().to_owned();
        assert!(
            seen.insert(id.clone(), e["generation"].as_u64().unwrap())
                .is_none(),
            "{id} ran twice"
        );
    }
    assert_eq!(seen.len(), n as usize);
    let ran: HashMap<String, String> = host
        .events(|e| {
            e["action"] == "ver_job"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("running "))
        })
        .into_iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["message"].as_str().unwrap()[8..].to_owned(),
            )
        })
        .collect();
    let mut per_generation: HashMap<u64, usize> = HashMap::new();
    for (id, generation) in &seen {
        assert_eq!(
            ran[id], expected[generation],
            "{id} ran generation {generation}"
        );
        *per_generation.entry(*generation).or_default() += 1;
    }
    // After the broken file, generation 5 (v2) kept serving.
    assert!(per_generation.contains_key(&5), "{per_generation:?}");
    let mut counts: Vec<_> = per_generation.into_iter().collect();
    counts.sort_unstable();

    // The listener was never touched.
    assert_eq!(
        pubsub_clients(&redis),
        listener_before,
        "the subscription was replaced"
    );
    let subscribed = host.events(|e| e["event"] == "listening");
    assert_eq!(subscribed.len(), 1, "resubscribed during reloads");
    println!(
        "v2 live after the write: {live_after_write:?} ms; dispatches per generation: {counts:?}"
    );
}

#[test]
fn plugins_and_prefixes_come_and_go_and_a_bad_manifest_is_rejected() {
    let redis = RedisServer::start();
    let a = plugin_entry_with(
        "a",
        "recorder",
        &["rec_a"],
        "tenants = [\"*\"]\ncapabilities = [\"trigger\"]",
    );
    let mut host = Host::start(&redis, &a);
    let manifest = host.dir().join("manifest.toml");
    let cache = root().join("target/test-wasm-cache");
    let write = |plugins: &str, extra: &str| {
        let text = format!(
            "[runtime]\ncache_dir = {:?}\ntimeout = \"2s\"\nshutdown_grace = \"10s\"\n{extra}\n{plugins}",
            cache.display().to_string()
        );
        std::fs::write(&manifest, text).unwrap();
    };
    let mut db8 = redis.conn(8);
    let fire = |db8: &mut redis::Connection, action: &str, id: &str| {
        set_expiring(db8, format!("t:EXPTRIGGER:{action}:{id}").as_bytes(), 20);
    };

    // Add a plugin and a prefix.
    let b = plugin_entry_with(
        "b",
        "recorder",
        &["rec_b", "rec_c"],
        "tenants = [\"*\"]\ncapabilities = [\"trigger\"]",
    );
    write(&format!("{a}{b}"), "");
    reloaded(&mut host, 1);
    fire(&mut db8, "rec_b", "1");
    fire(&mut db8, "rec_c", "1");
    assert_eq!(
        host.wait_for("rec_b", WAIT, |e| is_dispatch(e, "rec_b", "1"))["plugin"],
        "b"
    );
    assert_eq!(
        host.wait_for("rec_c", WAIT, |e| is_dispatch(e, "rec_c", "1"))["plugin"],
        "b"
    );

    // Remove a prefix, then the plugin.
    let b_less = plugin_entry_with(
        "b",
        "recorder",
        &["rec_b"],
        "tenants = [\"*\"]\ncapabilities = [\"trigger\"]",
    );
    write(&format!("{a}{b_less}"), "");
    reloaded(&mut host, 2);
    fire(&mut db8, "rec_c", "2");
    host.wait_for("rec_c unrouted", WAIT, |e| {
        e["event"] == "unrouted" && e["action"] == "rec_c"
    });
    write(&a, "");
    reloaded(&mut host, 3);
    fire(&mut db8, "rec_b", "3");
    // (Unrouted lines are throttled; the totals at the end count this one.)
    fire(&mut db8, "rec_a", "3");
    host.wait_for("rec_a after removing b", WAIT, |e| {
        is_dispatch(e, "rec_a", "3")
    });

    // Invalid TOML: rejected with its position; the old set keeps serving.
    std::fs::write(&manifest, "[[plugin]\nname = \"a\"\n").unwrap();
    let e = host.wait_for("the TOML rejection", WAIT, |e| {
        e["event"] == "reload_rejected"
    });
    let err = e["error"].as_str().unwrap();
    assert!(err.contains("manifest.toml:1:"), "{err}");
    fire(&mut db8, "rec_a", "4");
    assert_eq!(
        host.wait_for("rec_a on the old set", WAIT, |e| is_dispatch(
            e, "rec_a", "4"
        ))["generation"],
        3
    );

    // A change that needs a restart is refused, clearly.
    write(&a, "concurrency = 3");
    let e = host.wait_for("the restart-only rejection", WAIT, |e| {
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("[runtime] changed, which needs a restart"))
    });
    assert_eq!(
        e["message"],
        "reload rejected; the previous plugins keep serving"
    );

    // And back: valid again, through the CLI (SIGHUP) this time.
    write(&a, "");
    // Past the watcher's debounce: the write's own reload comes first.
    std::thread::sleep(symphony_host::reload::DEBOUNCE * 3);
    run_ok(host_cmd().arg("reload").arg(&manifest));
    host.wait_for("the SIGHUP reload", WAIT, |e| {
        e["event"] == "reloaded" && e["reason"] == "SIGHUP"
    });
    fire(&mut db8, "rec_a", "5");
    assert_eq!(
        host.wait_for("rec_a", WAIT, |e| is_dispatch(e, "rec_a", "5"))["outcome"],
        "ok"
    );

    // Wait until rec_b:3 has expired (and was heard), then count.
    eventually(
        WAIT,
        "rec_b:3 to expire",
        || match redis::Commands::exists::<_, bool>(&mut db8, "t:EXPTRIGGER:rec_b:3").unwrap() {
            false => Ok(()),
            true => Err("it still exists".into()),
        },
    );
    // Heard and finished unrun: out of the index, no lease left.
    wait_settled(&redis, "t", WAIT);
    assert!(host.terminate(WAIT).success());
    let totals = host.wait_for("the totals", WAIT, |e| e["event"] == "dispatch_totals");
    assert_eq!(totals["unrouted"], 2, "rec_c:2 and rec_b:3: {totals}");
    assert!(host.events(|e| is_dispatch(e, "rec_b", "3")).is_empty());
}
