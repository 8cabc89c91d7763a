//! Per-tenant Redis memory budgets (`[tenants."name"] max_memory_kib`).
//!
//! A tenant's usage is what its keys (`{tenant}:…`, in every database the
//! pools reach) take in Redis, by `MEMORY USAGE`: measured by a walk of the
//! keyspace every [`MEASURE_EVERY`], plus what this host's plugins wrote
//! for the tenant since that walk began (each write's arguments and a
//! key's overhead, [`KEY_OVERHEAD`]). The host's keys that hold a
//! tenant's data count too: its dead letters, its due index, and its
//! fields of the retry metadata. A plugin's write that would take the
//! tenant past its budget is refused with `denied("quota: ...")` and writes
//! nothing; deletes are never refused, so a tenant at its budget can free
//! space.
//!
//! The overshoot is bounded, not zero: Redis may take a little more than
//! a write's estimate until the next walk corrects it, each host counts
//! only its own writes between walks, and the application's own writes
//! (not through the host) are counted only by the walk.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::{RedisConn, ScanCursor};
use crate::keys::validate_tenant;
use crate::pools::{Pool, Pools};

/// How often the keyspace is walked to measure the tenants' usage.
pub const MEASURE_EVERY: Duration = Duration::from_secs(2);

/// What a write is charged on top of its arguments: Redis's own overhead
/// of a key (its entry, the object header, an expiry).
pub const KEY_OVERHEAD: u64 = 96;

/// What each element of a write (a field of a hash, an item of a list)
/// may take beyond its bytes: a hash past 128 fields or with a value over
/// 64 bytes is a hash table, whose entry, two strings' headers and bucket
/// take about 40 bytes a field (a hash of 131 small fields took 5 to
/// 7 KB for 1.2 KB of arguments, and was charged 1.3 KB).
pub const ELEMENT_OVERHEAD: u64 = 64;

/// What a plugin's write with these arguments is charged before Redis
/// takes it: their bytes, two keys' overhead ([`KEY_OVERHEAD`]: the key,
/// and a set or index it may add to, as a batch's `pending_batches` set),
/// and [`ELEMENT_OVERHEAD`] for each field of an argument that is a JSON
/// object (a hash's fields), or one element otherwise. The walk replaces
/// the estimate with the measure within [`MEASURE_EVERY`].
pub fn write_cost(args: &[&str]) -> u64 {
    let bytes: usize = args.iter().map(|a| a.len()).sum();
    let elements = args
        .iter()
        .filter(|a| a.trim_start().starts_with('{'))
        .filter_map(|a| serde_json::from_str::<serde_json::Map<_, _>>(a).ok())
        .map(|m| m.len())
        .sum::<usize>()
        .max(1);
    let extra = ELEMENT_OVERHEAD.saturating_mul(elements as u64);
    (bytes as u64)
        .saturating_add(2 * KEY_OVERHEAD)
        .saturating_add(extra)
}

/// Keys per SCAN page of a walk.
const PAGE: usize = 1000;

/// `MEMORY USAGE` calls in flight at once on a Cluster (one per key).
const USAGE_CALLS: usize = 32;

/// One tenant's usage as this host knows it.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// Bytes the last walk measured.
    measured: u64,
    /// Bytes written by this host's plugins since that walk began.
    since: u64,
    /// `since` when the current walk began (what the walk may have seen).
    at_walk: u64,
}

/// Every tenant's usage, as this host knows it.
#[derive(Debug, Default)]
pub struct Usage {
    tenants: Mutex<HashMap<String, Tally>>,
}

impl Usage {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tally>> {
        self.tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Charges a write of `bytes` to `tenant` if it stays within `budget`;
    /// otherwise returns the tenant's usage and charges nothing.
    pub fn charge(&self, tenant: &str, bytes: u64, budget: u64) -> Result<(), u64> {
        let mut tenants = self.lock();
        let tally = tenants.entry(tenant.to_owned()).or_default();
        let used = tally.measured.saturating_add(tally.since);
        if used.saturating_add(bytes) > budget {
            return Err(used);
        }
        tally.since = tally.since.saturating_add(bytes);
        Ok(())
    }

    /// The bytes `tenant` is known to use.
    pub fn of(&self, tenant: &str) -> u64 {
        self.lock()
            .get(tenant)
            .map_or(0, |t| t.measured.saturating_add(t.since))
    }

    /// A walk begins: what was written so far, it may see.
    fn begin_walk(&self) {
        for tally in self.lock().values_mut() {
            tally.at_walk = tally.since;
        }
    }

    /// A walk ended with `measured` bytes per tenant: writes it may have
    /// seen are now counted by it; those since it began stay counted.
    fn end_walk(&self, measured: &HashMap<String, u64>) {
        let mut tenants = self.lock();
        for (tenant, tally) in tenants.iter_mut() {
            tally.measured = measured.get(tenant).copied().unwrap_or(0);
            tally.since = tally.since.saturating_sub(tally.at_walk);
            tally.at_walk = 0;
        }
        for (tenant, bytes) in measured {
            tenants.entry(tenant.clone()).or_insert(Tally {
                measured: *bytes,
                ..Tally::default()
            });
        }
    }
}

/// The tenant a key belongs to: the text before its first `:`.
fn tenant_of(key: &str) -> Option<&str> {
    key.split_once(':').map(|(tenant, _)| tenant)
}

/// Whether a tenant has a budget (only such tenants' keys are measured).
pub type Budgeted = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Measures the usage of every tenant with a budget (`budgeted`) every
/// [`MEASURE_EVERY`], until `cancel`.
pub async fn measure(
    pools: Pools,
    usage: std::sync::Arc<Usage>,
    budgeted: Budgeted,
    cancel: CancellationToken,
) {
    let errors = crate::throttle::Throttle::new(Duration::from_secs(60));
    loop {
        usage.begin_walk();
        let mut measured = HashMap::new();
        let mut failed = None;
        for pool in pools.distinct() {
            if let Err(e) = walk(&pool, budgeted.as_ref(), &mut measured).await {
                failed = Some(e);
            }
        }
        match failed {
            None => {
                usage.end_walk(&measured);
                tracing::debug!(target: "symphony::budget", event = "memory_measured",
                    tenants = measured.len(), "measured the budgeted tenants' Redis memory");
            }
            Some(e) => {
                if let Some(suppressed) = errors.allow() {
                    tracing::warn!(event = "memory_walk_failed", error = %e, suppressed,
                        "cannot measure the tenants' Redis memory; the last measure stands");
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(MEASURE_EVERY) => {}
        }
    }
}

/// Whose memory a key is.
#[derive(Debug, PartialEq, Eq)]
enum Owner<'k> {
    /// A tenant's own key (`{tenant}:...`), or the host's dead-letter
    /// list or due index of that tenant (`symphony:dead:{tenant}`,
    /// `symphony:due:{tenant}`; on a Cluster `symphony:{tag}:dead:...`), or
    /// a fired mark of one of its trigger keys (`symphony:fired:{key}`).
    Tenant(&'k str),
    /// A set the tenants share (`pending_batches:{service}`): charged in
    /// full to every tenant it lists, since any of them may have made it.
    Shared,
    /// The host's retry metadata (`symphony:meta`, on a Cluster
    /// `symphony:{tag}:meta`), one field per retrying firing: each field
    /// is charged to the tenant of its trigger key.
    Meta,
}

/// The owner of `key`, if a tenant's (the host's other keys are no one's).
fn owner_of(key: &str) -> Option<Owner<'_>> {
    let tenant = tenant_of(key)?;
    if tenant == "pending_batches" {
        return Some(Owner::Shared);
    }
    if tenant == crate::keys::HOST_PREFIX {
        return host_key_owner(key.get(tenant.len() + 1..)?);
    }
    validate_tenant(tenant)
        .is_ok()
        .then_some(Owner::Tenant(tenant))
}

/// The owner of one of the host's keys, by its name after `symphony:`
/// (and after a Cluster space's `{tag}:`): the tenant of a dead-letter
/// list or due index (`dead:{tenant}`, `due:{tenant}`), or of the trigger
/// key a fired mark names (`fired:{key}`), or the retry metadata (`meta`).
/// The name is read whole, never searched: a fired mark's key is chosen
/// by whoever set that key, and a mark for `evil:...:dead:victim` once
/// charged `victim`.
fn host_key_owner(rest: &str) -> Option<Owner<'_>> {
    let rest = match rest.strip_prefix('{') {
        Some(tagged) => tagged.split_once("}:")?.1,
        None => rest,
    };
    if rest == "meta" {
        return Some(Owner::Meta);
    }
    let owner = match rest.split_once(':')? {
        ("dead" | "due", tenant) => tenant,
        ("fired", key) => tenant_of(key)?,
        _ => return None,
    };
    validate_tenant(owner)
        .is_ok()
        .then_some(Owner::Tenant(owner))
}

/// `MEMORY USAGE key SAMPLES 0`: every element counted (the default
/// samples five, and a list with small first nodes and huge later ones
/// read as a fiftieth of its size).
fn usage_of(key: &str) -> redis::Cmd {
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .clone()
}

/// Adds what the budgeted tenants' keys in `pool` take to `measured`.
async fn walk(
    pool: &Pool,
    budgeted: &(dyn Fn(&str) -> bool + Send + Sync),
    measured: &mut HashMap<String, u64>,
) -> redis::RedisResult<()> {
    let conn = pool.conn();
    let mut cursor = Some(ScanCursor::START);
    while let Some(at) = cursor {
        let (next, keys) = conn.scan_page("*", at, PAGE).await?;
        cursor = next;
        let mut owned: Vec<(&str, Owner<'_>)> = Vec::new();
        for key in &keys {
            match owner_of(key) {
                Some(Owner::Meta) => charge_meta(&conn, key, budgeted, measured).await?,
                Some(Owner::Tenant(t)) if !budgeted(t) => {}
                Some(owner) => owned.push((key.as_str(), owner)),
                None => {}
            }
        }
        let keys = owned;
        let names: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
        let sizes: Vec<Option<u64>> = conn.each(&names, usage_of, USAGE_CALLS).await?;
        let shared: Vec<&str> = keys
            .iter()
            .filter(|(_, o)| *o == Owner::Shared)
            .map(|(k, _)| *k)
            .collect();
        let members: Vec<Vec<String>> = conn
            .each(
                &shared,
                |k| redis::cmd("SMEMBERS").arg(k).clone(),
                USAGE_CALLS,
            )
            .await?;
        let mut listed = shared.iter().zip(members).collect::<HashMap<_, _>>();
        for ((key, owner), size) in keys.iter().zip(sizes) {
            let size = size.unwrap_or(0);
            let owners = match owner {
                Owner::Tenant(t) => vec![(*t).to_owned()],
                Owner::Shared => listed.remove(key).unwrap_or_default(),
                Owner::Meta => Vec::new(),
            };
            for tenant in owners.into_iter().filter(|t| budgeted(t)) {
                *measured.entry(tenant).or_default() += size;
            }
        }
    }
    Ok(())
}

/// What a field of a hash takes beyond its name and value.
const FIELD_OVERHEAD: u64 = 24;

/// Charges each field of the retry metadata hash `key` (a firing's member
/// → its JSON) to the tenant of the firing, if it has a budget: the field's
/// name and value and [`FIELD_OVERHEAD`]. The hash holds only firings
/// waiting for a retry, so it is small unless tenants fail a lot, which is
/// when it must be counted.
async fn charge_meta(
    conn: &RedisConn,
    key: &str,
    budgeted: &(dyn Fn(&str) -> bool + Send + Sync),
    measured: &mut HashMap<String, u64>,
) -> redis::RedisResult<()> {
    let mut at = 0_u64;
    loop {
        let hscan = redis::cmd("HSCAN")
            .arg(key)
            .arg(at)
            .arg("COUNT")
            .arg(PAGE)
            .clone();
        // Field, value, field, value, ...
        let (next, flat): (u64, Vec<Vec<u8>>) = conn.query(&hscan).await?;
        for pair in flat.chunks_exact(2) {
            let [field, value] = pair else { continue };
            let Some(tenant) = std::str::from_utf8(field).ok().and_then(tenant_of) else {
                continue;
            };
            if validate_tenant(tenant).is_ok() && budgeted(tenant) {
                let bytes = (field.len() + value.len()) as u64 + FIELD_OVERHEAD;
                *measured.entry(tenant.to_owned()).or_default() += bytes;
            }
        }
        if next == 0 {
            return Ok(());
        }
        at = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_charged_for_its_fields() {
        let small = write_cost(&["a", "b"]);
        assert_eq!(small, 2 + 2 * KEY_OVERHEAD + ELEMENT_OVERHEAD);
        let fields: serde_json::Map<String, serde_json::Value> =
            (0..131).map(|i| (format!("f{i}"), 1.into())).collect();
        let data = serde_json::Value::Object(fields).to_string();
        let wide = write_cost(&["user", &data]);
        assert!(wide >= 131 * ELEMENT_OVERHEAD + data.len() as u64, "{wide}");
        // Not an object: one element, whatever it holds.
        assert_eq!(
            write_cost(&["{not json"]),
            9 + 2 * KEY_OVERHEAD + ELEMENT_OVERHEAD
        );
    }

    #[test]
    fn writes_count_until_a_walk_measures_them() {
        let usage = Usage::default();
        assert!(usage.charge("a", 600, 1000).is_ok());
        assert_eq!(usage.charge("a", 500, 1000), Err(600));
        assert!(usage.charge("b", 900, 1000).is_ok());
        usage.begin_walk();
        // Written during the walk: still counted after it.
        assert!(usage.charge("a", 100, 1000).is_ok());
        usage.end_walk(&HashMap::from([("a".to_owned(), 650)]));
        assert_eq!(usage.of("a"), 750);
        // b's keys were deleted: the walk found none.
        assert_eq!(usage.of("b"), 0);
        assert_eq!(owner_of("acme:user:1"), Some(Owner::Tenant("acme")));
        assert_eq!(owner_of("nocolon"), None);
        assert_eq!(owner_of("symphony:due:acme"), Some(Owner::Tenant("acme")));
        assert_eq!(
            owner_of("symphony:{7}:due:acme"),
            Some(Owner::Tenant("acme"))
        );
        assert_eq!(owner_of("symphony:leases"), None);
        assert_eq!(owner_of("symphony:dead:acme"), Some(Owner::Tenant("acme")));
        assert_eq!(
            owner_of("symphony:{7}:dead:acme"),
            Some(Owner::Tenant("acme"))
        );
        assert_eq!(owner_of("symphony:dead"), None);
        assert_eq!(owner_of("symphony:meta"), Some(Owner::Meta));
        assert_eq!(owner_of("symphony:{7}:meta"), Some(Owner::Meta));
        // Names are read whole: a key's text cannot name another owner.
        let mark = "symphony:fired:evil:EXPTRIGGER:a:x:dead:victim";
        assert_eq!(owner_of(mark), Some(Owner::Tenant("evil")));
        assert_eq!(
            owner_of("symphony:{7}:fired:evil:EXPTRIGGER:a:1:meta"),
            Some(Owner::Tenant("evil"))
        );
        assert_eq!(owner_of("symphony:leases:due:victim"), None);
        assert_eq!(owner_of("symphony:due:victim:x"), None);
        assert_eq!(owner_of("symphony:spent"), None);
        assert_eq!(owner_of("symphony:fired:symphony:due:victim"), None);
        assert_eq!(owner_of("pending_batches:whatsapp"), Some(Owner::Shared));
        assert_eq!(owner_of("__x:y"), None);
    }
}
