//! The keyevent listener: one dedicated pub/sub connection per listened pool,
//! subscribed to `__keyevent@{db}__:expired`, `:expire` and `:del`, under a
//! reconnect loop.
//!
//! On every (re)connection it subscribes, then makes sure the server emits
//! keyevent notifications (`notify-keyspace-events` holding `E`, `x` and
//! `g`, merged into what is set, since a restarted Redis forgets a runtime
//! `CONFIG SET`). A lost connection is retried with capped exponential
//! backoff (first retry after 50 ms, then up to 5 s), and the gap is logged.
//! A health-check PING every few seconds catches half-open connections.
//!
//! The listener only hears keys; it sends each one on as a [`KeyEvent`], and
//! a [`KeyEvent::Subscribed`] after every (re)subscription, so the delivery
//! layer can index what it missed. It never decides what runs: the durable
//! index does (see [`crate::delivery`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backend::Node;
use crate::manifest::{NotifyMode, RedisUrl};
use crate::millis;
use crate::pools::{Pool, PoolAlias};
use crate::stats::Stats;

/// First reconnect delay.
const BACKOFF_START: Duration = Duration::from_millis(50);
/// Longest reconnect delay.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Time allowed to connect, subscribe or check the configuration.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Interval of the health-check PING on the subscription.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// Which keyevent was heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key expired (Redis deleted it for its TTL).
    Expired,
    /// A TTL was set on the key (SETEX, SET PX, EXPIRE...).
    Expire,
    /// The key was deleted.
    Del,
}

impl EventKind {
    const ALL: [EventKind; 3] = [EventKind::Expired, EventKind::Expire, EventKind::Del];

    fn event_name(self) -> &'static str {
        match self {
            EventKind::Expired => "expired",
            EventKind::Expire => "expire",
            EventKind::Del => "del",
        }
    }
}

/// What the listener passes on.
#[derive(Debug, Clone)]
pub enum KeyEvent {
    /// A keyevent for one key.
    Key {
        /// The pool whose DB the key is in.
        pool: PoolAlias,
        /// The event.
        kind: EventKind,
        /// The key, or its raw bytes when it is not UTF-8.
        key: Result<String, Vec<u8>>,
        /// When the host heard it.
        heard_at: Instant,
    },
    /// The listener (re)subscribed: events may have been missed before.
    Subscribed {
        /// The pool.
        pool: PoolAlias,
        /// On a cluster, the node (the keys missed are that node's).
        node: Option<Node>,
    },
}

/// Why `notify-keyspace-events` could not be made right.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// CONFIG GET or SET was refused by the server.
    #[error(
        "cannot {op} notify-keyspace-events on {server}: {reason}. Expiry events need the flags \
         `E`, `x` and `g`: set `notify-keyspace-events Exg` (plus any flags you use) in redis.conf or \
         your provider's parameter settings, then set `notify_keyspace_events = \"assume\"` \
         under [listener] in the manifest so the host does not try CONFIG"
    )]
    ConfigRefused {
        /// `read` or `set`.
        op: &'static str,
        /// host:port.
        server: String,
        /// The server's answer.
        reason: String,
    },
    /// The server is older than the delivery scripts need.
    #[error(
        "{server} runs Redis {version}; symphony-host needs Redis 7.0 or newer (its delivery \
         scripts use PEXPIRETIME)"
    )]
    TooOld {
        /// host:port.
        server: String,
        /// `redis_version` from `INFO server`.
        version: String,
    },
    /// `check` mode found the flags missing.
    #[error(
        "notify-keyspace-events on {server} is {current:?}, which lacks `E`, `x` or `g`, and the \
         manifest says notify_keyspace_events = \"check\": run \
         `redis-cli -h <host> -p <port> CONFIG SET notify-keyspace-events {current}Exg` or set it \
         in redis.conf"
    )]
    Missing {
        /// host:port.
        server: String,
        /// The current flags.
        current: String,
    },
}

enum SessionError {
    /// Connection trouble: retry with backoff.
    Retry(String),
    /// The server's configuration stops us: fatal before the first
    /// successful subscription, retried (and logged as an error) after.
    Fatal(NotifyError),
}

impl From<redis::RedisError> for SessionError {
    fn from(e: redis::RedisError) -> Self {
        SessionError::Retry(e.to_string())
    }
}

impl From<tokio::time::error::Elapsed> for SessionError {
    fn from(_: tokio::time::error::Elapsed) -> Self {
        SessionError::Retry(format!("timed out after {CONNECT_TIMEOUT:?}"))
    }
}

/// The listener a pool needs: one subscription on a server, one per node
/// on a Redis Cluster. The one place that tells the two apart.
pub enum PoolListener {
    /// A server's DB.
    Server(Listener),
    /// Every node of a cluster.
    Cluster(ClusterListener),
}

impl PoolListener {
    /// The listener for `pool` (not yet connected).
    pub fn new(alias: PoolAlias, pool: &Pool, mode: NotifyMode, stats: Arc<Stats>) -> Self {
        match pool.conn().is_cluster() {
            true => Self::Cluster(ClusterListener::new(alias, pool, mode, stats)),
            false => Self::Server(Listener::new(alias, pool, mode, stats)),
        }
    }

    /// Runs until `cancel`, forwarding the pool's keyevents to `tx`.
    ///
    /// # Errors
    /// The server's configuration refusing keyevent notifications (see
    /// [`Listener::run`]).
    pub async fn run(
        self,
        tx: mpsc::Sender<KeyEvent>,
        cancel: CancellationToken,
    ) -> Result<(), NotifyError> {
        match self {
            Self::Server(listener) => listener.run(tx, cancel).await,
            Self::Cluster(listener) => listener.run(tx, cancel).await,
        }
    }
}

/// Listens to one pool's expiry events (on a cluster, one node's).
pub struct Listener {
    alias: PoolAlias,
    client: redis::Client,
    url: RedisUrl,
    node: Option<Node>,
    /// On a cluster: set while the node is a replica. A replica's `expire`
    /// and `del` events repeat its primary's (it applies the same writes),
    /// so they are dropped; `expired` it never emits while a replica.
    replica: Option<Arc<AtomicBool>>,
    mode: NotifyMode,
    stats: Arc<Stats>,
}

impl Listener {
    /// A listener for `pool` (not yet connected); its state goes to
    /// `stats.metrics`.
    pub fn new(alias: PoolAlias, pool: &Pool, mode: NotifyMode, stats: Arc<Stats>) -> Self {
        Self {
            alias,
            stats,
            client: pool.client().clone(),
            url: pool.url().clone(),
            node: None,
            replica: None,
            mode,
        }
    }

    /// A listener for one node of the cluster `pool` is on (reached with
    /// the seed URL's scheme and credentials); while `replica` is set, the
    /// node's `expire` and `del` events are dropped (its primary's listener
    /// hears the same).
    ///
    /// # Errors
    /// A node address the client refuses.
    pub fn for_node(
        alias: PoolAlias,
        pool: &Pool,
        node: &Node,
        replica: Arc<AtomicBool>,
        mode: NotifyMode,
        stats: Arc<Stats>,
    ) -> Result<Self, redis::RedisError> {
        let url = pool.url().at(&node.host, node.port);
        Ok(Self {
            alias,
            stats,
            client: redis::Client::open(url.as_str())?,
            url,
            node: Some(node.clone()),
            replica: Some(replica),
            mode,
        })
    }

    /// The channel of one keyevent.
    fn channel_of(&self, kind: EventKind) -> String {
        format!("__keyevent@{}__:{}", self.url.db(), kind.event_name())
    }

    /// The `expired` channel this listener subscribes to (with `expire` and `del`).
    pub fn channel(&self) -> String {
        self.channel_of(EventKind::Expired)
    }

    /// Runs until `cancel`, forwarding every expired key to `tx`.
    ///
    /// # Errors
    /// Only when the server's configuration refuses keyevent notifications
    /// before the first successful subscription (see [`NotifyError`]);
    /// connection failures are retried for ever.
    pub async fn run(
        self,
        tx: mpsc::Sender<KeyEvent>,
        cancel: CancellationToken,
    ) -> Result<(), NotifyError> {
        let mut backoff = BACKOFF_START;
        let mut lost_at: Option<Instant> = None;
        let mut subscribed_once = false;
        loop {
            let mut up = false;
            let result = self
                .session(
                    &tx,
                    &cancel,
                    &mut lost_at,
                    (&mut subscribed_once, &mut up),
                    &mut backoff,
                )
                .await;
            let now = Instant::now();
            if up {
                self.stats.metrics.listener_lost(self.alias);
            }
            match result {
                Ok(()) => return Ok(()),
                Err(SessionError::Fatal(e)) if !subscribed_once => return Err(e),
                Err(SessionError::Fatal(e)) => {
                    error!(event = "notify_config_failed", pool = %self.alias, server = %self.url.server(), error = %e, "listener cannot enable expiry events; retrying");
                }
                Err(SessionError::Retry(reason)) => {
                    let down_ms = lost_at.map_or(0, |t| millis(now.duration_since(t)));
                    warn!(event = "listener_disconnected", pool = %self.alias, server = %self.url.server(), error = %reason, down_ms, retry_in_ms = millis(backoff), "listener disconnected; reconnecting");
                }
            }
            lost_at.get_or_insert(now);
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
    }

    async fn session(
        &self,
        tx: &mpsc::Sender<KeyEvent>,
        cancel: &CancellationToken,
        lost_at: &mut Option<Instant>,
        (subscribed_once, up): (&mut bool, &mut bool),
        backoff: &mut Duration,
    ) -> Result<(), SessionError> {
        let channel = self.channel();
        let mut pubsub =
            tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub()).await??;
        let channels: Vec<(String, EventKind)> = EventKind::ALL
            .iter()
            .map(|&k| (self.channel_of(k), k))
            .collect();
        for (name, _) in &channels {
            tokio::time::timeout(CONNECT_TIMEOUT, pubsub.subscribe(name)).await??;
        }
        let mut conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.client.get_multiplexed_async_connection(),
        )
        .await??;
        ensure_version(&mut conn, &self.url.server()).await?;
        ensure_notifications(&mut conn, self.mode, &self.url.server()).await?;
        drop(conn);

        self.stats
            .metrics
            .listener_subscribed(self.alias, *subscribed_once);
        *up = true;
        if let Some(t) = lost_at.take() {
            warn!(
                event = "listener_reconnected",
                pool = %self.alias, server = %self.url.server(), %channel,
                gap_ms = millis(t.elapsed()),
                "listener reconnected after a gap; the index recovers keys that expired or changed during it"
            );
        }
        info!(event = "listening", pool = %self.alias, server = %self.url.server(), %channel, "listening for expiries");
        *subscribed_once = true;
        if tx
            .send(KeyEvent::Subscribed {
                pool: self.alias,
                node: self.node.clone(),
            })
            .await
            .is_err()
        {
            return Ok(());
        }
        *backoff = BACKOFF_START;

        let (mut sink, mut stream) = pubsub.split();
        let mut health = tokio::time::interval(HEALTH_INTERVAL);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        health.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return Err(SessionError::Retry("subscription connection closed".into()));
                    };
                    let bytes = msg.get_payload_bytes();
                    let key = std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| bytes.to_vec());
                    let name = msg.get_channel_name();
                    let Some(kind) = channels.iter().find(|(c, _)| c == name).map(|(_, k)| *k) else {
                        continue;
                    };
                    if kind != EventKind::Expired && self.replica.as_ref().is_some_and(|r| r.load(Ordering::Relaxed)) {
                        continue;
                    }
                    let event = KeyEvent::Key { pool: self.alias, kind, key, heard_at: Instant::now() };
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        sent = tx.send(event) => if sent.is_err() { return Ok(()) },
                    }
                }
                _ = health.tick() => {
                    match tokio::time::timeout(CONNECT_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(SessionError::Retry(format!("health check failed: {e}"))),
                        Err(_) => return Err(SessionError::Retry("health check timed out".into())),
                    }
                }
            }
        }
    }
}

/// How often a cluster listener reads the nodes again: also how long a
/// promoted replica's `expire` and `del` events may still be dropped as a
/// replica's (its keys are indexed again once it is seen promoted).
const TOPOLOGY_EVERY: Duration = Duration::from_secs(1);
/// How soon it tries again while it knows no node.
const TOPOLOGY_RETRY: Duration = Duration::from_millis(500);

/// Listens to a Redis Cluster's expiry events: keyspace notifications come
/// only from the node that holds the key, so it runs a [`Listener`] per
/// node, replicas included (a promoted replica is subscribed before it
/// owns a single expiry; while a replica, its `expire` and `del` events,
/// which repeat its primary's, are dropped), and reads the nodes
/// (`CLUSTER NODES`) every second: a node added gets a listener, a node
/// gone or failed loses its own, and a node that became a primary has its
/// trigger keys indexed (events of the failover window may be lost). A
/// node that is down is retried by its own listener without holding up the
/// others.
pub struct ClusterListener {
    alias: PoolAlias,
    pool: Pool,
    mode: NotifyMode,
    stats: Arc<Stats>,
}

/// A node's listener: how to stop it, and whether the node is a replica.
struct Listened {
    stop: CancellationToken,
    replica: Arc<AtomicBool>,
}

impl ClusterListener {
    /// A listener for the cluster `pool` is on (not yet connected).
    pub fn new(alias: PoolAlias, pool: &Pool, mode: NotifyMode, stats: Arc<Stats>) -> Self {
        Self {
            alias,
            pool: pool.clone(),
            mode,
            stats,
        }
    }

    /// Runs until `cancel`, forwarding every node's events to `tx`.
    ///
    /// # Errors
    /// A node's configuration refusing keyevent notifications (see
    /// [`Listener::run`]).
    pub async fn run(
        self,
        tx: mpsc::Sender<KeyEvent>,
        cancel: CancellationToken,
    ) -> Result<(), NotifyError> {
        let conn = self.pool.conn();
        let mut listening: std::collections::BTreeMap<Node, Listened> = Default::default();
        let mut primaries: Option<Vec<Node>> = None;
        let mut tasks = tokio::task::JoinSet::new();
        let errors = crate::throttle::Throttle::new(Duration::from_secs(10));
        loop {
            match conn.primaries().await {
                Ok(Some(topology)) => {
                    for node in &topology.nodes {
                        let replica = !topology.primaries.contains(node);
                        if let Some(listened) = listening.get(node) {
                            listened.replica.store(replica, Ordering::Relaxed);
                            continue;
                        }
                        let flag = Arc::new(AtomicBool::new(replica));
                        match Listener::for_node(
                            self.alias,
                            &self.pool,
                            node,
                            flag.clone(),
                            self.mode,
                            self.stats.clone(),
                        ) {
                            Ok(listener) => {
                                let stop = cancel.child_token();
                                tasks.spawn(listener.run(tx.clone(), stop.clone()));
                                info!(event = "node_listened", pool = %self.alias, %node, replica, "listening to a cluster node");
                                listening.insert(
                                    node.clone(),
                                    Listened {
                                        stop,
                                        replica: flag,
                                    },
                                );
                            }
                            Err(e) => {
                                warn!(event = "node_unlistenable", pool = %self.alias, %node, error = %e, "cannot listen to a cluster node");
                            }
                        }
                    }
                    listening.retain(|node, listened| {
                        let keep = topology.nodes.contains(node);
                        if !keep {
                            info!(event = "node_forgotten", pool = %self.alias, %node, "a cluster node left or failed; no longer listened");
                            listened.stop.cancel();
                        }
                        keep
                    });
                    if let Some(before) = &primaries {
                        for node in topology.primaries.iter().filter(|n| !before.contains(n)) {
                            warn!(event = "node_promoted", pool = %self.alias, %node, "a cluster node became a primary; indexing its trigger keys");
                            let event = KeyEvent::Subscribed {
                                pool: self.alias,
                                node: Some(node.clone()),
                            };
                            if tx.send(event).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                    primaries = Some(topology.primaries);
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    if let Some(suppressed) = errors.allow() {
                        warn!(event = "topology_failed", pool = %self.alias, error = %e, suppressed, "cannot read the cluster's nodes; retrying");
                    }
                }
            }
            let wait = if listening.is_empty() {
                TOPOLOGY_RETRY
            } else {
                TOPOLOGY_EVERY
            };
            tokio::select! {
                _ = cancel.cancelled() => {
                    while tasks.join_next().await.is_some() {}
                    return Ok(());
                }
                Some(Ok(Err(e))) = tasks.join_next() => return Err(e),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Refuses a server older than Redis 7.0 (`INFO server`); one that does
/// not answer `INFO` (a provider may rename it) is not refused.
async fn ensure_version(
    conn: &mut MultiplexedConnection,
    server: &str,
) -> Result<(), SessionError> {
    let info = tokio::time::timeout(
        CONNECT_TIMEOUT,
        redis::cmd("INFO").arg("server").query_async::<String>(conn),
    )
    .await?;
    let info = match info {
        Ok(info) => info,
        Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
            return Err(e.into());
        }
        Err(_) => return Ok(()),
    };
    match too_old(&info) {
        Some(version) => Err(SessionError::Fatal(NotifyError::TooOld {
            server: server.to_owned(),
            version,
        })),
        None => Ok(()),
    }
}

/// The server's version when `INFO server`'s `redis_version` is older than
/// 7.0 (valkey and other forks report the Redis version they match).
fn too_old(info: &str) -> Option<String> {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))?
        .trim();
    let major: u32 = version.split('.').next()?.parse().ok()?;
    (major < 7).then(|| version.to_owned())
}

/// Makes sure `notify-keyspace-events` holds `E`, `x` and `g` (per `mode`).
async fn ensure_notifications(
    conn: &mut MultiplexedConnection,
    mode: NotifyMode,
    server: &str,
) -> Result<(), SessionError> {
    if mode == NotifyMode::Assume {
        return Ok(());
    }
    let refused = |op, e: redis::RedisError| {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            SessionError::Retry(e.to_string())
        } else {
            SessionError::Fatal(NotifyError::ConfigRefused {
                op,
                server: server.to_owned(),
                reason: e.to_string(),
            })
        }
    };
    let reply: Vec<String> = tokio::time::timeout(
        CONNECT_TIMEOUT,
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(conn),
    )
    .await?
    .map_err(|e| refused("read", e))?;
    let current = reply.get(1).cloned().unwrap_or_default();
    let missing = missing_flags(&current);
    if missing.is_empty() {
        return Ok(());
    }
    if mode == NotifyMode::Check {
        return Err(SessionError::Fatal(NotifyError::Missing {
            server: server.to_owned(),
            current,
        }));
    }
    let wanted = format!("{current}{missing}");
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg(&wanted)
            .query_async::<()>(conn),
    )
    .await?
    .map_err(|e| refused("set", e))?;
    info!(event = "notify_config_enabled", server, before = %current, after = %wanted, "enabled keyevent notifications for expiries");
    Ok(())
}

/// The flags among `E`, `x` and `g` that `current` lacks (`A` implies `x` and `g`).
fn missing_flags(current: &str) -> String {
    let mut missing = String::new();
    if !current.contains('E') {
        missing.push('E');
    }
    for flag in ['x', 'g'] {
        if !current.contains(flag) && !current.contains('A') {
            missing.push(flag);
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::{missing_flags, too_old};

    #[test]
    fn refuses_servers_older_than_redis_7() {
        let info = |v: &str| format!("# Server\r\nredis_version:{v}\r\nredis_mode:standalone\r\n");
        assert_eq!(too_old(&info("6.2.14")).as_deref(), Some("6.2.14"));
        assert_eq!(too_old(&info("5.0.7")).as_deref(), Some("5.0.7"));
        assert_eq!(too_old(&info("7.0.15")), None);
        assert_eq!(too_old(&info("7.2.4")), None);
        assert_eq!(too_old(&info("8.0.0")), None);
        // Nothing to go by: not refused.
        assert_eq!(too_old("# Server\r\n"), None);
        assert_eq!(too_old(&info("unknown")), None);
    }

    #[test]
    fn merges_only_what_is_missing() {
        assert_eq!(missing_flags(""), "Exg");
        assert_eq!(missing_flags("xE"), "g");
        assert_eq!(missing_flags("AKE"), "");
        assert_eq!(missing_flags("Kg"), "Ex");
        assert_eq!(missing_flags("Egx$"), "");
        assert_eq!(missing_flags("Kx"), "Eg");
    }
}
