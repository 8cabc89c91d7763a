//! One behavioural plugin written in Rust, JavaScript and Go: the same
//! inputs leave the same Redis effects, and the sandbox holds for each.
//! Prints each language's component size, compile time and per-dispatch
//! time with a fresh instance per job and with warm instances.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Commands;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(60);

struct Run {
    user: BTreeMap<String, String>,
    last: String,
    compile_ms: u64,
    fresh_us: u64,
    warm_us: u64,
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn entry(wasm: &str, extra: &str) -> String {
    plugin_entry_with(
        "poly",
        wasm,
        &["poly_"],
        &format!(
            "tenants = [\"*\"]\ncapabilities = [\"user\", \"generic\"]\n{extra}\n\
             [plugin.limits]\ntimeout = \"2s\"\n[plugin.retry]\nmax_attempts = 1"
        ),
    )
}

/// Fires the same triggers at one language's plugin and collects the effects.
fn run(wasm: &str) -> Run {
    let redis = RedisServer::start();
    // A cache of its own, so the first load shows the real compile time.
    let cache = tempfile::tempdir().unwrap();
    let extra = format!("cache_dir = {:?}", cache.path().display().to_string());
    // A host on this plugin (with `plugin_extra` in its entry), with that cache.
    let spawn = |plugin_extra: &str| {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("manifest.toml");
        std::fs::write(
            &manifest,
            format!(
                "[runtime]\n{extra}\nshutdown_grace = \"10s\"\n{}",
                entry(wasm, plugin_extra)
            ),
        )
        .unwrap();
        Host::spawn(&manifest, &redis, dir)
    };
    let mut host = spawn("");
    let loaded = host.wait_for("the plugin to load", WAIT, |e| {
        e["event"] == "plugin_loaded"
    });
    host.wait_for("the listener", WAIT, |e| e["event"] == "listening");
    let mut db8 = redis.conn(8);
    let mut fire = |host: &mut Host, action: &str, id: &str| -> serde_json::Value {
        set_expiring(
            &mut db8,
            format!("acme:EXPTRIGGER:{action}:{id}").as_bytes(),
            20,
        );
        host.wait_for(action, WAIT, |e| is_dispatch(e, action, id))
    };
    assert_eq!(
        fire(&mut host, "poly_hello", "u1")["outcome"],
        "ok",
        "{wasm}"
    );
    assert_eq!(
        fire(&mut host, "poly_again", "u1")["outcome"],
        "ok",
        "{wasm}"
    );
    let failed = fire(&mut host, "poly_fail", "u1");
    assert_eq!(failed["outcome"], "error", "{wasm}: {failed}");
    assert_eq!(failed["error"], "poly failed", "{wasm}");
    let spun = fire(&mut host, "poly_spin", "u1");
    assert_eq!(
        spun["outcome"], "timeout",
        "{wasm}: an infinite loop must be stopped: {spun}"
    );
    // Per-dispatch time with a fresh instance each.
    let fresh: Vec<u64> = (0..20)
        .map(|i| {
            fire(&mut host, "poly_time", &format!("t{i}"))["duration_us"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let user: BTreeMap<String, String> = redis.conn(11).hgetall("acme:user:u1").unwrap();
    let last: String = redis.conn(15).get("acme:last:u1").unwrap();
    drop(host);

    // The same plugin with warm instances, from the cache the first host
    // filled (compiling a 12 MB JavaScript component again, under the
    // suite's load, once took longer than the start's 20 s wait).
    let mut warm_host = spawn("reuse_instances = 100");
    warm_host.wait_for("the warm host's listener", WAIT, |e| {
        e["event"] == "listening"
    });
    let mut db8 = redis.conn(8);
    let warm: Vec<u64> = (0..20)
        .map(|i| {
            set_expiring(&mut db8, format!("acme:EXPTRIGGER:poly_warm:w{i}").as_bytes(), 20);
            let id = format!("w{i}");
            warm_host.wait_for("a warm run", WAIT, |e| is_dispatch(e, "poly_warm", &id))["duration_us"]
                .as_u64()
                .unwrap()
        })
        .collect();
    Run {
        user,
        last,
        compile_ms: loaded["load_ms"].as_u64().unwrap(),
        fresh_us: median(fresh),
        warm_us: median(warm[1..].to_vec()),
    }
}

#[test]
fn one_plugin_in_rust_javascript_and_go_leaves_the_same_effects() {
    let langs = [
        ("Rust", "poly"),
        ("JavaScript", "poly-js"),
        ("Go", "poly-go"),
    ];
    let runs: Vec<(&str, &str, Run)> = langs.iter().map(|(l, w)| (*l, *w, run(w))).collect();
    let (_, _, rust) = &runs[0];
    assert_eq!(rust.user["visits"], "2");
    assert_eq!(rust.user["history"], r#"["poly_hello", "poly_again"]"#);
    assert_eq!(
        rust.last,
        r#"{"action": "poly_again", "tenant": "acme", "visits": 2}"#
    );
    for (lang, _, r) in &runs[1..] {
        assert_eq!(r.user, rust.user, "{lang}: user record differs from Rust's");
        assert_eq!(
            r.last, rust.last,
            "{lang}: generic value differs from Rust's"
        );
    }
    for (lang, wasm, r) in &runs {
        let size = std::fs::metadata(plugin(wasm)).unwrap().len();
        println!(
            "{lang}: component {:.1} MB, compiled in {} ms, per dispatch (instantiate + on-expire + 3 host calls) {} µs fresh, {} µs warm",
            size as f64 / 1e6,
            r.compile_ms,
            r.fresh_us,
            r.warm_us
        );
    }
}
