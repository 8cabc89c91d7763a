//! The seam between host code and Redis: [`RedisConn`], the one connection
//! type that repositories and delivery hold.
//!
//! It is a standalone server's reconnecting, multiplexed connection, or
//! the `redis` crate's Redis Cluster connection, which routes each command
//! to the node that owns its key's slot and follows `MOVED` and `ASK`.
//! Both answer the same calls. What differs between backends lives here,
//! as methods: the retry
//! policy of a dropped connection ([`query`](RedisConn::query) and friends),
//! pipelines (on a cluster a pipeline that spans slots is sent as one
//! command per key, each to its node, concurrently; a transaction must stay
//! in one slot) and key enumeration ([`scan_page`](RedisConn::scan_page),
//! which on a cluster walks every primary, and walks again when the slots
//! moved meanwhile). Above this module, two places tell the backends
//! apart: the listener kind (`listener::PoolListener`) and the layout of
//! the delivery state (`delivery::Layout`). The repositories ask the
//! questions a backend answers:
//! [`in_one_transaction`](RedisConn::in_one_transaction),
//! [`each`](RedisConn::each), and the pools whether aliases share a
//! keyspace (`Pools::keyspace_shared`). `docs/design.md` says where a third backend
//! goes.
//!
//! `RedisConn` also implements [`redis::aio::ConnectionLike`], so a
//! `redis::Cmd`, `Pipeline` or `Script` runs on it directly.

use std::sync::Arc;

use futures::FutureExt as _;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, ScriptInvocation, Value};

/// A command connection to Redis: cheap to clone (clones share the
/// connection), reconnects by itself, built without touching the network.
#[derive(Clone)]
pub struct RedisConn(Backend);

#[derive(Clone)]
enum Backend {
    /// One server (or a primary behind a proxy or sentinel's address).
    Standalone(ConnectionManager),
    /// A Redis Cluster (DB 0).
    Cluster(Arc<Cluster>),
}

/// A Redis Cluster connection that is replaced by a fresh one when it has
/// answered nothing but failures for [`REPLACE_AFTER`]: the `redis`
/// crate's cluster connection can stay wedged after a resharding, every
/// request timing out while the nodes answer others (seen with 1.8.1).
pub(crate) struct Cluster {
    client: redis::cluster::ClusterClient,
    config: redis::cluster::ClusterConfig,
    conn: arc_swap::ArcSwap<ClusterConnection>,
    /// Since when (ms since the epoch) calls have failed without a success
    /// in between; 0: the last call succeeded.
    failing_since: std::sync::atomic::AtomicI64,
}

/// How long a cluster connection may fail every call before it is replaced.
const REPLACE_AFTER: i64 = 5_000;

impl Cluster {
    /// A cluster connection of `client` (connecting in the background).
    pub(crate) fn new(
        client: redis::cluster::ClusterClient,
        config: redis::cluster::ClusterConfig,
    ) -> Self {
        let conn = client.get_pending_async_connection_with_config(config.clone());
        Cluster {
            client,
            config,
            conn: arc_swap::ArcSwap::from_pointee(conn),
            failing_since: std::sync::atomic::AtomicI64::new(0),
        }
    }

    fn current(&self) -> ClusterConnection {
        (**self.conn.load()).clone()
    }

    /// Notes how a call ended; replaces the connection when it has failed
    /// (connection trouble or timeouts, not server errors) for too long.
    fn observe<T>(&self, result: &RedisResult<T>) {
        use std::sync::atomic::Ordering::Relaxed;
        let failed = match result {
            Ok(_) => false,
            Err(e) => e.is_timeout() || e.is_io_error() || e.is_connection_dropped(),
        };
        if !failed {
            if result.is_ok() {
                self.failing_since.store(0, Relaxed);
            }
            return;
        }
        let now = crate::unix_ms();
        let since = match self
            .failing_since
            .compare_exchange(0, now, Relaxed, Relaxed)
        {
            Ok(_) => return,
            Err(since) => since,
        };
        if now - since >= REPLACE_AFTER
            && self
                .failing_since
                .compare_exchange(since, 0, Relaxed, Relaxed)
                .is_ok()
        {
            tracing::warn!(
                event = "cluster_connection_replaced",
                failing_ms = now - since,
                "the Redis Cluster connection failed every call for too long; replaced by a fresh one"
            );
            let fresh = self
                .client
                .get_pending_async_connection_with_config(self.config.clone());
            self.conn.store(Arc::new(fresh));
        }
    }
}

/// Redis calls that failed, over every connection of this process.
static REDIS_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many Redis calls failed in this process so far (the metrics'
/// `symphony_redis_errors_total`).
pub fn redis_errors() -> u64 {
    REDIS_ERRORS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts a failed call in [`redis_errors`].
fn counted<T>(r: RedisResult<T>) -> RedisResult<T> {
    if r.is_err() {
        REDIS_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    r
}

/// Whether `e` means the connection went away before the reply: the
/// command may not have run, and the connection reconnects by itself.
fn dropped(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_io_error()
}

impl RedisConn {
    /// A standalone server's connection.
    pub(crate) fn standalone(conn: ConnectionManager) -> Self {
        RedisConn(Backend::Standalone(conn))
    }

    /// A Redis Cluster's connection.
    pub(crate) fn cluster(conn: Cluster) -> Self {
        RedisConn(Backend::Cluster(Arc::new(conn)))
    }

    /// Whether this connection is to a Redis Cluster. Above this module
    /// only two places ask: the listener kind (`listener::PoolListener`)
    /// and the delivery state's layout (`delivery::Layout`); the rest ask
    /// the questions below.
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Backend::Cluster(_))
    }

    /// Whether one transaction (`MULTI`, a script) may touch all of `keys`:
    /// always on a server; on a cluster when they share a slot.
    pub fn in_one_transaction(&self, keys: &[&str]) -> bool {
        match &self.0 {
            Backend::Standalone(_) => true,
            Backend::Cluster(_) => keys.windows(2).all(|w| match w {
                [a, b] => slot_of(a) == slot_of(b),
                _ => true,
            }),
        }
    }

    /// Runs `cmd(key)` for each key, the replies in order: pipelined on a
    /// server, one call per key (each to its node, `at_once` at a time) on
    /// a cluster.
    ///
    /// # Errors
    /// Redis failing or unreachable.
    pub async fn each<T: FromRedisValue + Send + 'static>(
        &self,
        keys: &[&str],
        cmd: impl Fn(&str) -> Cmd,
        at_once: usize,
    ) -> RedisResult<Vec<T>> {
        use futures::StreamExt as _;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if !self.is_cluster() {
            let mut pipe = redis::pipe();
            for key in keys {
                pipe.add_command(cmd(key));
            }
            return self.pipe(&pipe).await;
        }
        let calls: Vec<_> = keys
            .iter()
            .map(|key| {
                let (cmd, conn) = (cmd(key), self.clone());
                async move { conn.query::<T>(&cmd).await }
            })
            .collect();
        futures::stream::iter(calls)
            .buffered(at_once.max(1))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// The cluster's primaries now (`CLUSTER NODES`, from any node), and a
    /// signature of the slot layout: it changes when a slot moves or starts
    /// moving. `None` on a standalone server.
    ///
    /// # Errors
    /// Redis failing or unreachable, or an answer that is not a node list.
    pub async fn primaries(&self) -> RedisResult<Option<Topology>> {
        let Backend::Cluster(cluster) = &self.0 else {
            return Ok(None);
        };
        let answer = cluster
            .current()
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await;
        cluster.observe(&answer);
        let text: String = redis::from_redis_value(answer.map_err(count_err)?)?;
        Ok(Some(Topology::parse(&text)))
    }

    /// Runs `cmd` on the node at `host:port` (on a cluster; on a standalone
    /// server, on the server).
    ///
    /// # Errors
    /// Redis failing or unreachable.
    pub async fn query_node<T: FromRedisValue>(&self, node: &Node, cmd: &Cmd) -> RedisResult<T> {
        match &self.0 {
            Backend::Standalone(_) => self.query(cmd).await,
            Backend::Cluster(cluster) => {
                let answer = cluster
                    .current()
                    .route_command(
                        cmd.clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: node.host.clone(),
                            port: node.port,
                        }),
                    )
                    .await;
                cluster.observe(&answer);
                Ok(redis::from_redis_value(answer.map_err(count_err)?)?)
            }
        }
    }

    /// Runs a command that must not run twice (no retry).
    ///
    /// # Errors
    /// Redis failing or unreachable.
    pub async fn query_once<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        counted(cmd.query_async(&mut self.clone()).await)
    }

    /// Runs an idempotent command, once more when the connection was lost
    /// (after a Redis restart, each pooled connection fails once until it
    /// reconnects: the retry hides that).
    ///
    /// # Errors
    /// Redis failing or unreachable (twice, for a dropped connection).
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        counted(match cmd.query_async(&mut self.clone()).await {
            Err(e) if dropped(&e) => cmd.query_async(&mut self.clone()).await,
            other => other,
        })
    }

    /// Runs a pipeline (or transaction) that must not run twice (no retry).
    ///
    /// # Errors
    /// Redis failing or unreachable.
    pub async fn pipe_once<T: FromRedisValue>(&self, pipe: &Pipeline) -> RedisResult<T> {
        counted(pipe.query_async(&mut self.clone()).await)
    }

    /// Runs an idempotent pipeline (or transaction), once more when the
    /// connection was lost, as [`query`](Self::query).
    ///
    /// # Errors
    /// Redis failing or unreachable.
    pub async fn pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> RedisResult<T> {
        counted(match pipe.query_async(&mut self.clone()).await {
            Err(e) if dropped(&e) => pipe.query_async(&mut self.clone()).await,
            other => other,
        })
    }

    /// Runs a script that must not run twice (no retry).
    ///
    /// # Errors
    /// Redis failing or unreachable, or the script raising an error.
    pub async fn invoke_once<T: FromRedisValue>(
        &self,
        call: &ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        counted(call.invoke_async(&mut self.clone()).await)
    }

    /// Runs an idempotent script, once more when the connection was lost,
    /// as [`query`](Self::query).
    ///
    /// # Errors
    /// Redis failing or unreachable, or the script raising an error.
    pub async fn invoke<T: FromRedisValue>(&self, call: &ScriptInvocation<'_>) -> RedisResult<T> {
        counted(match call.invoke_async(&mut self.clone()).await {
            Err(e) if dropped(&e) => call.invoke_async(&mut self.clone()).await,
            other => other,
        })
    }

    /// `WAIT n timeout_ms` on the node that owns `key` (on a standalone
    /// server, the server): how many replicas have every write this
    /// connection made there so far.
    ///
    /// # Errors
    /// Redis failing or unreachable.
    pub async fn wait_replicas(&self, key: &str, n: u32, timeout_ms: u64) -> RedisResult<u64> {
        let wait = redis::cmd("WAIT").arg(n).arg(timeout_ms).clone();
        match &self.0 {
            Backend::Standalone(_) => self.query_once(&wait).await,
            Backend::Cluster(cluster) => {
                let route = redis::cluster_routing::Route::new(
                    slot_of(key),
                    redis::cluster_routing::SlotAddr::Master,
                );
                let answer = cluster
                    .current()
                    .route_command(
                        wait,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await;
                cluster.observe(&answer);
                Ok(redis::from_redis_value(answer.map_err(count_err)?)?)
            }
        }
    }

    /// Deletes `keys` (none: nothing); returns how many existed. On a
    /// cluster one `DEL` per slot, sent together.
    ///
    /// # Errors
    /// Redis failing or unreachable.
    pub async fn del(&self, keys: &[String]) -> RedisResult<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        if !self.is_cluster() {
            return self.query_once(redis::cmd("DEL").arg(keys)).await;
        }
        let mut by_slot: std::collections::BTreeMap<u16, Vec<&String>> = Default::default();
        for key in keys {
            by_slot.entry(slot_of(key)).or_default().push(key);
        }
        let mut pipe = redis::pipe();
        for keys in by_slot.values() {
            pipe.cmd("DEL").arg(keys);
        }
        let counts: Vec<u64> = self.pipe_once(&pipe).await?;
        Ok(counts.iter().sum())
    }

    /// One page of the keys matching `pattern` (SCAN, never KEYS), from
    /// `cursor` ([`ScanCursor::START`] to start), `count` as the SCAN hint:
    /// the next cursor (`None` at the end) and the keys. A key may be
    /// reported more than once over a walk.
    ///
    /// On a cluster the walk visits every primary in turn. When it ends, it
    /// reads the slot layout again: if a slot moved, or is moving, since the
    /// walk began, it walks every primary again (up to
    /// [`SCAN_PASSES`] times), so a key that moved from a node not yet
    /// walked to one already walked is not missed.
    ///
    /// # Errors
    /// Redis failing or unreachable.
    pub async fn scan_page(
        &self,
        pattern: &str,
        cursor: ScanCursor,
        count: usize,
    ) -> RedisResult<(Option<ScanCursor>, Vec<String>)> {
        let (next, keys, _) = self.scan_page_counted(pattern, cursor, count).await?;
        Ok((next, keys))
    }

    /// [`scan_page`](Self::scan_page), and how many keys of the page were
    /// skipped for not being UTF-8 (no key the host writes or runs is; one
    /// such key must never end a walk).
    ///
    /// # Errors
    /// Redis failing or unreachable.
    pub async fn scan_page_counted(
        &self,
        pattern: &str,
        cursor: ScanCursor,
        count: usize,
    ) -> RedisResult<(Option<ScanCursor>, Vec<String>, usize)> {
        let (next, raw) = self.scan_page_raw(pattern, cursor, count).await?;
        let total = raw.len();
        let keys: Vec<String> = raw
            .into_iter()
            .filter_map(|k| String::from_utf8(k).ok())
            .collect();
        let skipped = total - keys.len();
        Ok((next, keys, skipped))
    }

    async fn scan_page_raw(
        &self,
        pattern: &str,
        cursor: ScanCursor,
        count: usize,
    ) -> RedisResult<(Option<ScanCursor>, Vec<Vec<u8>>)> {
        let scan = |at: u64| {
            redis::cmd("SCAN")
                .arg(at)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(count)
                .clone()
        };
        if !self.is_cluster() {
            let (next, keys): (u64, Vec<Vec<u8>>) = self.query(&scan(cursor.at)).await?;
            let next = (next != 0).then_some(ScanCursor { at: next, ..cursor });
            return Ok((next, keys));
        }
        let mut cursor = cursor;
        if cursor.walk.is_none() {
            let Some(topology) = self.primaries().await? else {
                return Ok((None, Vec::new()));
            };
            cursor.walk = Some(Arc::new(topology));
            cursor.node = 0;
            cursor.at = 0;
        }
        let Some(walk) = cursor.walk.clone() else {
            return Ok((None, Vec::new()));
        };
        let Some(node) = walk.primaries.get(cursor.node) else {
            return self.end_of_walk(cursor, &walk).await;
        };
        let (next, keys): (u64, Vec<Vec<u8>>) = self.query_node(node, &scan(cursor.at)).await?;
        if next != 0 {
            cursor.at = next;
        } else {
            cursor.node += 1;
            cursor.at = 0;
            if cursor.node >= walk.primaries.len() {
                let (more, _) = self.end_of_walk(cursor, &walk).await?;
                return Ok((more, keys));
            }
        }
        Ok((Some(cursor), keys))
    }

    /// The last node of a cluster walk is done: another pass when the
    /// slots moved meanwhile.
    async fn end_of_walk(
        &self,
        cursor: ScanCursor,
        walk: &Topology,
    ) -> RedisResult<(Option<ScanCursor>, Vec<Vec<u8>>)> {
        if cursor.pass + 1 >= SCAN_PASSES {
            return Ok((None, Vec::new()));
        }
        let now = self.primaries().await?;
        let moved = now
            .as_ref()
            .is_some_and(|t| t.slots != walk.slots || t.migrating);
        if moved {
            let next = ScanCursor {
                walk: now.map(Arc::new),
                node: 0,
                at: 0,
                pass: cursor.pass + 1,
            };
            return Ok((Some(next), Vec::new()));
        }
        Ok((None, Vec::new()))
    }
}

/// Most walks of a cluster's primaries one [`RedisConn::scan_page`] walk
/// makes while slots keep moving.
pub const SCAN_PASSES: u32 = 4;

/// Where a key walk ([`RedisConn::scan_page`]) is.
#[derive(Debug, Clone, Default)]
pub struct ScanCursor {
    /// The SCAN cursor on the current node.
    at: u64,
    /// The current node's index in `walk` (cluster only).
    node: usize,
    /// The primaries this pass walks (cluster only, read at its start).
    walk: Option<Arc<Topology>>,
    /// Passes made before this one.
    pass: u32,
}

impl ScanCursor {
    /// The start of a walk.
    pub const START: ScanCursor = ScanCursor {
        at: 0,
        node: 0,
        walk: None,
        pass: 0,
    };

    /// Whether this is a walk's first page.
    pub fn is_start(&self) -> bool {
        self.walk.is_none() && self.at == 0 && self.pass == 0
    }

    /// A walk of `node` alone (a cluster node; on a standalone server, the
    /// server): one pass, not walked again.
    pub fn node(node: Node) -> ScanCursor {
        ScanCursor {
            at: 0,
            node: 0,
            walk: Some(Arc::new(Topology {
                primaries: vec![node],
                ..Topology::default()
            })),
            pass: SCAN_PASSES - 1,
        }
    }
}

/// A cluster node's address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node {
    /// Host name or IP, as the cluster announces it.
    pub host: String,
    /// Its client port.
    pub port: u16,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// What `CLUSTER NODES` says: the primaries that own slots, every node
/// that is up (replicas included), and the slot layout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// Primaries owning at least one slot, by address.
    pub primaries: Vec<Node>,
    /// Every node not marked failed (primaries and replicas), by address.
    pub nodes: Vec<Node>,
    /// Each primary's address with its slot ranges as the cluster writes
    /// them, sorted: equal when no slot moved.
    slots: Vec<String>,
    /// Whether a slot is being migrated or imported.
    migrating: bool,
    /// Slot ranges (first, last) and the primary that serves them.
    ranges: Vec<(u16, u16, Node)>,
}

impl Topology {
    /// Parses `CLUSTER NODES` (one node a line: id, `ip:port@cport[,host]`,
    /// flags, primary id, ping, pong, epoch, link state, slots...).
    pub fn parse(text: &str) -> Topology {
        let mut t = Topology::default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
                continue;
            };
            if flags.contains("fail") && !flags.contains("fail?") || flags.contains("noaddr") {
                continue;
            }
            let addr = addr.split(['@', ',']).next().unwrap_or(addr);
            let Some((host, port)) = addr.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse() else { continue };
            let node = Node {
                host: host.to_owned(),
                port,
            };
            let slots = fields.get(8..).unwrap_or_default();
            if flags.contains("master") && !slots.is_empty() {
                t.migrating |= slots.iter().any(|s| s.starts_with('['));
                for range in slots.iter().filter(|s| !s.starts_with('[')) {
                    let (first, last) = range.split_once('-').unwrap_or((range, range));
                    if let (Ok(first), Ok(last)) = (first.parse(), last.parse()) {
                        t.ranges.push((first, last, node.clone()));
                    }
                }
                t.slots.push(format!("{node} {}", slots.join(" ")));
                t.primaries.push(node.clone());
            }
            t.nodes.push(node);
        }
        t.primaries.sort();
        t.nodes.sort();
        t.slots.sort();
        t.ranges.sort();
        t
    }

    /// The primary that serves `slot`, as this layout says.
    pub fn owner_of(&self, slot: u16) -> Option<&Node> {
        let i = self.ranges.partition_point(|(first, _, _)| *first <= slot);
        let (_, last, node) = self.ranges.get(i.checked_sub(1)?)?;
        (slot <= *last).then_some(node)
    }
}

/// Hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag
/// (what is between its first `{` and the next `}`, if not empty) or of
/// the whole key, modulo [`SLOTS`]. (The redis crate computes the same to
/// route, but does not expose the number.)
pub fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = key
        .find('{')
        .and_then(|open| {
            let rest = bytes.get(open + 1..)?;
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| rest.get(..close)).flatten()
        })
        .unwrap_or(bytes);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}

/// Counts a failed cluster call (see [`counted`]).
fn count_err(e: redis::RedisError) -> redis::RedisError {
    REDIS_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    e
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Backend::Standalone(c) => c.req_packed_command(cmd),
            Backend::Cluster(cluster) => {
                let cluster = cluster.clone();
                async move {
                    let answer = cluster.current().req_packed_command(cmd).await;
                    cluster.observe(&answer);
                    answer
                }
                .boxed()
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Backend::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            // A pipeline is not atomic: on a cluster its commands may
            // belong to different slots, so each goes to its own node; the
            // cluster connection pipelines those that share one. Replies
            // keep the pipeline's order. A transaction goes as it is.
            Backend::Cluster(cluster) => {
                let cluster = cluster.clone();
                async move {
                    let mut c = cluster.current();
                    let answer = if pipeline.is_transaction() {
                        c.req_packed_commands(pipeline, offset, count).await
                    } else {
                        let calls = pipeline.cmd_iter().skip(offset).take(count).map(|cmd| {
                            let mut c = c.clone();
                            async move { c.req_packed_command(cmd).await }
                        });
                        futures::future::try_join_all(calls).await
                    };
                    cluster.observe(&answer);
                    answer
                }
                .boxed()
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Backend::Standalone(c) => c.get_db(),
            Backend::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slots Redis itself gives (`CLUSTER KEYSLOT`), hash tags included.
    #[test]
    fn slots_are_the_ones_redis_computes() {
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("bar"), 5061);
        assert_eq!(slot_of("123456789"), 12739);
        assert_eq!(slot_of("{foo}.x"), slot_of("foo"));
        assert_eq!(slot_of("a{foo}b{bar}"), slot_of("foo"));
        // An empty tag hashes the whole key; a tag ends at the first `}`.
        assert_eq!(slot_of("foo{}{bar}"), slot_of_whole("foo{}{bar}"));
        assert_eq!(slot_of("foo{{bar}}zap"), slot_of("{bar"));
    }

    fn slot_of_whole(key: &str) -> u16 {
        crc16::State::<crc16::XMODEM>::calculate(key.as_bytes()) % SLOTS
    }

    #[test]
    fn topology_lists_primaries_with_slots_and_every_live_node() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002,host-b master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master - 0 1426238318243 3 connected 10923-16383 [10924->-67ed]
6ec2 127.0.0.1:30005@40005 slave,fail 67ed 1426238316232 1426238316232 5 disconnected
824f 127.0.0.1:30006@40006 master - 0 1426238317741 6 connected
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
";
        let t = Topology::parse(text);
        let ports = |nodes: &[Node]| nodes.iter().map(|n| n.port).collect::<Vec<_>>();
        assert_eq!(ports(&t.primaries), [30001, 30002, 30003]);
        assert_eq!(ports(&t.nodes), [30001, 30002, 30003, 30004, 30006]);
        assert!(t.migrating);
        let settled = Topology::parse(&text.replace(" [10924->-67ed]", ""));
        assert!(!settled.migrating);
        assert_ne!(settled.slots, t.slots);
        let owner = |slot| t.owner_of(slot).map(|n| n.port);
        assert_eq!(owner(0), Some(30001));
        assert_eq!(owner(5460), Some(30001));
        assert_eq!(owner(5461), Some(30002));
        assert_eq!(owner(10924), Some(30003));
        assert_eq!(owner(16383), Some(30003));
        let split = Topology::parse("a 127.0.0.1:1@2 master - 0 0 1 connected 0-9 20 30-39\n");
        let owner = |slot| split.owner_of(slot).map(|n| n.port);
        assert_eq!(
            [
                owner(9),
                owner(10),
                owner(20),
                owner(21),
                owner(35),
                owner(40)
            ],
            [Some(1), None, Some(1), None, Some(1), None]
        );
    }
}
