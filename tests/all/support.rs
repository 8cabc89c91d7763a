//! Test harness: a private redis-server, the plugin build, and the host
//! process with its JSON log lines.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Polls `check` until it returns `Ok`, for at most `within`, and returns
/// its value. The polls start 10 ms apart and back off to 100 ms. If the
/// deadline passes, panics naming `what` and the state the last poll saw
/// (its `Err`). Every wait in these tests goes through here or through a
/// wait on the host's log, so none is a bare sleep.
pub fn eventually<T>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(10);
    loop {
        let seen = match check() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "waited {within:?} for {what}; last seen: {seen}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Builds every plugin once per test run (`scripts/build-plugins.sh`) and
/// returns the directory holding `<name>.wasm`.
pub fn plugins_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        run_ok(
            Command::new("bash")
                .arg(root().join("scripts/build-plugins.sh"))
                .env("SYMPHONY_HOST_BIN", env!("CARGO_BIN_EXE_symphony-host")),
        );
        root().join("target/plugins")
    })
}

/// Path of a built plugin.
pub fn plugin(name: &str) -> String {
    plugins_dir()
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

/// A redis-server of the test's own, stopped by PID on drop.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// A server started with extra command-line arguments.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        // The first test to name a plugin builds them all (seconds, even
        // when up to date): do it before a test starts its clock, not
        // between two timed steps.
        plugins_dir();
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                dir: tempfile::tempdir().unwrap(),
                child: None,
                extra: extra.iter().map(|s| s.to_string()).collect(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server {extra:?}");
    }

    fn spawn(&mut self) -> bool {
        let bin = std::env::var("SYMPHONY_TEST_REDIS_SERVER").unwrap_or("redis-server".into());
        let child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (is it installed? scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(mut c) = self.client().get_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return true;
            }
            if let Some(child) = self.child.as_mut()
                && child.try_wait().ok().flatten().is_some()
            {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    /// A connection to `db`.
    pub fn conn(&self, db: u32) -> redis::Connection {
        let mut c = redis::Client::open(format!("{}/{db}", self.url()))
            .unwrap()
            .get_connection()
            .unwrap_or_else(|e| panic!("connect to test redis: {e}\n{}", self.log()));
        let _: () = redis::cmd("PING").query(&mut c).unwrap();
        c
    }

    /// Whether its process is running.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the server (SIGKILL by PID) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts a fresh one on the same port (it keeps
    /// nothing: no RDB, no AOF, so `notify-keyspace-events` is reset too).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "redis-server did not come back on port {}\n{}",
            self.port,
            self.log()
        );
    }

    /// `CLIENT KILL TYPE pubsub`: drops every subscription connection
    /// (the listener's); returns how many.
    pub fn kill_pubsub_clients(&self) -> i64 {
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query(&mut self.conn(0))
            .unwrap()
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where a test's Redis is: one server, or a cluster. The host under test
/// and the library are pointed at it the same way.
pub trait Backend {
    /// Points a `symphony-host` command at it (the override variables).
    fn point(&self, cmd: &mut Command);
    /// What the library's pools connect to.
    fn target(&self) -> symphony_host::pools::RedisTarget;
    /// A log to show when a wait fails.
    fn log_path(&self) -> PathBuf;
    /// A connection to the DB an alias's seed DB `db` is in (on a cluster,
    /// DB 0 through the cluster).
    fn db(&self, db: u32) -> AnyConn;
    /// The URL of one server (on a cluster, the first node's).
    fn server_url(&self) -> String;
    /// Whether it is a cluster.
    fn is_cluster(&self) -> bool;
}

/// A test connection to a server's DB or through a cluster.
pub enum AnyConn {
    Server(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl redis::ConnectionLike for AnyConn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        match self {
            AnyConn::Server(c) => c.req_packed_command(cmd),
            AnyConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        match self {
            AnyConn::Server(c) => c.req_packed_commands(cmd, offset, count),
            AnyConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }
    fn req_command(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        match self {
            AnyConn::Server(c) => c.req_command(cmd),
            AnyConn::Cluster(c) => c.req_command(cmd),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            AnyConn::Server(c) => c.get_db(),
            AnyConn::Cluster(c) => c.get_db(),
        }
    }
    fn supports_pipelining(&self) -> bool {
        match self {
            AnyConn::Server(c) => c.supports_pipelining(),
            AnyConn::Cluster(c) => c.supports_pipelining(),
        }
    }
    fn check_connection(&mut self) -> bool {
        match self {
            AnyConn::Server(c) => c.check_connection(),
            AnyConn::Cluster(c) => c.check_connection(),
        }
    }
    fn is_open(&self) -> bool {
        match self {
            AnyConn::Server(c) => c.is_open(),
            AnyConn::Cluster(c) => c.is_open(),
        }
    }
}

impl<B: Backend + ?Sized> Backend for Box<B> {
    fn point(&self, cmd: &mut Command) {
        (**self).point(cmd)
    }
    fn target(&self) -> symphony_host::pools::RedisTarget {
        (**self).target()
    }
    fn log_path(&self) -> PathBuf {
        (**self).log_path()
    }
    fn db(&self, db: u32) -> AnyConn {
        (**self).db(db)
    }
    fn server_url(&self) -> String {
        (**self).server_url()
    }
    fn is_cluster(&self) -> bool {
        (**self).is_cluster()
    }
}

/// A fresh server or cluster, as `cluster` says.
pub fn start_backend(cluster: bool) -> Box<dyn Backend> {
    if cluster {
        Box::new(RedisCluster::start())
    } else {
        Box::new(RedisServer::start())
    }
}

impl Backend for RedisServer {
    fn db(&self, db: u32) -> AnyConn {
        AnyConn::Server(self.conn(db))
    }
    fn server_url(&self) -> String {
        self.url()
    }
    fn is_cluster(&self) -> bool {
        false
    }
    fn point(&self, cmd: &mut Command) {
        cmd.env("SYMPHONY_REDIS_URL", self.url());
    }
    fn target(&self) -> symphony_host::pools::RedisTarget {
        let url: symphony_host::manifest::RedisUrl = self.url().parse().unwrap();
        symphony_host::pools::RedisTarget::Servers(symphony_host::manifest::seed_pool_urls(&url))
    }
    fn log_path(&self) -> PathBuf {
        RedisServer::log_path(self)
    }
}

/// A Redis Cluster of the test's own: 3 primaries and 3 replicas on free
/// loopback ports, each in its own temp dir, stopped by PID on drop.
pub struct RedisCluster {
    /// Every node; the first three were created primaries.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the six servers, creates the cluster (`redis-cli --cluster
    /// create ... --cluster-replicas 1`), and waits until every node says
    /// `cluster_state:ok`, every replica is in sync, and a first write
    /// through the cluster succeeds.
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    // A replica syncs at once (the default waits 5 s for
                    // more replicas): the tests wait for every replica to
                    // be in sync, so a failover can promote it.
                    "--repl-diskless-sync-delay",
                    "0",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
        redis_cli_cluster(&args);
        let cluster = RedisCluster { nodes };
        cluster.wait_ok(Duration::from_secs(30));
        cluster
    }

    /// Waits until every live node says `cluster_state:ok`, every replica
    /// is in sync with its primary, and a write through the cluster
    /// succeeds.
    pub fn wait_ok(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let states: Vec<bool> = self
                .nodes
                .iter()
                .filter(|n| n.running())
                .map(|n| {
                    redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query::<String>(&mut n.conn(0))
                        .is_ok_and(|info| info.contains("cluster_state:ok"))
                })
                .collect();
            let synced = self.nodes.iter().filter(|n| n.running()).all(|n| {
                redis::cmd("INFO")
                    .arg("replication")
                    .query::<String>(&mut n.conn(0))
                    .is_ok_and(|info| {
                        info.contains("role:master") || info.contains("master_link_status:up")
                    })
            });
            let written = synced
                && states.iter().all(|ok| *ok)
                && self.client().get_connection().is_ok_and(|mut c| {
                    redis::cmd("SET")
                        .arg("probe")
                        .arg("1")
                        .query::<()>(&mut c)
                        .is_ok()
                });
            if written {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster was not ok within {timeout:?}: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index and node id of each running primary (`ROLE`, `CLUSTER
    /// MYID`); a node that does not answer is left out.
    pub fn primaries(&self) -> Vec<(usize, String)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.running())
            .filter_map(|(i, n)| {
                let mut c = redis::Client::open(n.url()).ok()?.get_connection().ok()?;
                let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut c).ok()?;
                let master =
                    matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"master");
                let id: String = redis::cmd("CLUSTER").arg("MYID").query(&mut c).ok()?;
                master.then_some((i, id))
            })
            .collect()
    }

    /// The seed URLs, comma-separated (`SYMPHONY_REDIS_CLUSTER`).
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A cluster client (routes by slot, follows `MOVED`).
    pub fn client(&self) -> redis::cluster::ClusterClient {
        redis::cluster::ClusterClient::new(
            self.nodes
                .iter()
                .filter(|n| n.running())
                .map(RedisServer::url)
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    /// A connection through the cluster, as any application has.
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        self.client().get_connection().unwrap()
    }
}

/// `redis-cli --cluster ARGS...` (create, reshard, ...), which must succeed.
pub fn redis_cli_cluster(args: &[&str]) {
    run_ok(Command::new("redis-cli").arg("--cluster").args(args));
}

impl Backend for RedisCluster {
    fn db(&self, _db: u32) -> AnyConn {
        AnyConn::Cluster(Box::new(self.conn()))
    }
    fn server_url(&self) -> String {
        self.nodes[0].url()
    }
    fn is_cluster(&self) -> bool {
        true
    }
    fn point(&self, cmd: &mut Command) {
        cmd.env("SYMPHONY_REDIS_CLUSTER", self.seeds());
    }
    fn target(&self) -> symphony_host::pools::RedisTarget {
        symphony_host::pools::RedisTarget::Cluster(self.seeds().parse().unwrap())
    }
    fn log_path(&self) -> PathBuf {
        self.nodes[0].log_path()
    }
}

/// A directory holding a manifest, with the shared compile cache.
pub fn write_manifest(dir: &Path, plugins: &str, extra: &str) -> PathBuf {
    let cache = root().join("target/test-wasm-cache");
    let text = format!(
        "[runtime]\ncache_dir = {:?}\ntimeout = \"2s\"\nshutdown_grace = \"10s\"\n{extra}\n{plugins}",
        cache.display().to_string()
    );
    let path = dir.join("manifest.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every capability, for tests that are not about capabilities.
pub const ALL_CAPABILITIES: &str = r#"["user", "handler-state", "table", "shared-state", "batch", "generic", "trigger", "pubsub"]"#;

/// A `[[plugin]]` entry serving every tenant with every capability.
pub fn plugin_entry(name: &str, wasm: &str, actions: &[&str]) -> String {
    plugin_entry_with(
        name,
        wasm,
        actions,
        &format!("tenants = [\"*\"]\ncapabilities = {ALL_CAPABILITIES}\n"),
    )
}

/// A `[[plugin]]` entry with its own tenants, capabilities and limits (TOML
/// lines that follow `actions`).
pub fn plugin_entry_with(name: &str, wasm: &str, actions: &[&str], rest: &str) -> String {
    let actions: Vec<String> = actions.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "[[plugin]]\nname = {name:?}\npath = {:?}\nactions = [{}]\n{rest}\n",
        plugin(wasm),
        actions.join(", ")
    )
}

#[derive(Default)]
struct Lines {
    events: Vec<Value>,
    raw: Vec<String>,
    closed: bool,
}

/// The host process under test, with its parsed JSON log lines.
pub struct Host {
    child: Option<Child>,
    lines: Arc<(Mutex<Lines>, Condvar)>,
    _dir: tempfile::TempDir,
    /// The test redis-server's log file, shown when a wait fails.
    redis_log: Option<PathBuf>,
}

impl Host {
    /// Starts `symphony-host --log-format json run` on a manifest with
    /// `plugins` against `redis`, and waits until it listens.
    pub fn start(redis: &impl Backend, plugins: &str) -> Host {
        Self::start_with(redis, plugins, "")
    }

    /// As [`Host::start`], with extra manifest text (before the plugins).
    pub fn start_with(redis: &impl Backend, plugins: &str, extra: &str) -> Host {
        Self::start_in(tempfile::tempdir().unwrap(), redis, plugins, extra)
    }

    /// As [`Host::start_with`], with the manifest in `dir` (which the host keeps).
    pub fn start_in(
        dir: tempfile::TempDir,
        redis: &impl Backend,
        plugins: &str,
        extra: &str,
    ) -> Host {
        let manifest = write_manifest(dir.path(), plugins, extra);
        let mut host = Host::spawn(&manifest, redis, dir);
        host.wait_for("the listener to subscribe", Duration::from_secs(20), |e| {
            e["event"] == "listening"
        });
        host
    }

    /// As [`Host::start_with`], with more arguments to `run` (before the
    /// manifest).
    pub fn start_with_args(
        redis: &impl Backend,
        plugins: &str,
        extra: &str,
        run_args: &[&str],
    ) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let manifest = write_manifest(dir.path(), plugins, extra);
        let mut host = Self::spawn_inner(&manifest, redis, dir, true, "info", run_args);
        host.wait_for("the listener to subscribe", Duration::from_secs(20), |e| {
            e["event"] == "listening"
        });
        host
    }

    /// Starts the host on `manifest` against `redis` without waiting.
    pub fn spawn(manifest: &Path, redis: &impl Backend, dir: tempfile::TempDir) -> Host {
        Self::spawn_inner(manifest, redis, dir, true, "info", &[])
    }

    /// As [`Host::spawn`], with `RUST_LOG` set to `filter`.
    pub fn spawn_logging(
        manifest: &Path,
        redis: &impl Backend,
        dir: tempfile::TempDir,
        filter: &str,
    ) -> Host {
        Self::spawn_inner(manifest, redis, dir, true, filter, &[])
    }

    /// As [`Host::spawn`], but the manifest's `[redis]` is used as written.
    pub fn spawn_without_override(
        manifest: &Path,
        redis: &impl Backend,
        dir: tempfile::TempDir,
    ) -> Host {
        Self::spawn_inner(manifest, redis, dir, false, "info", &[])
    }

    fn spawn_inner(
        manifest: &Path,
        redis: &impl Backend,
        dir: tempfile::TempDir,
        override_url: bool,
        filter: &str,
        run_args: &[&str],
    ) -> Host {
        let mut cmd = host_cmd();
        cmd.env_remove("SYMPHONY_REDIS_URL")
            .env_remove("SYMPHONY_REDIS_CLUSTER");
        if override_url {
            redis.point(&mut cmd);
        }
        let mut child = cmd
            .args(["--log-format", "json", "run"])
            .args(run_args)
            .arg(manifest)
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn symphony-host");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new((Mutex::new(Lines::default()), Condvar::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (lock, cv) = &*sink;
                let mut l = lock.lock().unwrap();
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    l.events.push(v);
                }
                l.raw.push(line);
                cv.notify_all();
            }
            let (lock, cv) = &*sink;
            lock.lock().unwrap().closed = true;
            cv.notify_all();
        });
        Host {
            child: Some(child),
            lines,
            _dir: dir,
            redis_log: Some(redis.log_path()),
        }
    }

    /// The directory holding the manifest (`manifest.toml`).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// A line of the host's `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
    pub fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Every log line so far.
    pub fn log(&self) -> String {
        self.lines.0.lock().unwrap().raw.join("\n")
    }

    /// Every JSON event so far matching `pred`.
    pub fn events(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let l = self.lines.0.lock().unwrap();
        l.events.iter().filter(|e| pred(e)).cloned().collect()
    }

    /// The admin server's base URL (`http://127.0.0.1:PORT/`), from the
    /// host's start-up line.
    pub fn admin_url(&self) -> String {
        let e = self
            .try_wait_for(Duration::from_secs(20), |e| e["event"] == "admin_listening")
            .unwrap_or_else(|| panic!("no admin_listening line\n{}", self.log()));
        e["url"].as_str().unwrap().to_owned()
    }

    /// Waits (bounded) for the first event matching `pred`; panics with the
    /// host's log if none comes.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for_n(what, timeout, 1, pred).remove(0)
    }

    /// The first event matching `pred`, waiting up to `timeout`; `None`
    /// when none came (for tests that report every failure at the end).
    pub fn try_wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.await_n(timeout, 1, pred)
            .ok()
            .map(|mut found| found.remove(0))
    }

    /// Waits (bounded) until `n` events match `pred`.
    pub fn wait_for_n(
        &mut self,
        what: &str,
        timeout: Duration,
        n: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let seen = match self.await_n(timeout, n, pred) {
            Ok(found) => return found,
            Err(seen) => seen,
        };
        let (raw, state) = {
            let l = self.lines.0.lock().unwrap();
            (
                l.raw.join("\n"),
                if l.closed { "exited" } else { "running" },
            )
        };
        let redis_log = self
            .redis_log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        panic!(
            "waited {timeout:?} for {what} ({seen} of {n} seen); host {state}; host log:\n{raw}\n\
             redis-server log:\n{redis_log}",
        );
    }

    /// Waits up to `timeout` (or until the host exits) for `n` events
    /// matching `pred`: them, or how many came.
    fn await_n(
        &self,
        timeout: Duration,
        n: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Vec<Value>, usize> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.lines;
        let mut l = lock.lock().unwrap();
        loop {
            let found: Vec<Value> = l.events.iter().filter(|e| pred(e)).cloned().collect();
            if found.len() >= n {
                return Ok(found);
            }
            let now = Instant::now();
            if now >= deadline || l.closed {
                return Err(found.len());
            }
            l = cv.wait_timeout(l, deadline - now).unwrap().0;
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("host already stopped");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "host did not exit within {timeout:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A dispatch event for `action`/`id` (any outcome).
pub fn is_dispatch(e: &Value, action: &str, id: &str) -> bool {
    e["event"] == "dispatch" && e["action"] == action && e["id"] == id
}

/// Waits until nothing of `tenant` is left to run: its due index is empty
/// and no host holds a lease (every claimed firing has finished). A firing
/// that could still run (again) is in one of the two, so after this, counts
/// of runs are final. The recorder's own `seen_` triggers (due a minute
/// after each run) are not waited for; other plugins that arm triggers of
/// their own do not settle.
pub fn wait_settled(redis: &RedisServer, tenant: &str, timeout: Duration) {
    let mut db8 = redis.conn(8);
    let what = format!("{tenant}'s firings to settle");
    eventually(timeout, &what, || {
        let members: Vec<String> =
            redis::Commands::zrange(&mut db8, format!("symphony:due:{tenant}"), 0, -1).unwrap();
        let due = members
            .iter()
            .filter(|m| !m.contains(":EXPTRIGGER:seen_"))
            .count();
        let leased: u64 = redis::Commands::zcard(&mut db8, "symphony:leases").unwrap();
        match (due, leased) {
            (0, 0) => Ok(()),
            _ => Err(format!("{due} still indexed, {leased} leased")),
        }
    });
}

/// The library's gauges of `redis`, a server or a cluster.
pub fn gauges(redis: &impl Backend) -> symphony_host::delivery::Gauges {
    let gauges = std::cell::Cell::new(None);
    let out = &gauges;
    with_pools(redis, |pools| async move {
        let delivery = symphony_host::delivery::Delivery::new(&pools).unwrap();
        out.set(Some(delivery.gauges().await.unwrap()));
    });
    gauges.get().unwrap()
}

/// Waits until nothing is left to run on `redis`, a server or a cluster:
/// the library's gauges count no pending entry and no lease.
pub fn wait_drained(redis: &impl Backend, timeout: Duration) {
    eventually(timeout, "every firing to settle", || {
        let g = gauges(redis);
        match g.pending == 0 && g.leases == 0 {
            true => Ok(()),
            false => Err(format!("{g:?}")),
        }
    });
}

/// Sets `key` in `db` to expire after `ttl_ms`, the way any client would.
pub fn set_expiring(conn: &mut impl redis::ConnectionLike, key: &[u8], ttl_ms: u64) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("")
        .arg("PX")
        .arg(ttl_ms)
        .query(conn)
        .unwrap();
}

/// A command running the `symphony-host` binary under test.
/// (A `run` takes a free port for its admin server: many hosts run at once.)
pub fn host_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_symphony-host"));
    cmd.env("SYMPHONY_ADMIN_LISTEN", "127.0.0.1:0");
    cmd
}

/// Runs `cmd`, asserts it succeeded (showing its stdout and stderr if
/// not), returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Schedules triggers through the host library (as the host API, the CLI and
/// plugins do): each key and its due-time index entry in one script.
/// `triggers` are `(tenant, action, id, ttl_ms)`.
pub fn arm(redis: &impl Backend, triggers: &[(String, String, String, u64)]) {
    use symphony_host::repo::TriggerRepo;
    with_pools(redis, |pools| async move {
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in triggers.chunks(triggers.len().div_ceil(16).max(1)) {
            let chunk = chunk.to_vec();
            let pools = pools.clone();
            tasks.spawn(async move {
                for (tenant, action, id, ttl) in chunk {
                    TriggerRepo::new(&pools, &tenant)
                        .unwrap()
                        .set(&action, &id, Duration::from_millis(ttl))
                        .await
                        .unwrap();
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    });
}

/// Runs `f` with the host library's pools on `redis`, as an embedding
/// application would.
pub fn with_pools<F, Fut>(redis: &impl Backend, f: F)
where
    F: FnOnce(symphony_host::pools::Pools) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { f(symphony_host::pools::Pools::connect(&redis.target()).unwrap()).await });
}

/// `n` triggers of `action` for tenant `acme`, ids `0..n`, due evenly over
/// `spread_ms` starting `first_ms` from now.
pub fn spread(
    action: &str,
    n: usize,
    first_ms: u64,
    spread_ms: u64,
) -> Vec<(String, String, String, u64)> {
    (0..n)
        .map(|i| {
            (
                "acme".to_owned(),
                action.to_owned(),
                i.to_string(),
                first_ms + spread_ms * i as u64 / n.max(1) as u64,
            )
        })
        .collect()
}

/// Counts successful runs (dispatch events with outcome ok) per id for
/// `action` over several hosts' logs. (A failed attempt that is retried is
/// not a second run.)
pub fn dispatch_counts(hosts: &[&Host], action: &str) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for host in hosts {
        for e in host
            .events(|e| e["event"] == "dispatch" && e["action"] == action && e["outcome"] == "ok")
        {
            *counts
                .entry(e["id"].as_str().unwrap_or("").to_owned())
                .or_default() += 1;
        }
    }
    counts
}

/// Waits (bounded) until the hosts together dispatched `n` distinct ids of `action`.
pub fn wait_dispatched(
    hosts: &[&Host],
    action: &str,
    n: usize,
    timeout: Duration,
) -> std::collections::HashMap<String, usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let counts = dispatch_counts(hosts, action);
        if counts.len() >= n {
            return counts;
        }
        if Instant::now() > deadline {
            let missing: Vec<String> = (0..n)
                .map(|i| i.to_string())
                .filter(|id| !counts.contains_key(id))
                .take(20)
                .collect();
            panic!(
                "after {timeout:?} only {} of {n} {action} triggers were dispatched; missing (first 20): {missing:?}\nlast host log:\n{}",
                counts.len(),
                hosts
                    .last()
                    .map(|h| h.log())
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
