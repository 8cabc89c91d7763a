//! Dead letters: firings given up after their last attempt, kept per
//! tenant in `symphony:dead:{tenant}` (JSON, newest first, at most
//! `max_dead_letters` each, so one tenant's failures never trim another's
//! letters; the set `symphony:deadtenants` names the tenants with a list;
//! on a Redis Cluster the same per slot, found through the hint buckets),
//! and their administration (list, retry, purge). The one shared list of
//! earlier versions, `symphony:dead`, is still read, retried and purged.

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Delivery, Firing, SEP, tenant_of};
use crate::error::RepoError;

/// One dead letter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeadLetter {
    /// Tenant of the trigger.
    pub tenant: String,
    /// Action.
    pub action: String,
    /// Identifier.
    pub id: String,
    /// The trigger key.
    pub key: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: String,
    /// When the first attempt was due (server ms).
    pub first_due_ms: i64,
    /// When it was given up (server ms, approximately).
    pub failed_at_ms: i64,
}

/// The dead-letter list as read: the letters, newest first, and the entries
/// that do not decode as one (written by another client or format).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DeadList {
    /// The dead letters, newest first.
    pub letters: Vec<DeadLetter>,
    /// Entries that are not dead letters: their position in the list (0 is
    /// the newest) and why.
    pub unreadable: Vec<(usize, String)>,
}

/// Which dead letters a command acts on: those matching every field set
/// (none set: all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadFilter {
    /// Only the letters of this trigger key.
    pub key: Option<String>,
    /// Only this tenant's.
    pub tenant: Option<String>,
    /// Only this action's.
    pub action: Option<String>,
}

impl DeadFilter {
    /// Whether `letter` matches.
    pub fn accepts(&self, letter: &DeadLetter) -> bool {
        self.key.as_ref().is_none_or(|k| *k == letter.key)
            && self.tenant.as_ref().is_none_or(|t| *t == letter.tenant)
            && self.action.as_ref().is_none_or(|a| *a == letter.action)
    }

    /// Whether it matches every letter.
    pub fn is_all(&self) -> bool {
        self.key.is_none() && self.tenant.is_none() && self.action.is_none()
    }
}

impl Delivery {
    /// Gives up on a firing: it goes to its tenant's dead-letter list,
    /// which keeps the tenant's newest `max_dead_letters`. Returns how many old letters were
    /// trimmed to make room, or `None` when the firing's lease was no longer
    /// held (the reaper put it back: it runs again, and is not a dead letter).
    ///
    /// # Errors
    /// Redis failing, or a letter that cannot be encoded.
    pub async fn dead(
        &self,
        firing: &Firing,
        letter: &DeadLetter,
    ) -> Result<Option<u64>, RepoError> {
        let json = serde_json::to_string(letter)
            .map_err(|e| RepoError::InvalidInput(format!("cannot encode the dead letter: {e}")))?;
        self.finish(&firing.lease, &json).await
    }

    /// Every dead letter, newest first, and the entries that are not one.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn dead_letters(&self) -> Result<DeadList, RepoError> {
        let raw = self.dead_entries().await?;
        let mut list = DeadList::default();
        for (i, (_, entry)) in raw.iter().enumerate() {
            match serde_json::from_str(entry) {
                Ok(letter) => list.letters.push(letter),
                Err(e) => list.unreadable.push((i, e.to_string())),
            }
        }
        Ok(list)
    }

    /// Puts the dead letters `filter` matches back in the index, due at
    /// once with a fresh attempt count; returns how many.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn retry_dead(&self, filter: &DeadFilter) -> Result<u64, RepoError> {
        let mut n = 0;
        for (list, entry, letter) in self.matching_dead(filter).await? {
            let member = format!("{}{SEP}retried{}", letter.key, fastrand::u32(..));
            let space = self.space_of(&letter.key);
            let revived: u64 = self
                .conn
                .invoke_once(
                    self.scripts
                        .revive
                        .key(&list)
                        .key(space.due(tenant_of(&member)))
                        .key(space.ready())
                        .arg(&entry)
                        .arg(&member),
                )
                .await?;
            if revived > 0 {
                self.hint_work(&space, [(tenant_of(&member), 0)]).await;
            }
            n += revived;
        }
        Ok(n)
    }

    /// Deletes the dead letters `filter` matches (all of them, entries
    /// that are not dead letters included, when it matches all); returns
    /// how many.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn purge_dead(&self, filter: &DeadFilter) -> Result<u64, RepoError> {
        if filter.is_all() {
            let mut n = 0;
            for list in self.dead_lists().await? {
                let mut pipe = redis::pipe();
                pipe.atomic().llen(&list).del(&list);
                let (len, _): (u64, u64) = self.conn.pipe(&pipe).await?;
                n += len;
            }
            return Ok(n);
        }
        let matching = self.matching_dead(filter).await?;
        let mut n = 0;
        for chunk in matching.chunks(super::KEYS_PER_CALL) {
            let mut pipe = redis::pipe();
            for (list, entry, _) in chunk {
                pipe.cmd("LREM").arg(list).arg(1).arg(entry);
            }
            let removed: Vec<u64> = self.conn.pipe(&pipe).await?;
            n += removed.iter().sum::<u64>();
        }
        Ok(n)
    }

    /// The raw entries of the dead-letter lists, each with its list, newest
    /// first (on a cluster, list by list).
    async fn dead_entries(&self) -> Result<Vec<(String, String)>, RepoError> {
        let mut entries = Vec::new();
        for list in self.dead_lists().await? {
            let raw: Vec<String> = self
                .conn
                .query(redis::cmd("LRANGE").arg(&list).arg(0).arg(-1))
                .await?;
            entries.extend(raw.into_iter().map(|e| (list.clone(), e)));
        }
        Ok(entries)
    }

    /// The entries `filter` matches, each with its letter. Entries that are
    /// not dead letters are logged and left as they are.
    async fn matching_dead(
        &self,
        filter: &DeadFilter,
    ) -> Result<Vec<(String, String, DeadLetter)>, RepoError> {
        let mut matching = Vec::new();
        for (i, (list, entry)) in self.dead_entries().await?.into_iter().enumerate() {
            match serde_json::from_str::<DeadLetter>(&entry) {
                Ok(letter) if filter.accepts(&letter) => matching.push((list, entry, letter)),
                Ok(_) => {}
                Err(e) => warn!(
                    event = "dead_letter_unreadable",
                    position = i, error = %e,
                    "an entry of the dead-letter list is not a dead letter; left as it is"
                ),
            }
        }
        Ok(matching)
    }
}
