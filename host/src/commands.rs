//! What the command line does, as library calls: `check`, the trigger
//! commands and the dead-letter commands. `main.rs` only parses arguments,
//! calls these and prints their results.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::delivery::{DeadFilter, DeadList, Delivery};
use crate::keys;
use crate::manifest::{
    ClusterSeeds, Manifest, RedisOverride, RedisTarget, RedisUrl, seed_pool_urls,
};
use crate::pools::Pools;
use crate::repo::{self, TriggerRepo};

/// One checked plugin, as reported by [`check`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckedPlugin {
    /// Plugin name.
    pub name: String,
    /// Resolved file path.
    pub path: PathBuf,
    /// Content digest (version).
    pub digest: String,
    /// Load time, compile included (short when cached).
    pub load_time: Duration,
    /// Action prefixes routed to it.
    pub actions: Vec<String>,
}

/// Parses and validates a manifest and compiles every plugin, without
/// connecting to Redis.
///
/// # Errors
/// The manifest error (with file:line:column) or every plugin load error.
pub async fn check(manifest_path: &Path) -> anyhow::Result<Vec<CheckedPlugin>> {
    let manifest = Manifest::load(manifest_path)?;
    let pools = Pools::connect(&manifest.redis_target(None))?;
    let set = crate::plugins::start(&manifest, pools)?.set;
    Ok(set
        .plugins()
        .iter()
        .map(|p| CheckedPlugin {
            name: p.name().to_string(),
            path: p.path().to_owned(),
            digest: p.digest().to_owned(),
            load_time: p.compile_time(),
            actions: set.prefixes_of(p).into_iter().map(str::to_owned).collect(),
        })
        .collect())
}

/// Where the commands find Redis: a manifest's pools, a URL or a cluster,
/// or both (the URL or cluster replaces the manifest's), or neither (the
/// local server). Each pool alias keeps its seed DB (on a cluster, DB 0);
/// triggers and dead letters live in the expiry pool (DB 8).
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Take the Redis settings from this manifest.
    pub manifest: Option<PathBuf>,
    /// Redis URL (overrides the manifest's).
    pub redis_url: Option<RedisUrl>,
    /// Redis Cluster seeds (override the manifest's and `redis_url`).
    pub redis_cluster: Option<ClusterSeeds>,
}

impl Target {
    /// The pools this target names (connections open lazily).
    ///
    /// # Errors
    /// A manifest that does not load, or a URL the client refuses.
    pub fn pools(&self) -> anyhow::Result<Pools> {
        let over = RedisOverride::from_options(self.redis_url.clone(), self.redis_cluster.clone());
        let (target, wait) = match (&self.manifest, over) {
            (Some(path), over) => {
                let manifest = Manifest::load(path)?;
                (
                    manifest.redis_target(over.as_ref()),
                    manifest.redis.wait_replicas,
                )
            }
            (None, Some(over)) => (over.target(), 0),
            (None, None) => (RedisTarget::Servers(seed_pool_urls(&RedisUrl::local())), 0),
        };
        Ok(Pools::connect(&target)?.with_wait_replicas(wait))
    }

    fn delivery(&self) -> anyhow::Result<Delivery> {
        Ok(Delivery::new(&self.pools()?)?)
    }
}

/// Every dead letter, newest first, and the list's entries that are not one.
///
/// # Errors
/// Redis unreachable, or the target's settings do not load.
pub async fn dead_letters(target: &Target) -> anyhow::Result<DeadList> {
    Ok(target.delivery()?.dead_letters().await?)
}

/// Queues the dead letters `filter` matches to run again now, with a fresh
/// attempt count; returns how many. (The admin API calls the same
/// [`Delivery::retry_dead`].)
///
/// # Errors
/// Redis unreachable, or the target's settings do not load.
pub async fn retry_dead(target: &Target, filter: &DeadFilter) -> anyhow::Result<u64> {
    Ok(target.delivery()?.retry_dead(filter).await?)
}

/// Deletes the dead letters `filter` matches; returns how many.
///
/// # Errors
/// Redis unreachable, or the target's settings do not load.
pub async fn purge_dead(target: &Target, filter: &DeadFilter) -> anyhow::Result<u64> {
    Ok(target.delivery()?.purge_dead(filter).await?)
}

/// Sets `{tenant}:EXPTRIGGER:{action}:{id}` to fire after `ttl`; returns the
/// key written.
///
/// # Errors
/// A tenant, action or id the key format refuses, a TTL out of range, or
/// Redis unreachable.
pub async fn set_trigger(
    target: &Target,
    tenant: &str,
    action: &str,
    id: &str,
    ttl: Duration,
) -> anyhow::Result<String> {
    let repo = TriggerRepo::new(&target.pools()?, tenant)?;
    repo.set(action, id, ttl)
        .await
        .with_context(|| format!("cannot set trigger {action}:{id} of tenant {tenant}"))
}

/// Cancels a pending trigger; returns whether one was pending.
///
/// # Errors
/// A tenant, action or id the key format refuses, or Redis unreachable.
pub async fn cancel_trigger(
    target: &Target,
    tenant: &str,
    action: &str,
    id: &str,
) -> anyhow::Result<bool> {
    let repo = TriggerRepo::new(&target.pools()?, tenant)?;
    repo.delete(action, id)
        .await
        .with_context(|| format!("cannot cancel trigger {action}:{id} of tenant {tenant}"))
}

/// What [`set_triggers`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SetMany {
    /// Triggers set.
    pub triggers: usize,
    /// Distinct tenants among them.
    pub tenants: usize,
}

/// Sets the triggers of `TENANT ACTION ID TTL` lines (see
/// [`parse_trigger_lines`]): every line is checked first, so a bad line sets
/// nothing; then each tenant's triggers are written in batches.
///
/// # Errors
/// The first bad line (nothing set), or Redis unreachable (the tenants
/// before the failing one are set).
pub async fn set_triggers(target: &Target, lines: &str) -> anyhow::Result<SetMany> {
    let batches = parse_trigger_lines(lines).context("nothing was set")?;
    let pools = target.pools()?;
    let mut triggers = 0;
    for (tenant, list) in &batches {
        let repo = TriggerRepo::new(&pools, tenant)?;
        triggers += repo
            .set_many(list)
            .await
            .with_context(|| format!("cannot set the triggers of tenant {tenant}"))?
            .len();
    }
    Ok(SetMany {
        triggers,
        tenants: batches.len(),
    })
}

/// Triggers per tenant, in first-seen order: `(tenant, [(action, id, ttl)])`.
pub type TriggerLines = Vec<(String, Vec<(String, String, Duration)>)>;

/// Parses `TENANT ACTION ID TTL` lines, separated by spaces or tabs; blank
/// lines and lines starting with `#` are skipped. Each key and TTL is
/// checked as [`set_trigger`] would.
///
/// # Errors
/// The first bad line, by number.
pub fn parse_trigger_lines(text: &str) -> anyhow::Result<TriggerLines> {
    let mut batches: TriggerLines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [tenant, action, id, ttl] = fields.as_slice() else {
            anyhow::bail!(
                "line {n}: expected `TENANT ACTION ID TTL`, found {} fields: {line:?}",
                fields.len()
            );
        };
        let ttl = humantime::parse_duration(ttl)
            .with_context(|| format!("line {n}: bad TTL {ttl:?} (use e.g. 500ms, 5s, 2m)"))?;
        keys::trigger_key(tenant, action, id).with_context(|| format!("line {n}: {line:?}"))?;
        repo::ttl_ms(ttl).with_context(|| format!("line {n}"))?;
        let trigger = ((*action).to_owned(), (*id).to_owned(), ttl);
        match batches.iter_mut().find(|(t, _)| t == tenant) {
            Some((_, list)) => list.push(trigger),
            None => batches.push(((*tenant).to_owned(), vec![trigger])),
        }
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_lines_group_by_tenant_and_name_the_bad_line() {
        let batches =
            parse_trigger_lines("# c\nacme a 1 5s\n\nbeta b 2 1m\tacme\nacme a 3 500ms\n");
        let err = batches.expect_err("a line of five fields");
        assert!(format!("{err:#}").contains("line 4"), "{err:#}");

        let batches = parse_trigger_lines("acme a 1 5s\nbeta b 2 1m\nacme a 3 500ms\n")
            .expect("three good lines");
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].0, "acme");
        assert_eq!(batches[0].1.len(), 2);
        assert_eq!(batches[1].1[0].2, Duration::from_secs(60));

        let err = parse_trigger_lines("acme a 1 soon").expect_err("a bad TTL");
        assert!(format!("{err:#}").contains("line 1: bad TTL"), "{err:#}");
        let err = parse_trigger_lines("acme a b\0c 1s").expect_err("a NUL in the id");
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
    }
}
