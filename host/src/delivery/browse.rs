//! Paged reads of the delivery state, for the admin API: the scheduled
//! triggers (the tenants' due indexes, merged in due order) and the claimed
//! firings (the leases).
//!
//! Every read is bounded: a page costs a few round trips and at most
//! [`SCAN_BUDGET`] index entries, however many triggers are pending. A
//! filter on action or id prefix may find fewer than a page within that
//! budget; the page then says how far it looked (`next`), and the next
//! request goes on from there. Nothing scans a whole index.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::{Delivery, LEASES, READY, due_key, member_of, split_member, tenant_of};
use crate::error::RepoError;
use crate::keys::parse_trigger;

/// Index entries one page may read.
pub const SCAN_BUDGET: usize = 5000;
/// The largest page.
pub const MAX_PAGE: usize = 500;

/// What to show of the scheduled triggers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerFilter {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only ids starting with this.
    pub id_prefix: Option<String>,
}

/// Where a page of scheduled triggers ends: its last entry's due time and
/// index member. Written as `{due_ms}-{member as hex}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Due time (server ms).
    pub due_ms: i64,
    /// Index member.
    pub member: String,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-", self.due_ms)?;
        self.member.bytes().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a cursor (use the `next` of a page)");
        let (due, hex) = s.split_once('-').ok_or_else(bad)?;
        let due_ms = due.parse().map_err(|_| bad())?;
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(bad)?;
        let member = String::from_utf8(bytes).map_err(|_| bad())?;
        Ok(Cursor { due_ms, member })
    }
}

/// One scheduled trigger (or pending retry).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Scheduled {
    /// The trigger key.
    pub key: String,
    /// Tenant.
    pub tenant: String,
    /// Action (empty for a key that is not a trigger key).
    pub action: String,
    /// Identifier.
    pub id: String,
    /// When it is due (Redis server time, ms).
    pub due_ms: i64,
    /// A retry of a failed attempt, not the trigger itself.
    pub retry: bool,
}

/// A page of scheduled triggers, in due order.
#[derive(Debug, Clone, Serialize)]
pub struct SchedulePage {
    /// The triggers.
    pub items: Vec<Scheduled>,
    /// Where the next page starts; `None` at the end.
    pub next: Option<String>,
    /// Index entries read for this page.
    pub scanned: usize,
}

/// One claimed firing: its lease.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Claimed {
    /// The trigger key.
    pub key: String,
    /// Tenant.
    pub tenant: String,
    /// Action.
    pub action: String,
    /// Identifier.
    pub id: String,
    /// A retry of a failed attempt.
    pub retry: bool,
    /// When its lease ends unless renewed (server ms).
    pub lease_end_ms: i64,
    /// Its lease: the index member and its claim token (as a host lists
    /// it while running it).
    pub member: String,
}

fn describe(member: &str) -> (String, String, String, String, bool) {
    let key = split_member(member);
    let retry = key.len() != member.len();
    match parse_trigger(key) {
        Some(t) => (
            key.to_owned(),
            t.tenant.to_owned(),
            t.action.to_owned(),
            t.id.to_owned(),
            retry,
        ),
        None => (
            key.to_owned(),
            tenant_of(key).to_owned(),
            String::new(),
            String::new(),
            retry,
        ),
    }
}

impl TriggerFilter {
    fn accepts(&self, s: &Scheduled) -> bool {
        self.action.as_ref().is_none_or(|a| *a == s.action)
            && self.id_prefix.as_ref().is_none_or(|p| s.id.starts_with(p))
    }

    fn narrows(&self) -> bool {
        self.action.is_some() || self.id_prefix.is_some()
    }
}

/// A page from what each tenant's index gave (`per_tenant` entries at
/// most each), merged in due order, filtered, cut at `limit`.
fn page_of(
    read: Vec<Vec<(String, f64)>>,
    per_tenant: usize,
    filter: &TriggerFilter,
    limit: usize,
) -> SchedulePage {
    let scanned = read.iter().map(Vec::len).sum();
    // Entries are in order up to the smallest last entry of a tenant
    // whose read was full: past it, that tenant may have more.
    let bound: Option<(i64, String)> = read
        .iter()
        .filter(|r| r.len() == per_tenant)
        .filter_map(|r| r.last())
        .map(|(m, s)| (*s as i64, m.clone()))
        .min();
    let mut entries: Vec<(i64, String)> = read
        .into_iter()
        .flatten()
        .map(|(m, s)| (s as i64, m))
        .filter(|e| bound.as_ref().is_none_or(|b| e <= b))
        .collect();
    entries.sort();
    let mut items = Vec::new();
    let mut last: Option<&(i64, String)> = None;
    for e in &entries {
        let (key, tenant, action, id, retry) = describe(&e.1);
        let s = Scheduled {
            key,
            tenant,
            action,
            id,
            due_ms: e.0,
            retry,
        };
        last = Some(e);
        if filter.accepts(&s) {
            items.push(s);
            if items.len() == limit {
                break;
            }
        }
    }
    let next = if items.len() == limit {
        last
    } else {
        bound.as_ref()
    }
    .map(|(due_ms, member)| {
        Cursor {
            due_ms: *due_ms,
            member: member.clone(),
        }
        .to_string()
    });
    SchedulePage {
        items,
        next,
        scanned,
    }
}

impl Delivery {
    /// A page of at most `limit` scheduled triggers matching `filter`, in
    /// due order (then by key), after `after`.
    ///
    /// Each tenant's index is read from the cursor's rank on (`ZRANK` or
    /// `ZCOUNT`, then `ZRANGE` by rank), so a page costs two round trips
    /// and O(log n) per tenant in Redis, plus the entries read.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn scheduled(
        &self,
        filter: &TriggerFilter,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<SchedulePage, RepoError> {
        self.not_sharded("browsing the scheduled triggers")?;
        let limit = limit.clamp(1, MAX_PAGE);
        let tenants: Vec<String> = match &filter.tenant {
            Some(t) => vec![t.clone()],
            None => {
                self.conn
                    .query(redis::cmd("ZRANGE").arg(READY).arg(0).arg(-1))
                    .await?
            }
        };
        if tenants.is_empty() {
            return Ok(SchedulePage {
                items: Vec::new(),
                next: None,
                scanned: 0,
            });
        }
        // Entries to read per tenant: a page, or a share of the budget when
        // a filter may skip most of them.
        let per_tenant = if filter.narrows() {
            (SCAN_BUDGET / tenants.len()).max(limit)
        } else {
            limit
        };
        // Round trip 1: where each tenant's index goes past the cursor.
        let starts = match after {
            None => vec![0; tenants.len()],
            Some(c) => self.ranks_after(&tenants, c).await?,
        };
        // Round trip 2: the entries from there.
        let mut pipe = redis::pipe();
        for (t, start) in tenants.iter().zip(&starts) {
            pipe.cmd("ZRANGE")
                .arg(due_key(t))
                .arg(*start)
                .arg(*start + per_tenant as i64 - 1)
                .arg("WITHSCORES");
        }
        let read: Vec<Vec<(String, f64)>> = self.conn.pipe(&pipe).await?;
        Ok(page_of(read, per_tenant, filter, limit))
    }

    /// Where each tenant's index goes past cursor `c`: the rank of its
    /// first entry after it.
    async fn ranks_after(&self, tenants: &[String], c: &Cursor) -> Result<Vec<i64>, RepoError> {
        let own = tenant_of(&c.member);
        let mut pipe = redis::pipe();
        for t in tenants {
            let key = due_key(t);
            if t == own {
                // Its rank, or (gone) the entries due before it.
                pipe.cmd("ZRANK").arg(&key).arg(&c.member);
                pipe.cmd("ZCOUNT")
                    .arg(&key)
                    .arg("-inf")
                    .arg(format!("({}", c.due_ms));
            } else {
                // Another tenant's members sort wholly before or after
                // the cursor's at its due time (they differ in the
                // `tenant:` prefix).
                let before = format!("{t}:").as_str() < c.member.as_str();
                let max = if before {
                    c.due_ms.to_string()
                } else {
                    format!("({}", c.due_ms)
                };
                pipe.cmd("PING");
                pipe.cmd("ZCOUNT").arg(&key).arg("-inf").arg(max);
            }
        }
        let replies: Vec<redis::Value> = self.conn.pipe(&pipe).await?;
        Ok(replies
            .chunks(2)
            .map(|pair| match pair {
                [redis::Value::Int(rank), _] => rank + 1,
                [_, redis::Value::Int(count)] => *count,
                _ => 0,
            })
            .collect())
    }

    /// Refuses an operation not built for a Redis Cluster's sharded state.
    fn not_sharded(&self, what: &str) -> Result<(), RepoError> {
        match self.layout.one_space() {
            true => Ok(()),
            false => Err(RepoError::Unavailable(format!(
                "{what} is not available on a Redis Cluster yet"
            ))),
        }
    }

    /// Claimed firings, the soonest lease end first: at most `limit` from
    /// `offset`, and how many there are.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn claimed(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Claimed>, u64), RepoError> {
        self.not_sharded("browsing the claimed firings")?;
        let limit = limit.clamp(1, MAX_PAGE);
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGE")
            .arg(LEASES)
            .arg(offset)
            .arg(offset + limit - 1)
            .arg("WITHSCORES")
            .zcard(LEASES);
        let (leases, total): (Vec<(String, f64)>, u64) = self.conn.pipe(&pipe).await?;
        let items = leases
            .into_iter()
            .map(|(member, end)| {
                let (key, tenant, action, id, retry) = describe(member_of(&member));
                Claimed {
                    key,
                    tenant,
                    action,
                    id,
                    retry,
                    lease_end_ms: end as i64,
                    member,
                }
            })
            .collect();
        Ok((items, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_any_member() {
        for member in ["acme:EXPTRIGGER:a:1", "t:EXPTRIGGER:a:x\0r2", "é:-:"] {
            let c = Cursor {
                due_ms: 1_700_000_000_123,
                member: member.to_owned(),
            };
            assert_eq!(c.to_string().parse::<Cursor>(), Ok(c));
        }
        for bad in ["", "12", "x-00", "12-0", "12-zz", "12-ff"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
    }
}
