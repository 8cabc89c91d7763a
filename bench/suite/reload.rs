//! Section 5, `reload`: hot reload, a plugin file written over to the new
//! version while the host runs, until the new version is live.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{Report, Sizes, quantile};
use crate::support::{Host, RedisServer, plugin};

/// Section 5: `sizes.reloads` reloads, between two versions of a plugin.
pub(crate) fn run(sizes: Sizes, report: &mut Report) {
    println!("## 5. Hot reload: plugin file copied over to the new version live\n");
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("plugin.wasm");
    std::fs::copy(plugin("versioned-v1"), &live).unwrap();
    let mut host = Host::start_in(
        dir,
        &redis,
        "[[plugin]]\nname = \"versioned\"\npath = \"plugin.wasm\"\nactions = [\"version\"]\n\
         tenants = [\"*\"]\ncapabilities = [\"generic\"]\n",
        "",
    );
    let (mut times, builds) = time_reloads(&mut host, &live, sizes.reloads);
    host.terminate(Duration::from_secs(30));
    println!("| reload | file written to live (ms) | of which building the new set (ms) |");
    println!("| --- | --- | --- |");
    for (k, (t, b)) in times.iter().zip(&builds).enumerate() {
        println!("| {} | {t} | {b} |", k + 1);
    }
    println!(
        "\nThe watcher waits for the file to be quiet for 100 ms (a copy is \
         several writes) before it builds the new set.\n"
    );
    times.sort_unstable();
    report.check(
        "hot reload: file written to new version live, median",
        format!("{} ms", quantile(&times, 0.5)),
        "(none set)",
        true,
    );
}

/// Copies the other version over `live` `reloads` times, each once the
/// last is live; returns, per reload, the ms from the copy to the host's
/// `reloaded` line and the ms it spent building the new set.
fn time_reloads(host: &mut Host, live: &Path, reloads: usize) -> (Vec<u64>, Vec<u64>) {
    let mut times = Vec::new();
    let mut builds = Vec::new();
    for k in 1..=reloads {
        let version = if k % 2 == 1 {
            "versioned-v2"
        } else {
            "versioned-v1"
        };
        let start = Instant::now();
        std::fs::copy(plugin(version), live).unwrap();
        let e = host.wait_for("the reload", Duration::from_secs(30), |e| {
            e["event"] == "reloaded" && e["generation"] == k
        });
        times.push(start.elapsed().as_millis() as u64);
        builds.push(e["took_ms"].as_u64().unwrap_or(0));
    }
    (times, builds)
}
