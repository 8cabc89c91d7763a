//! The benchmark suite: how fast symphony-host is, against its targets.
//!
//! ```text
//! scripts/bench.sh            # release build, full sizes, about 4 minutes
//! scripts/bench.sh --smoke    # debug build, small sizes (`--quick` to the suite; CI runs it)
//! scripts/bench.sh --only burst,steady
//! ```
//!
//! Each section starts its own redis-server on a free loopback port (the
//! integration tests' harness, `tests/all/support.rs`), and the end-to-end
//! sections run the real `symphony-host` binary with `--log-format json`,
//! reading its `dispatch` lines. It prints one table per section and a
//! summary against the targets. Sections:
//!
//! 1. `overhead`: in process, through the host library: a fresh instance
//!    (or a warm one), `on-expire`, and one host call that does not reach
//!    Redis; then the same with one Redis write. Per language.
//! 2. `schedule`: triggers set per second through the library's batch path
//!    (`TriggerRepo::set_many`), one at a time, and through the CLI.
//! 3. `burst`: 100 000 triggers due within one second, a Rust plugin making
//!    one repository write each, with 1 and with 3 host processes. Then
//!    (3c) the floor: what Redis spends per job when the claims keep ahead
//!    of the TTL and the writes and finishes go in one pipeline per claim.
//! 4. `steady`: 200/s and 5000/s for 30 s, each due 1 s after it is set.
//!    Lateness comes from `late_us`, to the microsecond.
//!    Section `library` (4b): the burst and both steady loads on
//!    symphony-host, each followed by the same workload on the Python
//!    library we replace (`mimeiapify` 1.4.3, from the compatibility test's
//!    venv, driven by `bench/mimeiapify_bench.py`), and the two side by side.
//! 5. `reload`: a plugin file written to the new version live.
//! 6. `rss`: host RSS idle with 10 plugins loaded (the burst reports its
//!    peak); each language's plugin loaded from the compile cache; 1000
//!    Rust plugins (a tenant each): load time, RSS, routing cost.
//! 7. `admin`: the burst with 1 host, the admin server off, then on with a
//!    client reading `/metrics` and the dashboard's overview every second;
//!    alternated, 5 pairs (1 with `--quick`).
//! 8. `cluster`: the burst on a standalone server and on a 3-primary Redis
//!    Cluster, 1 and 3 hosts (1 with `--quick`), with CPU per job in the
//!    hosts and in each primary, and with every key in one slot.
//!
//! The end-to-end sections run the host on the tests' manifest header
//! (`support::write_manifest`: their compile cache, a 2 s timeout, otherwise
//! the default `[runtime]`, so concurrency 64, 32 per tenant);
//! `BENCH_RUNTIME` adds lines to it, to try settings (for example
//! `BENCH_RUNTIME='concurrency = 256'`).
//!
//! The code: this file reads the arguments, runs the chosen sections and
//! prints the summary. Each section is a module of its own under
//! `bench/suite/` (`overhead.rs`, `schedule.rs`, `burst.rs`, `steady.rs`,
//! `library.rs`, `reload.rs`, `rss.rs`, `admin.rs`, `cluster.rs`); what they
//! share is in `common.rs` (sizes, the report, in-process runtime and
//! pools), `e2e.rs` (hosts, arming, their dispatch lines) and `measure.rs`
//! (CPU, RSS and Redis's counters). Sections use those three; the three use
//! no section.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../tests/all/support.rs"]
mod support;

#[path = "suite/common.rs"]
mod common;
#[path = "suite/e2e.rs"]
mod e2e;
#[path = "suite/measure.rs"]
mod measure;

#[path = "suite/admin.rs"]
mod admin;
#[path = "suite/burst.rs"]
mod burst;
#[path = "suite/cluster.rs"]
mod cluster;
#[path = "suite/library.rs"]
mod library;
#[path = "suite/overhead.rs"]
mod overhead;
#[path = "suite/reload.rs"]
mod reload;
#[path = "suite/rss.rs"]
mod rss;
#[path = "suite/schedule.rs"]
mod schedule;
#[path = "suite/steady.rs"]
mod steady;

use common::{FULL, QUICK, Report, Sizes};

/// The host binary's allocator, so in-process figures match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The sections, in the order they run.
const SECTIONS: [&str; 9] = [
    "overhead", "schedule", "burst", "steady", "library", "reload", "rss", "admin", "cluster",
];

/// What the command line asked for.
struct Args {
    /// Full or smoke sizes.
    sizes: Sizes,
    /// The sections to run; empty: all of them.
    only: Vec<String>,
}

/// Reads the command line; `None` when it asked for the usage (printed).
fn parse_args() -> Option<Args> {
    let mut sizes = FULL;
    let mut only: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => sizes = QUICK,
            "--only" => {
                let list = args.next().expect("--only needs a list, e.g. burst,steady");
                only = list.split(',').map(str::to_owned).collect();
                for s in &only {
                    assert!(
                        SECTIONS.contains(&s.as_str()),
                        "unknown section {s:?}; sections: {SECTIONS:?}"
                    );
                }
            }
            // `cargo bench` passes `--bench`; nothing else is expected.
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "usage: suite [--quick] [--only {}]\n\nSee the top of bench/suite.rs.",
                    SECTIONS.join(",")
                );
                return None;
            }
            other => panic!("unknown argument {other:?} (try --help)"),
        }
    }
    Some(Args { sizes, only })
}

fn main() {
    let Some(Args { sizes, only }) = parse_args() else {
        return;
    };
    let chosen = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "# symphony-host benchmarks ({} sizes, {profile} build, {} cores)\n",
        if sizes.quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut report = Report::default();
    run_sections(sizes, chosen, &mut report);
    print_summary(sizes, &report);
    if !report.broken.is_empty() {
        eprintln!(
            "\nbroken (not a speed target): {}",
            report.broken.join("; ")
        );
        std::process::exit(1);
    }
}

/// Runs each section `chosen` accepts, in the order of [`SECTIONS`].
fn run_sections(sizes: Sizes, chosen: impl Fn(&str) -> bool, report: &mut Report) {
    if chosen("overhead") {
        overhead::run(sizes, report);
    }
    if chosen("schedule") {
        schedule::run(sizes, report);
    }
    if chosen("burst") {
        for hosts in [1, 3] {
            burst::run(sizes, hosts, report);
        }
        burst::redis_floor(sizes, report);
    }
    if chosen("steady") {
        for rate in [200, 5000] {
            steady::run(sizes, rate, report);
        }
    }
    if chosen("library") {
        library::run(sizes, report);
    }
    if chosen("reload") {
        reload::run(sizes, report);
    }
    if chosen("rss") {
        rss::idle(report);
        rss::load_from_cache(report);
        rss::many_plugins(sizes, report);
    }
    if chosen("admin") {
        admin::run(sizes, report);
    }
    if chosen("cluster") {
        cluster::run(sizes, report);
    }
}

/// The summary: every figure against its target.
fn print_summary(sizes: Sizes, report: &Report) {
    println!("## Against the targets\n");
    if sizes.quick {
        println!(
            "Quick sizes (a smoke pass): the speed figures are not comparable with the targets.\n"
        );
    }
    println!("| measure | figure | target | met |\n| --- | --- | --- | --- |");
    for v in &report.verdicts {
        println!(
            "| {} | {} | {} | {} |",
            v.what,
            v.figure,
            v.target,
            if v.met { "yes" } else { "no" }
        );
    }
}
