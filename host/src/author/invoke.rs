//! `symphony-host invoke`: runs the plugin that owns an action once, now,
//! with the manifest's limits and capabilities, and records every Redis
//! command its host calls made.
//!
//! The job runs as a dispatch would run it ([`Runtime::invoke`](crate::runtime::Runtime::invoke), a fresh
//! store scoped to the tenant) but outside delivery: no due index, lease or
//! trigger key is read or written, unless the plugin itself calls the
//! trigger repository.
//!
//! Commands are recorded with Redis's `MONITOR`, on a connection of its
//! own, keeping the commands of this process's pool connections (by their
//! client address) and those their scripts ran (`lua`). So the record is
//! what Redis executed, in its order, scripts' commands included; other
//! clients of the same server are left out.
//!
//! `--dry-run` runs against a throwaway copy: a private `redis-server`
//! (from `PATH`) on a free loopback port, into which the tenant's keys
//! (`{tenant}:*`, in every pool's DB, with their TTLs) are copied with
//! `DUMP`/`RESTORE`. The plugin reads the tenant's real data and its
//! writes go to the copy, which is deleted afterwards. Nothing is written
//! to the configured Redis.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;

use crate::keys;
use crate::manifest::{Manifest, RedisOverride};
use crate::pools::{PoolAlias, Pools, RedisTarget, RedisUrl, seed_pool_urls};
use crate::runtime::{Job, Outcome};

/// What [`invoke`] runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Request {
    /// Tenant.
    pub tenant: String,
    /// Action (routes to the plugin).
    pub action: String,
    /// Identifier.
    pub id: String,
    /// Run against a throwaway copy of the tenant's keys.
    pub dry_run: bool,
}

impl Request {
    /// A request for one run.
    pub fn new(tenant: &str, action: &str, id: &str, dry_run: bool) -> Self {
        Request {
            tenant: tenant.to_owned(),
            action: action.to_owned(),
            id: id.to_owned(),
            dry_run,
        }
    }
}

/// One Redis command the run made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recorded {
    /// The DB it ran in.
    pub db: u32,
    /// Run by a script (a Lua `redis.call`) the host sent.
    pub in_script: bool,
    /// The command and its arguments, as `MONITOR` shows them (quoted,
    /// escaped).
    pub args: Vec<String>,
}

/// How a run went.
#[derive(Debug)]
#[non_exhaustive]
pub struct Invoked {
    /// The plugin that ran.
    pub plugin: String,
    /// The trigger key it was given.
    pub key: String,
    /// How it ended.
    pub outcome: Outcome,
    /// How long `on-expire` took, instantiation included.
    pub duration: Duration,
    /// Every Redis command of its host calls, in order.
    pub commands: Vec<Recorded>,
    /// Keys copied into the throwaway server (`--dry-run`), else `None`.
    pub copied: Option<usize>,
}

/// The most keys `--dry-run` copies.
const MAX_COPIED_KEYS: usize = 100_000;

/// Runs the plugin that owns `request.action` once.
///
/// # Errors
/// A manifest or plugin that does not load, an action no plugin owns, a
/// tenant the plugin does not serve, a malformed key, a cluster (not
/// supported), or Redis unreachable. A run that fails is not an error: its
/// [`Outcome`] says how it failed.
pub async fn invoke(
    manifest_path: &Path,
    over: Option<&RedisOverride>,
    request: &Request,
) -> anyhow::Result<Invoked> {
    let manifest = Manifest::load(manifest_path)?;
    let key = keys::trigger_key(&request.tenant, &request.action, &request.id)
        .context("not a trigger this host could run")?;
    let RedisTarget::Servers(urls) = manifest.redis_target(over) else {
        anyhow::bail!(
            "invoke needs a standalone Redis (it records commands with MONITOR); use --redis-url"
        );
    };
    let scratch = if request.dry_run {
        let server = Scratch::start().await?;
        let copied = server.copy_tenant(&urls, &request.tenant).await?;
        Some((server, copied))
    } else {
        None
    };
    let urls = match &scratch {
        Some((server, _)) => seed_pool_urls(&server.url),
        None => urls,
    };
    let pools = Pools::connect(&RedisTarget::Servers(urls.clone()))?;
    // The manifest's [tenants] quotas hold here as in `run`.
    let crate::plugins::Started { runtime, set, .. } =
        crate::plugins::start(&manifest, pools.clone())?;
    let plugin = owner(&set, manifest_path, request)?;
    let server_url = urls
        .get(&PoolAlias::Expiry)
        .or_else(|| urls.values().next())
        .context("no Redis configured")?;
    let ours = our_clients(&pools, server_url, &request.tenant).await?;
    let client =
        redis::Client::open(server_url.as_str()).context("a Redis URL the client refuses")?;
    let monitor = client
        .get_async_monitor()
        .await
        .with_context(|| format!("cannot MONITOR Redis at {}", server_url.server()))?;
    let mut lines = monitor.into_on_message::<String>();

    let job = Arc::new(Job {
        tenant: request.tenant.clone(),
        action: request.action.clone(),
        id: request.id.clone(),
        key: key.clone(),
        plugin: plugin.name().clone(),
        generation: set.generation(),
    });
    let span = tracing::info_span!(
        "job",
        tenant = %job.tenant,
        action = %job.action,
        id = %job.id,
        plugin = %job.plugin,
    );
    let started = Instant::now();
    let outcome = tracing::Instrument::instrument(runtime.invoke(&plugin, job), span).await;
    let duration = started.elapsed();
    let commands = recorded_until_marker(&pools, &ours, &mut lines).await?;
    Ok(Invoked {
        plugin: plugin.name().to_string(),
        key,
        outcome,
        duration,
        commands,
        copied: scratch.map(|(_, n)| n),
    })
}

/// The plugin of `set` that owns the request's action and serves its
/// tenant.
fn owner(
    set: &crate::plugins::PluginSet,
    manifest_path: &Path,
    request: &Request,
) -> anyhow::Result<Arc<crate::runtime::LoadedPlugin>> {
    let plugin = set.route(&request.action).cloned().with_context(|| {
        let prefixes: Vec<&str> = set
            .plugins()
            .iter()
            .flat_map(|p| set.prefixes_of(p))
            .collect();
        format!(
            "no plugin of {} owns action {:?} (its action prefixes: {})",
            manifest_path.display(),
            request.action,
            prefixes.join(", ")
        )
    })?;
    anyhow::ensure!(
        crate::policy::serves(&plugin.policy().tenants, &request.tenant),
        "plugin {} does not serve tenant {:?} (see its `tenants` in {})",
        plugin.name(),
        request.tenant,
        manifest_path.display()
    );
    Ok(plugin)
}

/// The client addresses of this process's connections to the one server
/// every pool must be on (`CLIENT INFO` through each).
async fn our_clients(
    pools: &Pools,
    server_url: &RedisUrl,
    tenant: &str,
) -> anyhow::Result<HashSet<String>> {
    let mut ours = HashSet::new();
    for alias in PoolAlias::ALL {
        let Ok(pool) = pools.get(alias) else { continue };
        anyhow::ensure!(
            pool.url().server() == server_url.server(),
            "invoke records one Redis server's commands; pool {} is on another ({})",
            alias.as_str(),
            pool.url().server()
        );
        for conn in [pool.conn(), pool.conn_for(tenant)] {
            let info: String = conn
                .query(&redis::cmd("CLIENT").arg("INFO").clone())
                .await
                .with_context(|| format!("cannot reach Redis at {}", pool.url().server()))?;
            if let Some(addr) = info
                .split_whitespace()
                .find_map(|f| f.strip_prefix("addr="))
            {
                ours.insert(addr.to_owned());
            }
        }
    }
    Ok(ours)
}

/// The commands MONITOR showed from `ours` (and the scripts they ran), up
/// to a marker sent through one of our connections: once MONITOR shows it,
/// it has shown every command before it.
async fn recorded_until_marker(
    pools: &Pools,
    ours: &HashSet<String>,
    lines: &mut (impl futures::Stream<Item = String> + Unpin),
) -> anyhow::Result<Vec<Recorded>> {
    let marker = format!("symphony-invoke-end-{}", fastrand::u64(..));
    let pool = pools
        .get(PoolAlias::Expiry)
        .or_else(|_| pools.get(PoolAlias::Default))?;
    let _: String = pool
        .conn()
        .query(&redis::cmd("ECHO").arg(&marker).clone())
        .await
        .context("Redis went away during the run")?;
    let mut commands = Vec::new();
    let read = async {
        let mut script_open = false;
        while let Some(line) = lines.next().await {
            if line.contains(&marker) {
                return true;
            }
            if let Some(parsed) = parse_monitor_line(&line) {
                record(parsed, ours, &mut script_open, &mut commands);
            }
        }
        false
    };
    let complete = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or(false);
    anyhow::ensure!(
        complete,
        "MONITOR stopped before the run's commands were all seen"
    );
    Ok(commands)
}

/// Keeps a MONITOR line if one of `ours` sent it, or a script one of ours
/// called ran it (`script_open`); `CLIENT` calls are left out.
fn record(
    parsed: MonitorLine<'_>,
    ours: &HashSet<String>,
    script_open: &mut bool,
    commands: &mut Vec<Recorded>,
) {
    if parsed.client == "lua" {
        if *script_open {
            commands.push(Recorded {
                db: parsed.db,
                in_script: true,
                args: parsed.args,
            });
        }
        return;
    }
    *script_open = false;
    if !ours.contains(parsed.client) {
        return;
    }
    let command = parsed
        .args
        .first()
        .map(|c| c.trim_matches('"').to_ascii_uppercase());
    if matches!(command.as_deref(), Some("CLIENT")) {
        return;
    }
    *script_open = matches!(
        command.as_deref(),
        Some("EVALSHA" | "EVAL" | "EVALSHA_RO" | "EVAL_RO" | "FCALL")
    );
    commands.push(Recorded {
        db: parsed.db,
        in_script: false,
        args: parsed.args,
    });
}

/// One `MONITOR` line: `1700000000.123456 [10 127.0.0.1:5000] "HSET" "k" "v"`.
struct MonitorLine<'a> {
    db: u32,
    client: &'a str,
    args: Vec<String>,
}

fn parse_monitor_line(line: &str) -> Option<MonitorLine<'_>> {
    let (_, rest) = line.split_once(" [")?;
    let (source, rest) = rest.split_once("] ")?;
    let (db, client) = source.split_once(' ')?;
    Some(MonitorLine {
        db: db.parse().ok()?,
        client,
        args: split_quoted(rest),
    })
}

/// MONITOR's arguments: each in double quotes, `\"` and `\\` escaped.
fn split_quoted(text: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut arg = String::from('"');
        while let Some(c) = chars.next() {
            arg.push(c);
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        arg.push(n);
                    }
                }
                '"' => break,
                _ => {}
            }
        }
        args.push(arg);
    }
    args
}

/// A private `redis-server` for `--dry-run`, stopped and deleted on drop.
struct Scratch {
    child: tokio::process::Child,
    url: RedisUrl,
    _dir: tempfile::TempDir,
}

impl Scratch {
    async fn start() -> anyhow::Result<Scratch> {
        let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
        let mut last = None;
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .context("no free loopback port")?
                .port();
            let child = tokio::process::Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                ])
                .args(["--appendonly", "no", "--dir"])
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context(
                    "--dry-run needs redis-server on PATH (its throwaway copy is a private server)",
                )?;
            let url: RedisUrl = format!("redis://127.0.0.1:{port}")
                .parse()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let client = redis::Client::open(url.as_str())?;
            let mut child = child;
            let pid = child.id().map(u64::from);
            let deadline = Instant::now() + Duration::from_secs(5);
            // Ours once it answers with its process id: a server of
            // someone else's that took the port first is never written to.
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await
                    && let Ok(info) = redis::cmd("INFO")
                        .arg("server")
                        .query_async::<String>(&mut c)
                        .await
                {
                    let serving: Option<u64> = info
                        .lines()
                        .find_map(|l| l.strip_prefix("process_id:")?.trim().parse().ok());
                    anyhow::ensure!(
                        serving == pid,
                        "port {port} was taken by another Redis before the throwaway one started"
                    );
                    return Ok(Scratch {
                        child,
                        url,
                        _dir: dir,
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.start_kill();
            last = Some(port);
        }
        anyhow::bail!("the throwaway redis-server did not start (last port tried: {last:?})")
    }

    /// Copies `{tenant}:*` of every pool's DB, with TTLs; returns how many keys.
    async fn copy_tenant(
        &self,
        from: &std::collections::BTreeMap<PoolAlias, RedisUrl>,
        tenant: &str,
    ) -> anyhow::Result<usize> {
        let pattern = format!("{}:*", glob_escape(tenant));
        let mut copied = 0;
        for (alias, url) in from {
            let mut src = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await
                .with_context(|| format!("cannot reach Redis at {}", url.server()))?;
            let mut dst = redis::Client::open(self.url.with_db(alias.seed_db()).as_str())?
                .get_multiplexed_async_connection()
                .await
                .context("cannot reach the throwaway redis-server")?;
            let mut cursor = 0_u64;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut src)
                    .await?;
                for key in keys {
                    let (dump, ttl): (Option<Vec<u8>>, i64) = redis::pipe()
                        .cmd("DUMP")
                        .arg(&key)
                        .cmd("PTTL")
                        .arg(&key)
                        .query_async(&mut src)
                        .await?;
                    let Some(dump) = dump else { continue }; // gone meanwhile
                    let () = redis::cmd("RESTORE")
                        .arg(&key)
                        .arg(ttl.max(0))
                        .arg(dump)
                        .arg("REPLACE")
                        .query_async(&mut dst)
                        .await?;
                    copied += 1;
                    anyhow::ensure!(
                        copied <= MAX_COPIED_KEYS,
                        "tenant {tenant} has more than {MAX_COPIED_KEYS} keys: too many to copy for --dry-run"
                    );
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(copied)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// `text` with Redis glob characters escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_lines_parse() {
        let line =
            r#"1700000000.123456 [10 127.0.0.1:5000] "HINCRBY" "acme:state:x:u\"1" "runs" "1""#;
        let parsed = parse_monitor_line(line).expect("a command line");
        assert_eq!(parsed.db, 10);
        assert_eq!(parsed.client, "127.0.0.1:5000");
        assert_eq!(
            parsed.args,
            [
                r#""HINCRBY""#,
                r#""acme:state:x:u\"1""#,
                r#""runs""#,
                r#""1""#
            ]
        );
        let lua = parse_monitor_line(r#"1.0 [8 lua] "ZADD" "k" "1" "m""#).expect("a script line");
        assert_eq!((lua.db, lua.client, lua.args.len()), (8, "lua", 4));
        assert!(parse_monitor_line("OK").is_none());
        assert_eq!(glob_escape("a*b?[c]\\"), r"a\*b\?\[c\]\\");
    }
}
