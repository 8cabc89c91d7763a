//! What every section shares: the sizes of a run, the report of figures
//! against their targets, what one burst or steady run measured, a
//! quantile, and the in-process Tokio runtime, manifest and pools.

use std::path::Path;
use std::sync::Arc;

use symphony_host::manifest::{Manifest, RedisUrl, seed_pool_urls};
use symphony_host::pools::Pools;
use symphony_host::runtime::Runtime;

use crate::support::RedisServer;

/// Sizes of one run: the full suite, or the smoke pass.
#[derive(Clone, Copy)]
pub(crate) struct Sizes {
    /// The smoke pass (`--quick`): figures not comparable with the targets.
    pub(crate) quick: bool,
    /// Jobs per figure of the Rust plugin, section `overhead`.
    pub(crate) overhead_rust: usize,
    /// Jobs per figure of the JavaScript and Go plugins, section `overhead`.
    pub(crate) overhead_other: usize,
    /// Triggers set, section `schedule`.
    pub(crate) schedule: usize,
    /// Triggers due within one second, in every burst.
    pub(crate) burst: usize,
    /// Length of each steady load.
    pub(crate) steady_secs: u64,
    /// Reloads timed, section `reload`.
    pub(crate) reloads: usize,
}

/// The full suite's sizes (the figures).
pub(crate) const FULL: Sizes = Sizes {
    quick: false,
    overhead_rust: 20_000,
    overhead_other: 300,
    schedule: 100_000,
    burst: 100_000,
    steady_secs: 30,
    reloads: 5,
};

/// The smoke pass's sizes (`--quick`).
pub(crate) const QUICK: Sizes = Sizes {
    quick: true,
    overhead_rust: 300,
    overhead_other: 10,
    schedule: 5_000,
    burst: 2_000,
    steady_secs: 2,
    reloads: 2,
};

/// One line of the summary: a figure against its target.
pub(crate) struct Verdict {
    /// What was measured.
    pub(crate) what: String,
    /// The figure, with its unit.
    pub(crate) figure: String,
    /// The target, with its unit.
    pub(crate) target: String,
    /// Whether the figure met the target.
    pub(crate) met: bool,
}

/// What the sections found: the summary's lines and the broken checks.
#[derive(Default)]
pub(crate) struct Report {
    /// The summary's lines, in the order measured.
    pub(crate) verdicts: Vec<Verdict>,
    /// Correctness checks that failed (a trigger lost or run twice): these
    /// fail the run, unlike missed speed targets.
    pub(crate) broken: Vec<String>,
}

impl Report {
    /// Records a figure against its target for the summary.
    pub(crate) fn check(&mut self, what: &str, figure: String, target: &str, met: bool) {
        self.verdicts.push(Verdict {
            what: what.to_owned(),
            figure,
            target: target.to_owned(),
            met,
        });
    }

    /// Records a correctness check; a failure makes the suite exit non-zero.
    pub(crate) fn require(&mut self, what: &str, ok: bool) {
        if !ok {
            self.broken.push(what.to_owned());
        }
    }
}

/// What one run measured, for the table against the Python library.
pub(crate) struct Measured {
    /// Triggers armed.
    pub(crate) expected: usize,
    /// Handler starts seen.
    pub(crate) ran: usize,
    /// Distinct triggers that started.
    pub(crate) distinct: usize,
    /// First start to last start.
    pub(crate) rate: f64,
    /// Due time to start, sorted.
    pub(crate) late_ms: Vec<f64>,
    /// CPU per job in the dispatching process(es) (µs); NaN when not
    /// measured.
    pub(crate) cpu_us: f64,
    /// CPU per job in redis-server (µs); NaN when not measured.
    pub(crate) redis_cpu_us: f64,
    /// Handlers whose one write failed.
    pub(crate) failed_writes: usize,
}

/// The `q` quantile (0..=1) of sorted values.
pub(crate) fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i]
}

/// A multi-threaded Tokio runtime for the in-process work.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The manifest at `file` and a runtime for it, in process, its pools on
/// `redis` (call within a Tokio runtime).
pub(crate) fn manifest_runtime(file: &Path, redis: &RedisServer) -> (Manifest, Arc<Runtime>) {
    let manifest = Manifest::load(file).unwrap();
    let url: RedisUrl = redis.url().parse().unwrap();
    let pools = Pools::new(&manifest.pool_urls(Some(&url))).unwrap();
    let runtime = Runtime::new(&manifest.runtime, false, pools).unwrap();
    (manifest, runtime)
}

/// The seed pools on `redis`.
pub(crate) fn pools(redis: &RedisServer) -> Pools {
    let url: RedisUrl = redis.url().parse().unwrap();
    Pools::new(&seed_pool_urls(&url)).unwrap()
}
