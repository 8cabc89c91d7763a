//! Reads that never bring the host more than the caller may receive.
//!
//! A plugin's repository results must fit its `max_value_kib`. Checking a
//! reply's size after reading it is too late: a 150 MB list read in full
//! costs the host 150 MB (times the jobs doing it at once), and holds the
//! connection that other tenants' calls share while it streams. So while a
//! reply cap is in force (set around each host call with [`with_cap`]),
//! reads go through scripts that measure in Redis and stop at the cap:
//! strings and hash fields by `STRLEN`/`HSTRLEN` before reading, hashes by
//! `HSCAN` and lists by `LRANGE` in growing slices, each stopping as soon
//! as the running total passes the cap. Over the cap, the call fails with
//! `invalid-input`, and nothing larger than the cap plus one slice was read
//! in Redis (one element, while no element is larger than those before it;
//! see the list script), and nothing over the cap in the host. Without a
//! cap (the library used directly) the plain commands run.

use std::future::Future;
use std::sync::LazyLock;

use crate::backend::RedisConn;
use redis::Value;

use super::RepoError;

tokio::task_local! {
    static REPLY_CAP: usize;
}

/// Runs `f` with replies capped at `cap` bytes.
pub async fn with_cap<F: Future>(cap: usize, f: F) -> F::Output {
    REPLY_CAP.scope(cap, f).await
}

/// The cap in force, if any. Reads that gather in the host (SCAN) stop
/// with [`over`] once the gathered bytes pass it.
pub(crate) fn limit() -> Option<usize> {
    REPLY_CAP.try_with(|c| *c).ok()
}

/// KEYS: key. ARGV: cap. Returns {1, value or nil} or {0, size}.
const GET: &str = r"
local n = redis.call('STRLEN', KEYS[1])
if n > tonumber(ARGV[1]) then return {0, n} end
return {1, redis.call('GET', KEYS[1])}
";

/// KEYS: key. ARGV: cap, field.
const HGET: &str = r"
local n = redis.call('HSTRLEN', KEYS[1], ARGV[2])
if n > tonumber(ARGV[1]) then return {0, n} end
return {1, redis.call('HGET', KEYS[1], ARGV[2])}
";

/// KEYS: key. ARGV: cap. Returns {1, {field, value, ...}} or {0, size so far}.
/// HSCAN may repeat a field while the hash is rehashed: each counts once.
const HGETALL: &str = r"
local cap = tonumber(ARGV[1])
local total, seen, out, cursor = 0, {}, {}, '0'
repeat
  local r = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 64)
  cursor = r[1]
  local kv = r[2]
  for i = 1, #kv, 2 do
    local f = kv[i]
    if not seen[f] then
      seen[f] = true
      total = total + #f + #kv[i + 1]
      if total > cap then return {0, total} end
      out[#out + 1] = f
      out[#out + 1] = kv[i + 1]
    end
  end
until cursor == '0'
return {1, out}
";

/// KEYS: key. ARGV: cap, start, stop (LRANGE's, negative from the end).
/// Reads slices of 1, 2, 4, ... 256 items, stopping past the cap. Once an
/// item has been read, a slice holds no more items as large as the largest
/// so far than fit in what is left of the cap, plus one: a list of items
/// near the cap is refused after two of them, not after a slice of many.
const LRANGE: &str = r"
local cap = tonumber(ARGV[1])
local len = redis.call('LLEN', KEYS[1])
local s, e = tonumber(ARGV[2]), tonumber(ARGV[3])
if s < 0 then s = len + s end
if e < 0 then e = len + e end
if s < 0 then s = 0 end
if e >= len then e = len - 1 end
local out, total, step, big, i = {}, 0, 1, 0, s
while i <= e do
  local n = step
  if big > 0 then n = math.min(n, math.floor((cap - total) / big) + 1) end
  local j = math.min(i + n - 1, e)
  for _, v in ipairs(redis.call('LRANGE', KEYS[1], i, j)) do
    local size = #v
    total = total + size
    if total > cap then return {0, total} end
    if size > big then big = size end
    out[#out + 1] = v
  end
  i = j + 1
  if step < 256 then step = step * 2 end
end
return {1, out}
";

struct Scripts {
    get: redis::Script,
    hget: redis::Script,
    hgetall: redis::Script,
    lrange: redis::Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    get: redis::Script::new(GET),
    hget: redis::Script::new(HGET),
    hgetall: redis::Script::new(HGETALL),
    lrange: redis::Script::new(LRANGE),
});

/// The error for a reply over the cap.
pub fn over(size: usize, cap: usize) -> RepoError {
    RepoError::InvalidInput(format!(
        "the result is at least {size} bytes, over this plugin's max_value_kib ({cap} bytes); \
         nothing over the limit was read"
    ))
}

/// Runs a capped script and returns its payload, or the over-cap error.
async fn run<T: redis::FromRedisValue>(
    conn: &RedisConn,
    call: redis::ScriptInvocation<'_>,
    cap: usize,
) -> Result<T, RepoError> {
    let (ok, payload): (i64, Value) = conn.invoke(&call).await?;
    if ok == 0 {
        let size: usize = redis::from_redis_value(payload).unwrap_or(usize::MAX);
        return Err(over(size, cap));
    }
    redis::from_redis_value(payload)
        .map_err(|e| RepoError::Unavailable(format!("unexpected reply from Redis: {e}")))
}

/// `GET key`, capped.
pub(crate) async fn get(conn: &RedisConn, key: &str) -> Result<Option<String>, RepoError> {
    match limit() {
        None => conn
            .query(redis::cmd("GET").arg(key))
            .await
            .map_err(RepoError::from),
        Some(cap) => {
            let mut call = SCRIPTS.get.key(key);
            call.arg(cap);
            run(conn, call, cap).await
        }
    }
}

/// `HGET key field`, capped.
pub(crate) async fn hget(
    conn: &RedisConn,
    key: &str,
    field: &str,
) -> Result<Option<String>, RepoError> {
    match limit() {
        None => conn
            .query(redis::cmd("HGET").arg(key).arg(field))
            .await
            .map_err(RepoError::from),
        Some(cap) => {
            let mut call = SCRIPTS.hget.key(key);
            call.arg(cap).arg(field);
            run(conn, call, cap).await
        }
    }
}

/// `HGETALL key`, capped.
pub(crate) async fn hgetall(
    conn: &RedisConn,
    key: &str,
) -> Result<Vec<(String, String)>, RepoError> {
    match limit() {
        None => conn
            .query(redis::cmd("HGETALL").arg(key))
            .await
            .map_err(RepoError::from),
        Some(cap) => {
            let mut call = SCRIPTS.hgetall.key(key);
            call.arg(cap);
            // The script returns HGETALL's flat field/value array.
            run(conn, call, cap).await
        }
    }
}

/// `LRANGE key start stop`, capped.
pub(crate) async fn lrange(
    conn: &RedisConn,
    key: &str,
    start: i64,
    stop: i64,
) -> Result<Vec<String>, RepoError> {
    match limit() {
        None => conn
            .query(redis::cmd("LRANGE").arg(key).arg(start).arg(stop))
            .await
            .map_err(RepoError::from),
        Some(cap) => {
            let mut call = SCRIPTS.lrange.key(key);
            call.arg(cap).arg(start).arg(stop);
            run(conn, call, cap).await
        }
    }
}
