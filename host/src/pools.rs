//! Redis pools: one reconnecting connection per alias, as mimeiapify's six.
//!
//! Each alias gets lazily connecting connections ([`RedisConn`]): they are built
//! without touching the network (so the host starts while Redis is down),
//! connects on first use and reconnects by itself after a failure. Commands
//! are multiplexed and pipelined on it; cloning it is cheap.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Deserialize;

use crate::backend::{Cluster, RedisConn};

/// mimeiapify's pool aliases (`RedisClient.POOL_DB_MAPPING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolAlias {
    /// General keys (`RedisGeneric`), DB 15.
    Default,
    /// User records, DB 11.
    User,
    /// Handler state, tables and batches, DB 10.
    Handlers,
    /// Shared state between tools and agents, DB 9.
    SymphonySharedState,
    /// Trigger keys and the expiry listener, DB 8.
    Expiry,
    /// Pub/sub messages, DB 7.
    Pubsub,
}

impl PoolAlias {
    /// Every alias, in mimeiapify's order.
    pub const ALL: [PoolAlias; 6] = [
        PoolAlias::Default,
        PoolAlias::User,
        PoolAlias::Handlers,
        PoolAlias::SymphonySharedState,
        PoolAlias::Expiry,
        PoolAlias::Pubsub,
    ];

    /// The DB mimeiapify gives this alias when one URL is configured.
    pub fn seed_db(self) -> u32 {
        match self {
            PoolAlias::Default => 15,
            PoolAlias::User => 11,
            PoolAlias::Handlers => 10,
            PoolAlias::SymphonySharedState => 9,
            PoolAlias::Expiry => 8,
            PoolAlias::Pubsub => 7,
        }
    }

    /// The alias as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolAlias::Default => "default",
            PoolAlias::User => "user",
            PoolAlias::Handlers => "handlers",
            PoolAlias::SymphonySharedState => "symphony_shared_state",
            PoolAlias::Expiry => "expiry",
            PoolAlias::Pubsub => "pubsub",
        }
    }
}

impl fmt::Display for PoolAlias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The URL used when the manifest names none and no override is given.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A Redis URL (`redis://`, `rediss://`, `unix://` or `redis+unix://`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct RedisUrl(url::Url);

impl RedisUrl {
    /// The URL as written (after normalisation).
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// This URL pointing at `db`, replacing any DB it names.
    pub fn with_db(&self, db: u32) -> RedisUrl {
        let mut url = self.0.clone();
        if url.scheme().contains("unix") {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "db")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            url.query_pairs_mut()
                .clear()
                .extend_pairs(pairs)
                .append_pair("db", &db.to_string());
        } else {
            url.set_path(&format!("/{db}"));
        }
        RedisUrl(url)
    }

    /// This URL with another host and port (scheme, credentials and DB
    /// kept): a cluster node found from a seed.
    pub fn at(&self, host: &str, port: u16) -> RedisUrl {
        let mut url = self.0.clone();
        if url.set_host(Some(host)).is_err() || url.set_port(Some(port)).is_err() {
            return self.clone();
        }
        RedisUrl(url)
    }

    /// The DB this URL names (0 when none).
    pub fn db(&self) -> u32 {
        if self.0.scheme().contains("unix") {
            return self
                .0
                .query_pairs()
                .find(|(k, _)| k == "db")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
        }
        self.0.path().trim_start_matches('/').parse().unwrap_or(0)
    }

    /// host:port (or the socket path), for logs; never includes a password.
    pub fn server(&self) -> String {
        if self.0.scheme().contains("unix") {
            return self.0.path().to_owned();
        }
        format!(
            "{}:{}",
            self.0.host_str().unwrap_or("?"),
            self.0.port().unwrap_or(6379)
        )
    }
}

impl RedisUrl {
    /// [`DEFAULT_REDIS_URL`]: the local server on the default port.
    #[allow(clippy::expect_used)]
    pub fn local() -> RedisUrl {
        DEFAULT_REDIS_URL
            .parse()
            .expect("DEFAULT_REDIS_URL is a valid Redis URL (unit-tested)")
    }
}

impl FromStr for RedisUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let url = url::Url::parse(s).map_err(|e| format!("invalid Redis URL {s:?}: {e}"))?;
        match url.scheme() {
            "redis" | "rediss" | "unix" | "redis+unix" => {}
            other => {
                return Err(format!(
                    "invalid Redis URL {s:?}: scheme {other:?} is not redis, rediss, unix or redis+unix"
                ));
            }
        }
        if !url.scheme().contains("unix") {
            let path = url.path().trim_start_matches('/');
            if !path.is_empty() && path.parse::<u32>().is_err() {
                return Err(format!(
                    "invalid Redis URL {s:?}: the path must be a DB number, not {path:?}"
                ));
            }
        }
        Ok(RedisUrl(url))
    }
}

impl TryFrom<String> for RedisUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hide the password in logs.
        let mut url = self.0.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        f.write_str(url.as_str())
    }
}

/// The seed nodes of a Redis Cluster (`[redis] cluster`,
/// `SYMPHONY_REDIS_CLUSTER`): at least one `redis://` or `rediss://` URL,
/// none naming a DB other than 0 (a cluster has only DB 0). The client
/// finds the other nodes from any of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct ClusterSeeds(Vec<RedisUrl>);

impl ClusterSeeds {
    /// The seed URLs, as given.
    pub fn urls(&self) -> &[RedisUrl] {
        &self.0
    }

    /// The seeds as host:port, comma-separated (for logs; no password).
    pub fn servers(&self) -> String {
        self.0
            .iter()
            .map(RedisUrl::server)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl TryFrom<Vec<String>> for ClusterSeeds {
    type Error = String;
    fn try_from(seeds: Vec<String>) -> Result<Self, String> {
        if seeds.is_empty() {
            return Err("a Redis Cluster needs at least one seed URL".into());
        }
        let mut urls = Vec::with_capacity(seeds.len());
        for seed in seeds {
            let url: RedisUrl = seed.trim().parse()?;
            if url.0.scheme().contains("unix") {
                return Err(format!(
                    "cluster seed {seed:?}: a cluster node is reached over TCP (redis:// or rediss://), not a socket"
                ));
            }
            if url.db() != 0 {
                return Err(format!(
                    "cluster seed {seed:?} names DB {}: a Redis Cluster has only DB 0, and every pool alias uses it",
                    url.db()
                ));
            }
            urls.push(url);
        }
        Ok(ClusterSeeds(urls))
    }
}

impl FromStr for ClusterSeeds {
    type Err = String;
    /// Comma-separated URLs, as `SYMPHONY_REDIS_CLUSTER` gives them.
    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .try_into()
    }
}

impl fmt::Display for ClusterSeeds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, url) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{url}")?;
        }
        Ok(())
    }
}

/// Where the pools connect: a server (DB) per alias, or one Redis Cluster
/// for every alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// Each alias's URL (DB included).
    Servers(BTreeMap<PoolAlias, RedisUrl>),
    /// A cluster: every alias in its DB 0.
    Cluster(ClusterSeeds),
}

/// Redis settings given on the command line or in the environment, which
/// replace the manifest's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisOverride {
    /// `--redis-url` / `SYMPHONY_REDIS_URL`: one server, each alias in its seed DB.
    Url(RedisUrl),
    /// `--redis-cluster` / `SYMPHONY_REDIS_CLUSTER`: a cluster.
    Cluster(ClusterSeeds),
}

impl RedisOverride {
    /// The override from the two options (clap makes them exclusive).
    pub fn from_options(url: Option<RedisUrl>, cluster: Option<ClusterSeeds>) -> Option<Self> {
        match (url, cluster) {
            (_, Some(seeds)) => Some(RedisOverride::Cluster(seeds)),
            (Some(url), None) => Some(RedisOverride::Url(url)),
            (None, None) => None,
        }
    }

    /// What the override alone names: the URL's server with the seed
    /// DBs, or the cluster.
    pub fn target(&self) -> RedisTarget {
        match self {
            RedisOverride::Url(url) => RedisTarget::Servers(seed_pool_urls(url)),
            RedisOverride::Cluster(seeds) => RedisTarget::Cluster(seeds.clone()),
        }
    }
}

/// Every pool alias on `base`, each with its seed DB (the Python library's
/// `setup_single_url`).
pub fn seed_pool_urls(base: &RedisUrl) -> BTreeMap<PoolAlias, RedisUrl> {
    PoolAlias::ALL
        .iter()
        .map(|&alias| (alias, base.with_db(alias.seed_db())))
        .collect()
}

/// One alias: its URL, a client (for dedicated connections such as pub/sub)
/// and the shared command connection.
#[derive(Clone)]
pub struct Pool {
    url: RedisUrl,
    client: redis::Client,
    /// The first command connection, and the others (see [`CONNECTIONS_PER_POOL`]).
    first: RedisConn,
    others: std::sync::Arc<[RedisConn]>,
    /// Whether another alias's keys are in this pool's keyspace (read on
    /// every generic host call: worked out once, when the pools are built).
    shared: bool,
}

/// Command connections per pool. Commands are pipelined on each; each
/// tenant is given one of them ([`Pool::conn_for`]), so one tenant's slow or
/// large replies hold up at most the tenants that share its connection.
pub const CONNECTIONS_PER_POOL: usize = 4;

impl Pool {
    /// The URL this pool connects to.
    pub fn url(&self) -> &RedisUrl {
        &self.url
    }
    /// A client for opening dedicated connections (pub/sub, CONFIG checks).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }
    /// The pool's first shared, reconnecting command connection (a cheap
    /// clone): the host's own work (delivery) uses it.
    pub fn conn(&self) -> RedisConn {
        self.first.clone()
    }

    /// The command connection of `tenant`: each tenant's calls always take
    /// the same one of the pool's connections, so they pipeline together,
    /// and tenants are spread over the others; a tenant's slow or large
    /// replies hold up only the tenants that share its connection.
    pub fn conn_for(&self, tenant: &str) -> RedisConn {
        // FNV-1a: stable and cheap; the spread need not be cryptographic.
        let hash = tenant.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let n = u64::try_from(self.others.len() + 1).unwrap_or(1);
        match usize::try_from(hash % n).unwrap_or(0) {
            0 => &self.first,
            i => self.others.get(i - 1).unwrap_or(&self.first),
        }
        .clone()
    }
}

/// Every pool alias, built from the manifest's URLs.
#[derive(Clone)]
pub struct Pools {
    /// Shared: a clone (one per host call) is a reference count.
    pools: std::sync::Arc<BTreeMap<PoolAlias, Pool>>,
    /// The runtime the pools were built on, where Redis I/O runs.
    control: Option<tokio::runtime::Handle>,
    /// The cluster every alias is on, if it is one.
    cluster: Option<ClusterSeeds>,
    /// Replicas that must acknowledge an arming (`[redis] wait_replicas`).
    wait_replicas: u32,
}

/// How long a command may wait for its reply before failing.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request to a cluster may take, its retries and redirections
/// included.
const CLUSTER_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a (re)connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl Pools {
    /// Builds a pool per alias without connecting (must run inside Tokio).
    ///
    /// # Errors
    /// A URL the Redis client rejects.
    pub fn new(urls: &BTreeMap<PoolAlias, RedisUrl>) -> anyhow::Result<Pools> {
        let mut pools = BTreeMap::new();
        for (&alias, url) in urls {
            let client = redis::Client::open(url.as_str())
                .with_context(|| format!("invalid Redis URL for pool {alias}: {url}"))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(2)
                .set_min_delay(Duration::from_millis(20))
                .set_max_delay(Duration::from_millis(500));
            let mut managers = (0..CONNECTIONS_PER_POOL.max(1))
                .map(|_| {
                    ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                        .map(RedisConn::standalone)
                })
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("cannot set up Redis pool {alias} ({url})"))?
                .into_iter();
            let first = managers
                .next()
                .with_context(|| format!("no connection for Redis pool {alias}"))?;
            pools.insert(
                alias,
                Pool {
                    url: url.clone(),
                    client,
                    first,
                    others: managers.collect(),
                    shared: false,
                },
            );
        }
        mark_shared(&mut pools);
        Ok(Pools {
            pools: pools.into(),
            control: tokio::runtime::Handle::try_current().ok(),
            cluster: None,
            wait_replicas: 0,
        })
    }

    /// Builds the pools `target` names, without connecting (must run
    /// inside Tokio).
    ///
    /// # Errors
    /// A URL the Redis client rejects.
    pub fn connect(target: &RedisTarget) -> anyhow::Result<Pools> {
        match target {
            RedisTarget::Servers(urls) => Pools::new(urls),
            RedisTarget::Cluster(seeds) => Pools::cluster(seeds),
        }
    }

    /// Every alias on one Redis Cluster, in its DB 0. The connections
    /// (the `redis` crate's cluster client: it routes each command to the
    /// node that owns its key's slot and follows `MOVED` and `ASK`) are
    /// shared by all aliases, [`CONNECTIONS_PER_POOL`] of them, and connect
    /// on first use.
    ///
    /// # Errors
    /// A seed the client rejects.
    pub fn cluster(seeds: &ClusterSeeds) -> anyhow::Result<Pools> {
        let client = redis::cluster::ClusterClientBuilder::new(
            seeds.urls().iter().map(|u| u.as_str().to_owned()),
        )
        .retries(6)
        .min_retry_wait(20)
        .max_retry_wait(500)
        // Every request, retries and redirections (MOVED, ASK, TRYAGAIN
        // while slots move) included, ends within this: without it a
        // request caught in a resharding could wait for ever.
        .overall_response_timeout(Some(CLUSTER_REQUEST_TIMEOUT))
        .build()
        .with_context(|| format!("invalid Redis Cluster seeds {seeds}"))?;
        let config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let conns: Vec<RedisConn> = (0..CONNECTIONS_PER_POOL.max(1))
            .map(|_| RedisConn::cluster(Cluster::new(client.clone(), config.clone())))
            .collect();
        let (first, others) = conns
            .split_first()
            .context("no connection for the Redis Cluster")?;
        let others: std::sync::Arc<[RedisConn]> = others.into();
        let seed = seeds
            .urls()
            .first()
            .context("a Redis Cluster needs at least one seed URL")?;
        let node = redis::Client::open(seed.as_str())
            .with_context(|| format!("invalid Redis Cluster seed {seed}"))?;
        let pools = PoolAlias::ALL
            .iter()
            .map(|&alias| {
                let pool = Pool {
                    url: seed.clone(),
                    client: node.clone(),
                    first: first.clone(),
                    others: others.clone(),
                    // Every alias is the cluster's DB 0.
                    shared: true,
                };
                (alias, pool)
            })
            .collect::<BTreeMap<_, _>>();
        Ok(Pools {
            pools: pools.into(),
            control: tokio::runtime::Handle::try_current().ok(),
            cluster: Some(seeds.clone()),
            wait_replicas: 0,
        })
    }

    /// Arming a trigger waits until `n` replicas of its node have it
    /// (`WAIT`), so a failover right after cannot lose it; 0: no wait.
    pub fn with_wait_replicas(mut self, n: u32) -> Pools {
        self.wait_replicas = n;
        self
    }

    /// Replicas that must acknowledge an arming (0: none).
    pub fn wait_replicas(&self) -> u32 {
        self.wait_replicas
    }

    /// The pools among `aliases` to listen to, each once. On a Redis
    /// Cluster every alias is DB 0, so one listener hears them all.
    pub fn listened(&self, aliases: &[PoolAlias]) -> Vec<PoolAlias> {
        let mut aliases = aliases.to_vec();
        aliases.sort();
        aliases.dedup();
        if self.cluster.is_some() {
            aliases.truncate(1);
        }
        aliases
    }

    /// The cluster the pools are on, or `None` for servers.
    pub fn cluster_seeds(&self) -> Option<&ClusterSeeds> {
        self.cluster.as_ref()
    }

    /// The runtime the pools were built on. Redis calls made from elsewhere
    /// (host functions, on the guest threads) run here: a connection's I/O
    /// task lives on the runtime that first used it, and must not share
    /// threads with guest code.
    pub fn control(&self) -> Option<&tokio::runtime::Handle> {
        self.control.as_ref()
    }

    /// The pool of `alias`.
    ///
    /// # Errors
    /// When the alias is not configured (never the case for pools built
    /// from a manifest, which configures all six).
    pub fn get(&self, alias: PoolAlias) -> Result<&Pool, PoolNotConfigured> {
        self.pools.get(&alias).ok_or(PoolNotConfigured(alias))
    }

    /// One pool per distinct server and database (aliases often share
    /// one): what a walk of every key the host can reach must visit.
    /// On a Cluster every alias is the same keyspace (DB 0): one pool.
    pub fn distinct(&self) -> Vec<Pool> {
        let mut seen = std::collections::BTreeSet::new();
        let pools = self
            .pools
            .values()
            .filter(|pool| seen.insert(pool.url.as_str().to_owned()));
        match self.cluster {
            Some(_) => pools.take(1).cloned().collect(),
            None => pools.cloned().collect(),
        }
    }

    /// Whether another alias's keys are in `alias`'s keyspace: a Redis
    /// Cluster (every alias is DB 0), or pools whose URLs name the same DB
    /// of the same server. Then a key one repository builds could be
    /// another's record, or a trigger.
    pub fn keyspace_shared(&self, alias: PoolAlias) -> bool {
        self.get(alias).is_ok_and(|pool| pool.shared)
    }

    /// The command connection of `alias` that serves `tenant` (see
    /// [`Pool::conn_for`]).
    ///
    /// # Errors
    /// When the alias is not configured.
    pub fn conn_for(&self, alias: PoolAlias, tenant: &str) -> Result<RedisConn, PoolNotConfigured> {
        Ok(self.get(alias)?.conn_for(tenant))
    }
}

/// Marks the pools of servers whose URLs name the same DB of the same
/// server as another alias's.
fn mark_shared(pools: &mut BTreeMap<PoolAlias, Pool>) {
    let keyspaces: Vec<(PoolAlias, String, u32)> = pools
        .iter()
        .map(|(alias, pool)| (*alias, pool.url.server(), pool.url.db()))
        .collect();
    for (alias, pool) in pools.iter_mut() {
        let own = (pool.url.server(), pool.url.db());
        pool.shared = keyspaces
            .iter()
            .any(|(other, server, db)| other != alias && (server, db) == (&own.0, &own.1));
    }
}

/// A pool alias the [`Pools`] were not built with.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("Redis pool {0} is not configured")]
pub struct PoolNotConfigured(pub PoolAlias);

impl PoolNotConfigured {
    /// The alias asked for.
    pub fn alias(self) -> PoolAlias {
        self.0
    }
}
