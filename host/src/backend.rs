//! The seam between host code and Redis: [`RedisConn`], the one connection
//! type that repositories and delivery hold.
//!
//! Today it is a standalone server's reconnecting, multiplexed connection.
//! A Redis Cluster backend is a second variant of the private `Backend`: it
//! answers the same calls (each routed to the node that owns its keys), so
//! nothing above this module changes. What differs between backends lives
//! here, as methods: the retry policy of a dropped connection
//! ([`query`](RedisConn::query) and friends) and key enumeration
//! ([`scan_page`](RedisConn::scan_page), which on a cluster visits every
//! primary).
//!
//! `RedisConn` also implements [`redis::aio::ConnectionLike`], so a
//! `redis::Cmd`, `Pipeline` or `Script` runs on it directly.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, ScriptInvocation, Value};

/// A command connection to Redis: cheap to clone (clones share the
/// connection), reconnects by itself, built without touching the network.
#[derive(Clone)]
pub struct RedisConn(Backend);

#[derive(Clone)]
enum Backend {
    /// One server (or a primary behind a proxy or sentinel's address).
    Standalone(ConnectionManager),
}

/// Counts a failed call in [`crate::metrics::REDIS_ERRORS`].
fn counted<T>(r: RedisResult<T>) -> RedisResult<T> {
    if r.is_err() {
        crate::metrics::REDIS_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

    /// One page of the keys matching `pattern` (SCAN, never KEYS), from
    /// `cursor` (0 to start), `count` as the SCAN hint: the next cursor
    /// (`None` at the end) and the keys. A key may be reported more than
    /// once over a walk.
    ///
    /// # Errors
    /// Redis failing or unreachable.
    pub async fn scan_page(
        &self,
        pattern: &str,
        cursor: u64,
        count: usize,
    ) -> RedisResult<(Option<u64>, Vec<String>)> {
        let (next, keys): (u64, Vec<String>) = self
            .query(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(count),
            )
            .await?;
        Ok(((next != 0).then_some(next), keys))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Backend::Standalone(c) => c.req_packed_command(cmd),
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
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Backend::Standalone(c) => c.get_db(),
        }
    }
}
