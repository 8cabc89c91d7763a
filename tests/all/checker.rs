//! A randomized checker for the delivery protocol: seeded, reproducible
//! histories of arm, re-arm (before and while running), cancel, TTL
//! changes by another client, `PERSIST`, `DEL`, host SIGKILLs and SIGSTOPs,
//! pub/sub connection kills and Redis restarts on its AOF, on a real
//! redis-server and two hosts (or on a Redis Cluster, where the Redis fault
//! is a primary SIGKILLed and failed over), checked against the guarantees of
//! `docs/guarantees.md`:
//!
//! - every arming that must run (nothing changed it in time) ran, once;
//! - none that must not run (cancelled, deleted, persisted or armed again
//!   well before its due time) ran;
//! - an arming whose fate an operation decided within [`WINDOW`] of its due
//!   time may have run or not, and one due around a host's SIGKILL or
//!   SIGSTOP, or a Redis restart, may run once more (a host killed
//!   mid-handler reruns its job after the lease), and so may one that
//!   another client set again (`SET ... PX`) before its due time, if it
//!   came due near such a fault (no host heard the change in time, and
//!   the host that comes back takes the key for one armed again after it
//!   expired: `docs/guarantees.md`, "The window that remains");
//! - fast jobs started no later than [`LATE`] after their due time, or the
//!   lease after a fault (a kill, a stop, a restart, a dropped
//!   subscription, a failover), plus the Redis outages that began near it.
//!
//! A failing seed prints its history and keeps the hosts' logs. CI runs a
//! few fixed seeds (`checker::seed_*`, `checker::cluster_seed_1`);
//! `SYMPHONY_CHECKER_SEEDS=a..b` and `SYMPHONY_CHECKER_CLUSTER_SEEDS=a..b`
//! run more (see `docs/benchmarks.md`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::Value;

use crate::support::*;

/// How close to its due time an operation makes an arming's fate unknown.
const WINDOW: i64 = 300;
/// How long before a Cluster primary's death a write may not have reached
/// its replica (on loopback, far less).
const REPLICATION_LAG: i64 = 1_000;
/// How late a fast job may start (CI shares 2 cores with the whole suite).
const LATE: i64 = 3_000;
/// The hosts' lease: a killed host's firings run again after it.
const LEASE_MS: i64 = 3_000;
/// Keys of fast jobs (`rec_c`) and of one-second jobs (`slow_c`, one at a
/// time: a key armed again while its job runs waits for the slot).
const FAST_KEYS: usize = 12;
const SLOW_KEYS: usize = 2;

/// What an arming must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Run,
    NotRun,
    Maybe,
}

#[derive(Debug, Clone)]
struct Arming {
    due: i64,
    /// When it was armed, and when an operation ended its pending life.
    armed_at: i64,
    superseded_at: Option<i64>,
    /// Its due time when armed (`PEXPIRE` may have moved `due`).
    armed_due: i64,
    fate: Fate,
    /// Another client set the key again (`SET ... PX`) before it was due:
    /// if no host ran at its due time, the host that comes back cannot
    /// tell this from an arming after the key expired, and runs it too.
    retimed_by_client: bool,
}

/// The model: each key's armings in order.
#[derive(Default)]
struct Model {
    armings: HashMap<String, Vec<Arming>>,
    /// When faults happened: a firing due near one may be late by a lease.
    kills: Vec<i64>,
    /// When Redis was down (a restart, a failover): from, to.
    outages: Vec<(i64, i64)>,
    history: String,
}

impl Model {
    /// An operation at `now` ends the key's last arming's pending life
    /// (cancel, delete, persist, or a new arming of the key).
    fn supersede(&mut self, key: &str, now: i64) {
        self.supersede_by(key, now, false);
    }

    fn supersede_by(&mut self, key: &str, now: i64, by_client: bool) {
        // A fault near its due time may have delayed its claim past `now`:
        // then the operation may have come first.
        let due = self.armings.get(key).and_then(|a| a.last()).map(|a| a.due);
        let delayed = due.is_some_and(|due| {
            self.near_fault(due) && now <= due + LEASE_MS + LATE + self.outage_near(due)
        });
        if let Some(last) = self.armings.get_mut(key).and_then(|a| a.last_mut())
            && last.fate == Fate::Run
        {
            let to_due = last.due - now;
            last.retimed_by_client = by_client;
            last.superseded_at = Some(now);
            last.fate = if to_due > WINDOW {
                Fate::NotRun
            } else if to_due < -WINDOW && !delayed {
                Fate::Run
            } else {
                Fate::Maybe
            };
        }
    }

    fn arm(&mut self, key: &str, now: i64, ttl: i64) {
        self.arm_by(key, now, ttl, false);
    }

    /// An arming; `by_client`: a plain `SET ... PX` of another client.
    fn arm_by(&mut self, key: &str, now: i64, ttl: i64, by_client: bool) {
        self.supersede_by(key, now, by_client);
        self.armings
            .entry(key.to_owned())
            .or_default()
            .push(Arming {
                due: now + ttl,
                armed_at: now,
                superseded_at: None,
                armed_due: now + ttl,
                fate: Fate::Run,
                retimed_by_client: false,
            });
    }

    /// Another client gave an existing key a TTL (`PEXPIRE`): a pending
    /// arming is due then instead; otherwise (its firing is due or
    /// running, or the key was persisted) the key is armed anew.
    fn retime(&mut self, key: &str, now: i64, ttl: i64) {
        if let Some(last) = self.armings.get_mut(key).and_then(|a| a.last_mut())
            && last.fate == Fate::Run
            && last.due - now > WINDOW
        {
            last.due = now + ttl;
            return;
        }
        self.arm(key, now, ttl);
    }

    fn kill(&mut self, now: i64) {
        self.kills.push(now);
    }

    /// A Cluster primary was killed at `at`: what it had not yet passed to
    /// its replica is lost (replication is asynchronous), so an arming made
    /// or ended shortly before may or may not have taken effect.
    fn failover(&mut self, at: i64) {
        let lost = at - REPLICATION_LAG..=at;
        for a in self.armings.values_mut().flatten() {
            if lost.contains(&a.armed_at) || a.superseded_at.is_some_and(|s| lost.contains(&s)) {
                a.fate = Fate::Maybe;
            }
        }
    }

    /// Whether a fault happened near `due`: a host killed or stopped
    /// within two leases before it, or just after it.
    fn near_fault(&self, due: i64) -> bool {
        self.kills
            .iter()
            .any(|k| (due - 2 * LEASE_MS..=due + WINDOW).contains(k))
    }

    /// How much longer than a lease a firing due at `due` may wait: the
    /// Redis outages that began near it (a host killed just before a
    /// failover leaves a lease that only the new primary can reap).
    fn outage_near(&self, due: i64) -> i64 {
        self.outages
            .iter()
            .filter(|(from, _)| (due - 2 * LEASE_MS..=due + LEASE_MS + LATE).contains(from))
            .map(|(from, to)| to - from)
            .sum()
    }

    /// Whether `a` may run once more than its fate says: it was due near
    /// a fault (a host killed mid-handler reruns its job after the lease;
    /// a firing re-timed by another client while no host ran runs at its
    /// first due time too).
    fn may_rerun(&self, a: &Arming) -> bool {
        (a.fate != Fate::NotRun || a.retimed_by_client)
            && (self.near_fault(a.due) || self.near_fault(a.armed_due))
    }
}

/// Where a history runs, and its Redis faults: one server (restarted on
/// its AOF) or a Redis Cluster (a primary SIGKILLed: its replica takes
/// over, and the node comes back as a replica).
trait Faulty: Backend {
    /// Kills every pub/sub connection (on every node).
    fn kill_pubsub(&self);
    /// The Redis fault; its name.
    fn fault(&mut self, rng: &mut fastrand::Rng) -> &'static str;
}

impl Faulty for RedisServer {
    fn kill_pubsub(&self) {
        self.kill_pubsub_clients();
    }

    fn fault(&mut self, _rng: &mut fastrand::Rng) -> &'static str {
        self.restart();
        "restart Redis (AOF)"
    }
}

impl Faulty for RedisCluster {
    fn kill_pubsub(&self) {
        for node in self.nodes.iter().filter(|n| n.running()) {
            node.kill_pubsub_clients();
        }
    }

    fn fault(&mut self, rng: &mut fastrand::Rng) -> &'static str {
        let primaries = self.primaries();
        let (victim, _) = primaries[rng.usize(..primaries.len())];
        self.nodes[victim].stop();
        eventually(Duration::from_secs(20), "a replica to take over", || {
            let now = self.primaries().len();
            (now >= primaries.len())
                .then_some(())
                .ok_or(format!("{now} of {} primaries", primaries.len()))
        });
        self.nodes[victim].restart();
        self.wait_ok(Duration::from_secs(30));
        "fail over a primary"
    }
}

/// Runs one seeded history on a standalone server; panics with it when a
/// guarantee breaks.
fn check(seed: u64) {
    let redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    check_on(seed, redis);
}

/// Runs one seeded history on a Redis Cluster, with one failover at a
/// random time.
fn check_cluster(seed: u64) {
    check_on(seed, RedisCluster::start());
}

fn check_on<R: Faulty>(seed: u64, redis: R) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let plugins = format!(
        "{}{}",
        plugin_entry_with(
            "fast",
            "recorder",
            &["rec_"],
            "tenants = [\"*\"]\ncapabilities = [\"trigger\"]"
        ),
        plugin_entry_with(
            "slow",
            "recorder",
            &["slow_"],
            "tenants = [\"*\"]\ncapabilities = [\"trigger\"]\n[plugin.limits]\nmax_instances = 1"
        ),
    );
    let extra = format!("[delivery]\nlease = \"{}ms\"", LEASE_MS);
    let mut hosts: Vec<Option<Host>> = (0..2)
        .map(|_| Some(Host::start_with(&redis, &plugins, &extra)))
        .collect();
    let mut dead: Vec<Host> = Vec::new();
    let keys: Vec<String> = (0..FAST_KEYS)
        .map(|i| format!("chk:EXPTRIGGER:rec_c:{i}"))
        .chain((0..SLOW_KEYS).map(|i| format!("chk:EXPTRIGGER:slow_c:{i}")))
        .collect();
    let mut model = Model::default();
    let mut redis = redis;
    let mut db8 = redis.db(8);
    // On a Cluster, one failover at a random time (besides those drawn).
    let mut fail_at = redis
        .is_cluster()
        .then(|| Duration::from_millis(rng.u64(1000..4000)));
    let mut stops = Vec::new();
    let started = Instant::now();
    let now = || {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        i64::try_from(since.map_or(0, |d| d.as_millis())).unwrap_or(0)
    };
    let t0 = now();
    while started.elapsed() < Duration::from_secs(6) {
        let key = &keys[rng.usize(..keys.len())];
        let ttl = rng.i64(50..1500);
        let t = now();
        let roll = match fail_at {
            Some(at) if started.elapsed() >= at => {
                fail_at = None;
                197
            }
            _ => rng.u32(..200),
        };
        let op = match roll {
            0..80 => {
                arm(&redis, &[trigger_of(key, ttl)]);
                model.arm(key, t, ttl);
                "arm"
            }
            80..110 => {
                set_expiring(&mut db8, key.as_bytes(), ttl as u64);
                model.arm_by(key, t, ttl, true);
                "set px"
            }
            110..130 => {
                cancel(&redis, key);
                model.supersede(key, t);
                "cancel"
            }
            130..144 => {
                let _: i64 = db8.del(key).unwrap();
                model.supersede(key, t);
                "del"
            }
            144..158 => {
                let _: i64 = db8.persist(key).unwrap();
                model.supersede(key, t);
                "persist"
            }
            158..195 => {
                let changed: i64 = db8.pexpire(key, ttl).unwrap();
                if changed == 1 {
                    model.retime(key, t, ttl);
                }
                "pexpire"
            }
            195 => {
                // SIGSTOP a host for up to four seconds (past the lease):
                // what it holds is reaped and runs on the other.
                let pause = rng.u64(300..4000);
                if let Some(host) = hosts[rng.usize(..hosts.len())].as_ref() {
                    let pid = host.pid().to_string();
                    let _ = std::process::Command::new("kill")
                        .args(["-STOP", &pid])
                        .status();
                    stops.push(std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(pause));
                        let _ = std::process::Command::new("kill")
                            .args(["-CONT", &pid])
                            .status();
                    }));
                    model.kill(t);
                    model.kill(t + i64::try_from(pause).unwrap_or(0));
                }
                "stop a host (SIGSTOP)"
            }
            196 => {
                redis.kill_pubsub();
                model.kill(t);
                "kill pub/sub connections"
            }
            197 => {
                let op = redis.fault(&mut rng);
                db8 = redis.db(8);
                model.kill(t);
                model.kill(now());
                model.outages.push((t, now()));
                if redis.is_cluster() {
                    model.failover(t);
                }
                op
            }
            _ => {
                let i = rng.usize(..hosts.len());
                if let Some(host) = hosts[i].take() {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &host.pid().to_string()])
                        .status();
                    model.kill(t);
                    dead.push(host);
                    hosts[i] = Some(Host::start_with(&redis, &plugins, &extra));
                }
                "kill and restart a host"
            }
        };
        let _ = writeln!(
            model.history,
            "{:>6} ms  {op:<24} {key} ttl {ttl} (due {})",
            t - t0,
            t + ttl
        );
        std::thread::sleep(Duration::from_millis(rng.u64(10..120)));
    }
    for stop in stops {
        let _ = stop.join();
    }
    let end = now();
    // Every key's last arming is due by end + 1.5 s; wait for the runs.
    let latest = model
        .armings
        .values()
        .flatten()
        .map(|a| a.due)
        .max()
        .unwrap_or(end);
    let rest = Duration::from_millis(u64::try_from(latest - end).unwrap_or(0));
    std::thread::sleep(rest + Duration::from_millis(500));
    settle(&redis, &keys, Duration::from_secs(60));
    let all: Vec<&Host> = hosts.iter().flatten().chain(dead.iter()).collect();
    verify(seed, &model, &all);
}

fn trigger_of(key: &str, ttl: i64) -> (String, String, String, u64) {
    let mut parts = key.splitn(4, ':');
    let tenant = parts.next().unwrap_or_default().to_owned();
    let _ = parts.next();
    let action = parts.next().unwrap_or_default().to_owned();
    let id = parts.next().unwrap_or_default().to_owned();
    (tenant, action, id, ttl as u64)
}

/// Waits until none of `keys` is left to run: no index entry of theirs
/// (the recorder's `seen_` triggers, due a minute later, are not theirs)
/// and no lease in their spaces.
fn settle(redis: &impl Backend, keys: &[String], timeout: Duration) {
    use symphony_host::delivery::Space;
    let mut conn = redis.db(8);
    let space_of = |key: &str| {
        if redis.is_cluster() {
            Space::of_slot(symphony_host::backend::slot_of(key))
        } else {
            Space::standalone()
        }
    };
    let deadline = Instant::now() + timeout;
    loop {
        let mut left = Vec::new();
        for key in keys {
            let space = space_of(key);
            let due: Vec<String> = conn.zrange(space.due("chk"), 0, -1).unwrap();
            let leases: Vec<String> = conn.zrange(space.leases(), 0, -1).unwrap();
            let mine = |m: &String| m.split('\0').next() == Some(key.as_str());
            left.extend(due.iter().chain(&leases).filter(|m| mine(m)).cloned());
        }
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited {timeout:?} for the keys to settle: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cancel(redis: &impl Backend, key: &str) {
    let (tenant, action, id, _) = trigger_of(key, 0);
    with_pools(redis, |pools| async move {
        symphony_host::repo::TriggerRepo::new(&pools, &tenant)
            .unwrap()
            .delete(&action, &id)
            .await
            .unwrap();
    });
}

/// The runs the hosts logged, by trigger key.
fn runs_of(hosts: &[&Host]) -> HashMap<String, Vec<Value>> {
    let mut runs: HashMap<String, Vec<Value>> = HashMap::new();
    for host in hosts {
        for e in host
            .events(|e| e["event"] == "dispatch" && e["tenant"] == "chk" && e["outcome"] == "ok")
        {
            let key = format!(
                "chk:EXPTRIGGER:{}:{}",
                e["action"].as_str().unwrap_or_default(),
                e["id"].as_str().unwrap_or_default()
            );
            runs.entry(key).or_default().push(e);
        }
    }
    runs
}

/// Checks the runs the hosts logged against the model.
fn verify(seed: u64, model: &Model, hosts: &[&Host]) {
    // Nothing is left in Redis, but a run's line may still be on its way
    // to the log under load: wait (bounded) until every arming that must
    // run shows a run. A missing run still fails, 10 s later.
    let must_of = |key: &str| {
        model.armings[key]
            .iter()
            .filter(|a| a.fate == Fate::Run)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let runs = loop {
        let runs = runs_of(hosts);
        let short = model
            .armings
            .keys()
            .any(|k| runs.get(k).map_or(0, Vec::len) < must_of(k));
        if !short || Instant::now() > deadline {
            break runs;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut broken = Vec::new();
    let mut keys: Vec<&String> = model.armings.keys().collect();
    keys.sort();
    for key in keys {
        let armings = &model.armings[key];
        let must = armings.iter().filter(|a| a.fate == Fate::Run).count();
        let may = armings.iter().filter(|a| a.fate == Fate::Maybe).count();
        let reruns = armings.iter().filter(|a| model.may_rerun(a)).count();
        let ran = runs.get(key).map_or(0, Vec::len);
        if ran < must || ran > must + may + reruns {
            let dues: Vec<i64> = runs
                .get(key)
                .into_iter()
                .flatten()
                .map(|e| e["due_ms"].as_i64().unwrap_or(0))
                .collect();
            broken.push(format!(
                "{key}: ran {ran} (due {dues:?}), expected {must} to {} ({must} must, {may} may, \
                 {reruns} reruns after a kill); armings {armings:?}",
                must + may + reruns
            ));
        }
        for e in runs.get(key).into_iter().flatten() {
            let late_ms = e["late_us"].as_i64().unwrap_or(0) / 1000;
            let due = e["due_ms"].as_i64().unwrap_or(0);
            let near_kill = model.near_fault(due);
            let bound = if key.contains(":slow_") {
                i64::MAX
            } else if near_kill {
                LEASE_MS + LATE + model.outage_near(due)
            } else {
                LATE
            };
            if late_ms > bound || late_ms < -5 {
                broken.push(format!(
                    "{key}: a run {late_ms} ms late (bound {bound} ms): {e}"
                ));
            }
        }
    }
    if !broken.is_empty() {
        let logs = keep_logs(seed, hosts);
        panic!(
            "seed {seed}: {} guarantees broken:\n{}\nhistory:\n{}\nthe hosts' logs: {logs}",
            broken.len(),
            broken.join("\n"),
            model.history
        );
    }
    let armings: usize = model.armings.values().map(Vec::len).sum();
    let count = |op: &str| model.history.matches(op).count();
    println!(
        "checker seed {seed}: {} operations, {armings} armings over {} keys; faults: \
         {} host kills, {} host stops, {} pub/sub kills, {} Redis restarts, {} failovers; \
         every guarantee held",
        model.history.lines().count(),
        model.armings.len(),
        count("kill and restart a host"),
        count("stop a host"),
        count("kill pub/sub"),
        count("restart Redis"),
        count("fail over"),
    );
}

/// Writes each host's log beside the test binary's target directory
/// (`target/checker-logs/seed-{seed}-host-{i}.log`), for a failing seed;
/// returns where.
fn keep_logs(seed: u64, hosts: &[&Host]) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/checker-logs");
    if std::fs::create_dir_all(&dir).is_err() {
        return "not kept (cannot make target/checker-logs)".to_owned();
    }
    for (i, host) in hosts.iter().enumerate() {
        let _ = std::fs::write(dir.join(format!("seed-{seed}-host-{i}.log")), host.log());
    }
    dir.display().to_string()
}

/// Seeds from `SYMPHONY_CHECKER_SEEDS` (`a..b`), for longer runs.
#[test]
fn seeds_from_the_environment() {
    let Ok(range) = std::env::var("SYMPHONY_CHECKER_SEEDS") else {
        return;
    };
    let (a, b) = range.split_once("..").expect("SYMPHONY_CHECKER_SEEDS=a..b");
    for seed in a.parse::<u64>().unwrap()..b.parse::<u64>().unwrap() {
        check(seed);
    }
}

/// Cluster seeds from `SYMPHONY_CHECKER_CLUSTER_SEEDS` (`a..b`).
#[test]
fn cluster_seeds_from_the_environment() {
    let Ok(range) = std::env::var("SYMPHONY_CHECKER_CLUSTER_SEEDS") else {
        return;
    };
    let (a, b) = range
        .split_once("..")
        .expect("SYMPHONY_CHECKER_CLUSTER_SEEDS=a..b");
    for seed in a.parse::<u64>().unwrap()..b.parse::<u64>().unwrap() {
        check_cluster(seed);
    }
}

#[test]
fn cluster_seed_1() {
    check_cluster(1);
}

#[test]
fn seed_1() {
    check(1);
}

#[test]
fn seed_2() {
    check(2);
}

#[test]
fn seed_3() {
    check(3);
}
