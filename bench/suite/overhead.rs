//! Section 1, `overhead`: in process, through the host library, what one
//! job costs: a fresh instance (or a warm one), `on-expire`, and one host
//! call that does not reach Redis; then the same with one Redis write. Per
//! language.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use symphony_host::plugins::PluginSet;
use symphony_host::runtime::{Job, Outcome, Runtime};

use crate::common::{Report, Sizes, manifest_runtime, quantile, runtime};
use crate::support::{RedisServer, plugin, plugin_entry_with, write_manifest};

/// Times `n` invocations of `action`; returns sorted µs.
async fn time_invocations(
    runtime: &Runtime,
    set: &PluginSet,
    plugin: &str,
    action: &str,
    n: usize,
) -> Vec<u64> {
    let loaded = set
        .plugins()
        .iter()
        .find(|p| p.name().as_str() == plugin)
        .unwrap()
        .clone();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let id = i.to_string();
        let job = Arc::new(Job {
            tenant: "bench".into(),
            key: symphony_host::keys::trigger_key("bench", action, &id).unwrap(),
            action: action.into(),
            id,
            plugin: loaded.name().clone(),
            generation: 0,
        });
        let start = Instant::now();
        let outcome = runtime.invoke(&loaded, job).await;
        times.push(u64::try_from(start.elapsed().as_micros()).unwrap());
        assert_eq!(outcome, Outcome::Ok, "{plugin} {action} failed");
    }
    times.sort_unstable();
    times
}

/// Section 1: one row per language whose plugin is built.
pub(crate) fn run(sizes: Sizes, report: &mut Report) {
    println!("## 1. Plugin overhead, in process (µs per job)\n");
    println!(
        "A job: a Store and instance (fresh from the `InstancePre`, or warm with \
         `reuse_instances`), `on-expire`, one host call. `one call` asks the host \
         for the tenant (no Redis); `write` sets one generic key in Redis.\n"
    );
    println!(
        "| language | jobs | fresh, one call p50 / p99 | warm, one call p50 / p99 | fresh, write p50 / p99 |"
    );
    println!("| --- | --- | --- | --- | --- |");
    let redis = RedisServer::start();
    let rt = runtime();
    let _enter = rt.enter();
    for (language, wasm) in [
        ("Rust", "poly"),
        ("JavaScript", "poly-js"),
        ("Go", "poly-go"),
    ] {
        let path = plugin(wasm);
        if !Path::new(&path).exists() {
            println!("| {language} | not built ({path}) | | | |");
            continue;
        }
        language_row(sizes, &rt, &redis, language, wasm, report);
    }
    println!();
}

/// The row of one language (plugin `wasm`), within `rt`: a fresh plugin
/// and a warm one (`reuse_instances`) on `redis`, timed in process.
fn language_row(
    sizes: Sizes,
    rt: &tokio::runtime::Runtime,
    redis: &RedisServer,
    language: &str,
    wasm: &str,
    report: &mut Report,
) {
    let dir = tempfile::tempdir().unwrap();
    let common = "tenants = [\"*\"]\ncapabilities = [\"generic\"]\n";
    let plugins = format!(
        "{}{}",
        plugin_entry_with("fresh", wasm, &["poly_"], common),
        plugin_entry_with(
            "warm",
            wasm,
            &["warm_"],
            &format!("{common}reuse_instances = 1000000\n")
        ),
    );
    let (manifest, runtime) = manifest_runtime(&write_manifest(dir.path(), &plugins, ""), redis);
    let set = PluginSet::load(&runtime, &manifest, 0).unwrap();
    let n = if language == "Rust" {
        sizes.overhead_rust
    } else {
        sizes.overhead_other
    };
    let (fresh, warm, write) = rt.block_on(async {
        // Warm up the code paths (and the pooling allocator's slots).
        time_invocations(&runtime, &set, "fresh", "poly_one", n / 10 + 1).await;
        let fresh = time_invocations(&runtime, &set, "fresh", "poly_one", n).await;
        let warm = time_invocations(&runtime, &set, "warm", "poly_one", n * 5).await;
        let write = time_invocations(&runtime, &set, "fresh", "poly_write", n).await;
        (fresh, warm, write)
    });
    let p = |v: &[u64]| format!("{} / {}", quantile(v, 0.5), quantile(v, 0.99));
    println!(
        "| {language} | {n} | {} | {} | {} |",
        p(&fresh),
        p(&warm),
        p(&write)
    );
    let p50 = quantile(&fresh, 0.5);
    let target = if language == "Rust" { 20 } else { 100 };
    report.check(
        &format!("{language}: fresh instance + on-expire + one host call, p50"),
        format!("{p50} µs"),
        &format!("≤ {target} µs"),
        p50 <= target,
    );
}
