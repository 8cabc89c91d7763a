//! How many triggers a tenant has pending: its due index, for the
//! pending-trigger quota (`[tenants] max_pending_triggers`).
//!
//! On a standalone server the arming script counts the index itself, in
//! the same step as it adds to it. On a Cluster a tenant's index is split
//! over the slots, so no script can; the host counts it here (the slots
//! its hint buckets name, one `ZCARD` each) and `quota::Quotas` keeps the
//! count for a second, adding what this host arms meanwhile.

use futures::StreamExt;

use super::space::parse_tenant_hint;
use super::{Bucket, Delivery, Space, tenant_of};
use crate::error::RepoError;

/// `ZCARD` calls in flight at once while counting over a Cluster's slots.
const COUNT_CALLS: usize = 32;

impl Delivery {
    /// The entries of `tenant`'s due index, over every slot on a Cluster.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn pending_of(&self, tenant: &str) -> Result<u64, RepoError> {
        if self.layout.one_space() {
            let due = Space::standalone().due(tenant);
            return Ok(self.conn.query(redis::cmd("ZCARD").arg(due)).await?);
        }
        let mut slots = Vec::new();
        for bucket in Bucket::all() {
            let pairs: Vec<String> = self
                .conn
                .query(
                    redis::cmd("ZRANGE")
                        .arg(bucket.tenant_hints(tenant))
                        .arg(0)
                        .arg(-1),
                )
                .await?;
            slots.extend(
                pairs
                    .iter()
                    .filter_map(|p| parse_tenant_hint(p))
                    .filter(|(_, t)| *t == tenant)
                    .map(|(slot, _)| slot),
            );
        }
        let counts = slots.into_iter().map(|slot| {
            let cmd = redis::cmd("ZCARD")
                .arg(Space::of_slot(slot).due(tenant))
                .clone();
            let conn = self.conn.clone();
            async move { conn.query::<u64>(&cmd).await }
        });
        let counts: Vec<redis::RedisResult<u64>> = futures::stream::iter(counts)
            .buffer_unordered(COUNT_CALLS)
            .collect()
            .await;
        let mut total = 0u64;
        for n in counts {
            total = total.saturating_add(n?);
        }
        Ok(total)
    }

    /// Whether trigger `key` is in its tenant's due index (arming it again
    /// adds no entry).
    ///
    /// # Errors
    /// Redis failing.
    pub async fn is_indexed(&self, key: &str) -> Result<bool, RepoError> {
        let due = self.space_of(key).due(tenant_of(key));
        let score: Option<f64> = self
            .conn
            .query(redis::cmd("ZSCORE").arg(due).arg(key))
            .await?;
        Ok(score.is_some())
    }
}
