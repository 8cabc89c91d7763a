//! Section 6, `rss`: host RSS idle with 10 plugins loaded (the burst
//! reports its peak); each language's plugin loaded from the compile
//! cache; 1000 Rust plugins (a tenant each): load time, RSS, routing cost.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use symphony_host::plugins::PluginSet;

use crate::common::{Report, Sizes, manifest_runtime, runtime};
use crate::measure::rss_mib;
use crate::support::{Host, RedisServer, host_cmd, plugin, root, run_ok, write_manifest};

/// Section 6: the host's RSS idle, with 10 Rust plugins and (when the
/// examples are built) with a JavaScript and a Go one among them.
pub(crate) fn idle(report: &mut Report) {
    println!("## 6. Host RSS idle\n");
    println!("Loaded from the compile cache; RSS read 1 s after the host listens.\n");
    println!("| plugins loaded | RSS idle |\n| --- | --- |");
    let redis = RedisServer::start();
    for (label, paths) in plugin_sets() {
        idle_row(&redis, label, &paths, report);
    }
    println!();
}

/// The plugin sets of section 6: a label and the components' paths.
fn plugin_sets() -> Vec<(&'static str, Vec<String>)> {
    let rust = [
        "poly",
        "recorder",
        "driver",
        "hostile",
        "versioned-v1",
        "versioned-v2",
    ];
    let examples = root().join("plugins-example/plugins");
    let example = |name: &str| examples.join(format!("{name}.wasm")).display().to_string();
    let mut sets: Vec<(&str, Vec<String>)> = vec![(
        "10 Rust plugins",
        rust.iter()
            .map(|p| plugin(p))
            .chain(["reminder", "audit", "batcher", "reminder"].map(example))
            .collect(),
    )];
    let polyglot = ["welcome-js", "counter-go"].map(example);
    if polyglot.iter().all(|p| Path::new(p).exists()) {
        sets.push((
            "8 Rust, 1 JavaScript, 1 Go",
            rust.iter()
                .map(|p| plugin(p))
                .chain(["reminder", "audit"].map(example))
                .chain(polyglot)
                .collect(),
        ));
    }
    sets
}

/// One row of section 6: a host on `paths` (compiled into the cache
/// first), its RSS 1 s after it listens, against the target.
fn idle_row(redis: &RedisServer, label: &str, paths: &[String], report: &mut Report) {
    let mut entries = String::new();
    for (i, path) in paths.iter().enumerate() {
        write!(
            entries,
            "[[plugin]]\nname = \"p{i}\"\npath = {path:?}\nactions = [\"a{i}_\"]\ntenants = [\"*\"]\n\n"
        )
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), &entries, "");
    // Compile into the cache first: a host that compiles at start keeps
    // the compiler's memory in its heap; a restart loads from the cache.
    run_ok(host_cmd().arg("check").arg(&manifest));
    let mut host = Host::spawn(&manifest, redis, dir);
    host.wait_for("the listener", Duration::from_secs(120), |e| {
        e["event"] == "listening"
    });
    std::thread::sleep(Duration::from_secs(1));
    let rss = rss_mib(&host, "VmRSS");
    host.terminate(Duration::from_secs(30));
    println!("| {label} | {rss:.1} MiB |");
    report.check(
        &format!("RSS idle, {label}"),
        format!("{rss:.1} MiB"),
        "≤ 64 MiB",
        rss <= 64.0,
    );
}

/// Loading each language's plugin from the compile cache, in process: what
/// a start or a hot reload pays per plugin once it was compiled.
pub(crate) fn load_from_cache(report: &mut Report) {
    println!("## 6b. Plugin load from the compile cache\n");
    println!(
        "In process: `PluginSet::load` once to fill a fresh cache, then the median of 5 \
         loads (read, hash, map the compiled artifact, link).\n"
    );
    println!("| language | component | first load (compile) | from the cache, p50 |");
    println!("| --- | --- | --- | --- |");
    let redis = RedisServer::start();
    let rt = runtime();
    let _enter = rt.enter();
    let examples = root().join("plugins-example/plugins");
    for (language, path) in [
        ("Rust", plugin("poly")),
        (
            "JavaScript",
            examples.join("welcome-js.wasm").display().to_string(),
        ),
        ("Go", examples.join("counter-go.wasm").display().to_string()),
    ] {
        if !Path::new(&path).exists() {
            println!("| {language} | not built ({path}) | | |");
            continue;
        }
        cache_row(&redis, language, &path, report);
    }
    println!();
}

/// One row of section 6b: the plugin at `path` loaded in process (within
/// a Tokio runtime) into a fresh cache, then 5 times from it.
fn cache_row(redis: &RedisServer, language: &str, path: &str, report: &mut Report) {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let text = format!(
        "[runtime]\ncache_dir = {:?}\n[[plugin]]\nname = \"p\"\npath = {path:?}\nactions = [\"a_\"]\ntenants = [\"*\"]\n",
        cache.display().to_string()
    );
    let file = dir.path().join("manifest.toml");
    std::fs::write(&file, text).unwrap();
    let (manifest, runtime) = manifest_runtime(&file, redis);
    let load = || {
        let start = Instant::now();
        drop(PluginSet::load(&runtime, &manifest, 0).unwrap());
        start.elapsed().as_secs_f64() * 1000.0
    };
    let first = load();
    let mut cached: Vec<f64> = (0..5).map(|_| load()).collect();
    cached.sort_by(f64::total_cmp);
    let p50 = cached[2];
    let size = std::fs::metadata(path).unwrap().len() as f64 / 1e6;
    println!("| {language} | {size:.1} MB | {first:.0} ms | {p50:.1} ms |");
    if language != "Rust" {
        report.check(
            &format!("{language}: plugin load from the compile cache"),
            format!("{p50:.1} ms"),
            "≤ 20 ms",
            p50 <= 20.0,
        );
    }
}

/// A component's bytes with a custom section appended (`name`, `payload`):
/// the same code under another content hash, so it is compiled, cached and
/// mapped as a plugin of its own.
fn with_custom_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    /// Appends `n` as an unsigned LEB128.
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                break;
            }
        }
    }
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = component.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// Writes the manifest `name` in `dir` for the first `count` copies of
/// `poly` (each written once, as `pN.wasm`, a tenant and an action prefix
/// each), compiled into `cache`; returns its path.
fn write_plugin_set(dir: &Path, cache: &Path, poly: &[u8], count: usize, name: &str) -> PathBuf {
    let mut text = format!(
        "[runtime]\ncache_dir = {:?}\ntimeout = \"2s\"\nshutdown_grace = \"10s\"\n\n",
        cache.display().to_string()
    );
    for i in 0..count {
        let path = dir.join(format!("p{i}.wasm"));
        if !path.exists() {
            std::fs::write(
                &path,
                with_custom_section(poly, "bench-copy", &i.to_le_bytes()),
            )
            .unwrap();
        }
        write!(
            text,
            "[[plugin]]\nname = \"p{i}\"\npath = {:?}\nactions = [\"t{i}_\"]\ntenants = [\"t{i}\"]\ncapabilities = [\"generic\"]\n\n",
            path.display().to_string()
        )
        .unwrap();
    }
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

/// What section 6c measured.
struct ManyFigures {
    /// Plugins in the big set.
    n: usize,
    /// First compile of all, seconds.
    compile: f64,
    /// Host start to listening, from the cache, seconds.
    load: f64,
    /// Host RSS idle, MiB.
    rss: f64,
    /// Of which anonymous, MiB.
    anon: f64,
    /// Routing an action among 10 plugins, ns.
    ten_ns: f64,
    /// Routing an action among all `n`, ns.
    all_ns: f64,
}

/// 1000 Rust plugins, a tenant and an action prefix each, all different
/// components (the same code with a distinct custom section), as a
/// multi-tenant host would load: the host's load time from the cache and
/// its idle RSS, and what routing one action costs with 10 plugins and with
/// all of them.
pub(crate) fn many_plugins(sizes: Sizes, report: &mut Report) {
    let n = if sizes.quick { 50 } else { 1000 };
    println!("## 6c. {n} Rust plugins, a tenant each\n");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let poly = std::fs::read(plugin("poly")).unwrap();
    let all = write_plugin_set(dir.path(), &cache, &poly, n, "all.toml");
    let ten = write_plugin_set(dir.path(), &cache, &poly, 10, "ten.toml");
    let compiled_at = Instant::now();
    run_ok(host_cmd().arg("check").arg(&all));
    let compile = compiled_at.elapsed().as_secs_f64();

    let redis = RedisServer::start();
    let (load, rss, anon) = host_from_cache(&all, &redis);

    // Routing, in process: the last plugin's action among 10 and among all.
    let rt = runtime();
    let _enter = rt.enter();
    let ten_ns = route_ns(&ten, "t9_write", &redis);
    let all_ns = route_ns(&all, &format!("t{}_write", n - 1), &redis);
    report_many_plugins(
        &ManyFigures {
            n,
            compile,
            load,
            rss,
            anon,
            ten_ns,
            all_ns,
        },
        report,
    );
}

/// A host on the manifest `all` (compiled into its cache already):
/// seconds from its start to listening, then its RSS and anonymous RSS
/// (MiB) 1 s later.
fn host_from_cache(all: &Path, redis: &RedisServer) -> (f64, f64, f64) {
    let spawned_at = Instant::now();
    let host_dir = tempfile::tempdir().unwrap();
    let mut host = Host::spawn(all, redis, host_dir);
    host.wait_for("the listener", Duration::from_secs(300), |e| {
        e["event"] == "listening"
    });
    let load = spawned_at.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let rss = rss_mib(&host, "VmRSS");
    let anon = rss_mib(&host, "RssAnon");
    host.terminate(Duration::from_secs(30));
    (load, rss, anon)
}

/// ns to route `action` among the plugins of the manifest `file`, in
/// process (within a Tokio runtime), over a million rounds.
fn route_ns(file: &Path, action: &str, redis: &RedisServer) -> f64 {
    let (manifest, runtime) = manifest_runtime(file, redis);
    let set = PluginSet::load(&runtime, &manifest, 0).unwrap();
    let rounds = 1_000_000;
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(set.route(std::hint::black_box(action)));
    }
    start.elapsed().as_secs_f64() * 1e9 / f64::from(rounds)
}

/// Section 6c's table and its figures against their targets.
fn report_many_plugins(figures: &ManyFigures, report: &mut Report) {
    let ManyFigures {
        n,
        compile,
        load,
        rss,
        anon,
        ten_ns,
        all_ns,
    } = *figures;
    println!("| figure | value |\n| --- | --- |");
    println!("| first compile of all ({n} components, `symphony-host check`) | {compile:.1} s |");
    println!("| host start to listening, loaded from the cache | {load:.2} s |");
    println!("| host RSS idle (of which anonymous) | {rss:.1} MiB ({anon:.1} MiB) |");
    println!("| routing an action, 10 / {n} plugins | {ten_ns:.0} / {all_ns:.0} ns |\n");
    report.check(
        &format!("{n} Rust plugins: RSS idle"),
        format!("{rss:.1} MiB"),
        "≤ 512 MiB",
        rss <= 512.0,
    );
    report.check(
        &format!("{n} Rust plugins: host start to listening, from the cache"),
        format!("{load:.2} s"),
        "≤ 5 s",
        load <= 5.0,
    );
    report.check(
        &format!("routing one action, 10 against {n} plugins"),
        format!("{ten_ns:.0} / {all_ns:.0} ns"),
        "independent of the count (within 1.5x)",
        all_ns <= ten_ns * 1.5,
    );
}
