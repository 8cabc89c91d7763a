//! The JSON API behind the dashboard (`/api/...`). Reads are GETs; every
//! change is a POST with a JSON body, so no link or plain form can make
//! one. The triggers and dead letters go through the same calls as the
//! CLI's `trigger` and `dead` commands ([`TriggerRepo::delete`],
//! [`Delivery::retry_dead`], [`Delivery::purge_dead`]).
//!
//! The delivery state read here is that of the expiry pool, where the
//! trigger repository arms triggers and the CLI looks.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{Admin, no_store};
use crate::delivery::{Cursor, DeadFilter, Delivery, TriggerFilter};
use crate::error::RepoError;
use crate::pools::PoolAlias;
use crate::repo::TriggerRepo;

/// Default page size.
const PAGE: usize = 50;

pub(super) fn ok(body: &serde_json::Value) -> Response {
    no_store(Json(body).into_response())
}

pub(super) fn error(status: StatusCode, error: &str) -> Response {
    no_store((status, Json(json!({ "error": error }))).into_response())
}

/// Why a request failed: its status and message (`{"error": ...}`).
pub(super) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, &self.1)
    }
}

impl From<crate::pools::PoolNotConfigured> for ApiError {
    fn from(e: crate::pools::PoolNotConfigured) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        let status = match e {
            RepoError::InvalidInput(_) => StatusCode::BAD_REQUEST,
            RepoError::Denied(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

/// The expiry pool's delivery state.
fn delivery(admin: &Admin) -> Result<Delivery, ApiError> {
    if let Some(d) = admin.ctx.deliveries().get(&PoolAlias::Expiry) {
        return Ok(d.clone());
    }
    Ok(Delivery::new(admin.ctx.pools())?)
}

/// The expiry pool's connection (where the hosts' records are).
fn expiry_conn(admin: &Admin) -> Result<crate::backend::RedisConn, ApiError> {
    Ok(admin.ctx.pools().get(PoolAlias::Expiry)?.conn())
}

/// Empty query parameters mean "not given".
fn given(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// A tenant parameter: not given, or a name the tenant rule allows
/// (`400` otherwise, naming the rule).
fn tenant(v: Option<String>) -> Result<Option<String>, ApiError> {
    let t = given(v);
    if let Some(t) = &t {
        crate::keys::validate_tenant(t)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    }
    Ok(t)
}

/// `GET /api/overview`: the shared delivery state and the fleet's last
/// minute (every host), and this host's dispatches over the last minute
/// and hour, in total, per plugin and per tenant.
pub(super) async fn overview(State(admin): State<Arc<Admin>>) -> ApiResult {
    let gauges = delivery(&admin)?.gauges().await?;
    let (minute, hour) = admin.ctx.stats().recent.windows(crate::unix_ms());
    // The fleet's last minute, from every live host's heartbeat (its
    // counts are up to one beat old).
    let hosts = crate::fleet::list(&expiry_conn(&admin)?).await?;
    let alive = hosts.iter().filter(|h| h.alive);
    let (fleet_hosts, fleet_dispatches, fleet_failed) = alive.fold((0, 0, 0), |(n, d, f), h| {
        (
            n + 1,
            d + h.record.minute_dispatches,
            f + h.record.minute_failed,
        )
    });
    let running = admin.ctx.in_flight().lock().map_or(0, |s| s.len());
    Ok(ok(&json!({
        "host": { "pid": std::process::id(), "version": env!("CARGO_PKG_VERSION"), "running": running },
        "generation": admin.ctx.plugins().generation(),
        "pending": gauges.pending,
        "claimed": gauges.leases,
        "dead_letters": gauges.dead_letters,
        "retries": gauges.retries,
        "fleet": {
            "hosts": fleet_hosts,
            "minute_dispatches": fleet_dispatches,
            "minute_failed": fleet_failed,
            "per_second": (fleet_dispatches as f64 / 60.0 * 100.0).round() / 100.0,
        },
        "minute": minute,
        "hour": hour,
    })))
}

#[derive(Deserialize)]
pub(super) struct Limit {
    limit: Option<usize>,
}

/// `GET /api/dispatches?limit=N`: this host's last dispatches, newest first.
pub(super) async fn dispatches(
    State(admin): State<Arc<Admin>>,
    Query(q): Query<Limit>,
) -> Response {
    let items = admin
        .ctx
        .stats()
        .recent
        .dispatches(q.limit.unwrap_or(crate::recent::RECENT_DISPATCHES));
    ok(&json!({ "items": items }))
}

#[derive(Deserialize)]
pub(super) struct TriggerQuery {
    tenant: Option<String>,
    action: Option<String>,
    id_prefix: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/triggers?tenant=&action=&id_prefix=&after=&limit=`: a page of
/// scheduled triggers in due order; `next` goes in `after` for the next.
pub(super) async fn triggers(
    State(admin): State<Arc<Admin>>,
    Query(q): Query<TriggerQuery>,
) -> ApiResult {
    let after = given(q.after)
        .map(|a| a.parse::<Cursor>())
        .transpose()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let filter = TriggerFilter {
        tenant: tenant(q.tenant)?,
        action: given(q.action),
        id_prefix: given(q.id_prefix),
    };
    let page = delivery(&admin)?
        .scheduled(&filter, after.as_ref(), q.limit.unwrap_or(PAGE))
        .await?;
    Ok(ok(&json!(page)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TriggerRef {
    tenant: String,
    action: String,
    id: String,
}

/// `POST /api/triggers/cancel {"tenant","action","id"}`: cancels a pending
/// trigger, as `symphony-host trigger cancel` does.
pub(super) async fn cancel_trigger(
    State(admin): State<Arc<Admin>>,
    Json(t): Json<TriggerRef>,
) -> ApiResult {
    let cancelled = TriggerRepo::new(admin.ctx.pools(), &t.tenant)?
        .delete(&t.action, &t.id)
        .await?;
    tracing::info!(
        event = "admin_cancelled",
        tenant = %t.tenant, action = %t.action, id = %t.id, cancelled,
        "trigger cancelled from the admin API"
    );
    Ok(ok(&json!({ "cancelled": cancelled })))
}

#[derive(Deserialize)]
pub(super) struct Paging {
    offset: Option<usize>,
    limit: Option<usize>,
}

/// `GET /api/in-flight?offset=&limit=`: claimed firings (every host's),
/// the soonest lease end first, each with the host running it and since
/// when (from the hosts' heartbeats; none while it waits for its due time
/// or a slot).
pub(super) async fn in_flight(
    State(admin): State<Arc<Admin>>,
    Query(q): Query<Paging>,
) -> ApiResult {
    let (claimed, total) = delivery(&admin)?
        .claimed(q.offset.unwrap_or(0), q.limit.unwrap_or(PAGE))
        .await?;
    let hosts = crate::fleet::list(&expiry_conn(&admin)?).await?;
    let running: HashMap<&str, (&str, i64)> = hosts
        .iter()
        .filter(|h| h.alive)
        .flat_map(|h| {
            h.record
                .running
                .iter()
                .map(move |(m, since)| (m.as_str(), (h.record.id.as_str(), *since)))
        })
        .collect();
    let items: Vec<serde_json::Value> = claimed
        .iter()
        .map(|c| {
            let (host, since_ms) = running
                .get(c.member.as_str())
                .map_or((None, None), |(h, s)| (Some(*h), Some(*s)));
            json!({
                "key": c.key, "tenant": c.tenant, "action": c.action, "id": c.id,
                "retry": c.retry, "lease_end_ms": c.lease_end_ms,
                "host": host, "since_ms": since_ms,
            })
        })
        .collect();
    Ok(ok(&json!({ "items": items, "total": total })))
}

#[derive(Deserialize)]
pub(super) struct DeadQuery {
    key: Option<String>,
    tenant: Option<String>,
    action: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// `GET /api/dead?tenant=&action=&key=&offset=&limit=`: dead letters,
/// newest first, and how many match.
pub(super) async fn dead(State(admin): State<Arc<Admin>>, Query(q): Query<DeadQuery>) -> ApiResult {
    let filter = DeadFilter {
        key: given(q.key),
        tenant: tenant(q.tenant)?,
        action: given(q.action),
    };
    let list = delivery(&admin)?.dead_letters().await?;
    let matching: Vec<_> = list.letters.iter().filter(|l| filter.accepts(l)).collect();
    let items: Vec<_> = matching
        .iter()
        .skip(q.offset.unwrap_or(0))
        .take(q.limit.unwrap_or(PAGE).clamp(1, crate::delivery::MAX_PAGE))
        .collect();
    Ok(ok(&json!({
        "items": items,
        "total": matching.len(),
        "unreadable": list.unreadable.len(),
    })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct DeadSelect {
    key: Option<String>,
    tenant: Option<String>,
    action: Option<String>,
}

impl TryFrom<DeadSelect> for DeadFilter {
    type Error = ApiError;
    fn try_from(s: DeadSelect) -> Result<Self, ApiError> {
        Ok(DeadFilter {
            key: given(s.key),
            tenant: tenant(s.tenant)?,
            action: given(s.action),
        })
    }
}

/// `POST /api/dead/retry {"key"?, "tenant"?, "action"?}`: queues the
/// matching dead letters again (`{}`: all), as `symphony-host dead retry`.
pub(super) async fn dead_retry(
    State(admin): State<Arc<Admin>>,
    Json(s): Json<DeadSelect>,
) -> ApiResult {
    let filter = DeadFilter::try_from(s)?;
    let n = delivery(&admin)?.retry_dead(&filter).await?;
    tracing::info!(
        event = "admin_dead_retried",
        retried = n,
        ?filter,
        "dead letters queued again from the admin API"
    );
    Ok(ok(&json!({ "retried": n })))
}

/// `POST /api/dead/purge {"key"?, "tenant"?, "action"?}`: deletes the
/// matching dead letters (`{}`: all), as `symphony-host dead purge`.
pub(super) async fn dead_purge(
    State(admin): State<Arc<Admin>>,
    Json(s): Json<DeadSelect>,
) -> ApiResult {
    let filter = DeadFilter::try_from(s)?;
    let n = delivery(&admin)?.purge_dead(&filter).await?;
    tracing::info!(
        event = "admin_dead_purged",
        purged = n,
        ?filter,
        "dead letters purged from the admin API"
    );
    Ok(ok(&json!({ "purged": n })))
}

/// `GET /api/hosts`: every host on this Redis, by heartbeat.
pub(super) async fn hosts(State(admin): State<Arc<Admin>>) -> ApiResult {
    let hosts = crate::fleet::list(&expiry_conn(&admin)?).await?;
    Ok(ok(&json!({ "hosts": hosts, "now_ms": crate::unix_ms() })))
}

/// `GET /api/plugins`: the live plugin set and the last reload's error.
pub(super) async fn plugins(State(admin): State<Arc<Admin>>) -> Response {
    let set = admin.ctx.plugins();
    let plugins: Vec<serde_json::Value> = set
        .plugins()
        .iter()
        .map(|p| {
            let policy = p.policy();
            let l = &policy.limits;
            json!({
                "name": p.name().as_str(),
                "path": p.path().display().to_string(),
                "version": p.digest(),
                "actions": set.prefixes_of(p),
                "tenants": policy.tenants.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "capabilities": policy.grants.capabilities(),
                "limits": {
                    "timeout_ms": crate::millis(l.timeout),
                    "max_memory_bytes": l.max_memory_bytes,
                    "fuel": l.fuel.map(std::num::NonZeroU64::get),
                    "max_instances": l.max_instances.get(),
                    "max_value_bytes": l.max_value_bytes,
                    "max_host_calls": l.max_host_calls.get(),
                },
                "load_ms": crate::millis(p.compile_time()),
            })
        })
        .collect();
    let last_reload_error = admin
        .ctx
        .stats()
        .last_reload_error
        .lock()
        .ok()
        .and_then(|e| e.clone());
    ok(&json!({
        "generation": set.generation(),
        "plugins": plugins,
        "last_reload_error": last_reload_error,
    }))
}

/// `POST /api/plugins/reload`: reloads the manifest and plugins now; 200
/// with the new generation, or 422 with why it was rejected (the live set
/// keeps serving).
pub(super) async fn reload(State(admin): State<Arc<Admin>>) -> ApiResult {
    let generation = admin
        .ctx
        .reload()
        .await
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    Ok(ok(&json!({ "generation": generation })))
}

#[cfg(test)]
mod props {
    use axum::extract::Query;
    use axum::http::Uri;
    use proptest::prelude::*;

    use super::*;

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("tenant".to_owned()),
            Just("after".to_owned()),
            Just("limit".to_owned()),
            Just("offset".to_owned()),
            Just("key".to_owned()),
            "\\PC{0,8}",
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("__keyevent@8__".to_owned()),
            Just("symphony".to_owned()),
            Just("pending_batches".to_owned()),
            Just("12-61ff00".to_owned()),
            "[a-z_{}:@ \\-0-9]{0,12}",
            any::<String>(),
        ]
    }

    /// Whether a tenant parameter is refused: exactly when the tenant
    /// rule refuses the name (an empty one is "not given").
    fn refused(raw: Option<&str>) -> bool {
        raw.is_some_and(|t| !t.is_empty() && crate::keys::validate_tenant(t).is_err())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Whatever a client puts in the query string of `/api/triggers`
        /// or `/api/dead`, it parses or is refused, never panics; a tenant
        /// parameter passes exactly when the tenant rule allows it (so
        /// `__keyevent@...`, `symphony`, `{...}` and `a:b` get 400), and a
        /// cursor parses or is refused.
        #[test]
        fn query_strings_parse_or_are_refused(
            pairs in prop::collection::vec((name(), value()), 0..6)
        ) {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&pairs)
                .finish();
            let uri: Uri = format!("/api/triggers?{query}").parse().unwrap();
            if let Ok(Query(q)) = Query::<TriggerQuery>::try_from_uri(&uri) {
                let raw = q.tenant.clone();
                prop_assert_eq!(tenant(q.tenant).is_err(), refused(raw.as_deref()));
                if let Some(after) = given(q.after) {
                    let _ = after.parse::<Cursor>();
                }
            }
            if let Ok(Query(q)) = Query::<DeadQuery>::try_from_uri(&uri) {
                let raw = q.tenant.clone();
                prop_assert_eq!(tenant(q.tenant).is_err(), refused(raw.as_deref()));
            }
        }

        /// Raw query bytes (bad escapes, stray `&`/`=`, huge numbers)
        /// never panic the extractors or the cursor.
        #[test]
        fn raw_queries_never_panic(raw in "[ -~]{0,120}") {
            if let Ok(uri) = format!("/api/dead?{}", raw.replace(' ', "+")).parse::<Uri>() {
                let _ = Query::<TriggerQuery>::try_from_uri(&uri);
                let _ = Query::<DeadQuery>::try_from_uri(&uri);
                let _ = Query::<Paging>::try_from_uri(&uri);
            }
            let _ = raw.parse::<Cursor>();
        }
    }
}
