//! Dead letters: firings given up after their last attempt, kept in
//! `symphony:dead` (JSON, newest first, at most `max_dead_letters`), and
//! their administration (list, retry, purge).

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{DEAD, Delivery, Firing, READY, SEP, index_of};
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

impl Delivery {
    /// Gives up on a firing: it goes to the dead-letter list, which keeps
    /// the newest `max_dead_letters`. Returns how many old letters were
    /// trimmed to make room.
    ///
    /// # Errors
    /// Redis failing, or a letter that cannot be encoded.
    pub async fn dead(&self, firing: &Firing, letter: &DeadLetter) -> Result<u64, RepoError> {
        let json = serde_json::to_string(letter)
            .map_err(|e| RepoError::InvalidInput(format!("cannot encode the dead letter: {e}")))?;
        self.finish(&firing.member, &json).await
    }

    /// Every dead letter, newest first, and the entries that are not one.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn dead_letters(&self) -> Result<DeadList, RepoError> {
        let raw: Vec<String> = self
            .conn
            .query(redis::cmd("LRANGE").arg(DEAD).arg(0).arg(-1))
            .await?;
        let mut list = DeadList::default();
        for (i, entry) in raw.iter().enumerate() {
            match serde_json::from_str(entry) {
                Ok(letter) => list.letters.push(letter),
                Err(e) => list.unreadable.push((i, e.to_string())),
            }
        }
        Ok(list)
    }

    /// Puts dead letters (all, or those of `key`) back in the index, due at
    /// once with a fresh attempt count; returns how many.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn retry_dead(&self, key: Option<&str>) -> Result<u64, RepoError> {
        let raw: Vec<String> = self
            .conn
            .query(redis::cmd("LRANGE").arg(DEAD).arg(0).arg(-1))
            .await?;
        let mut n = 0;
        for (i, entry) in raw.iter().enumerate() {
            let letter = match serde_json::from_str::<DeadLetter>(entry) {
                Ok(letter) => letter,
                Err(e) => {
                    warn!(
                        event = "dead_letter_unreadable",
                        position = i, error = %e,
                        "an entry of the dead-letter list is not a dead letter; left as it is"
                    );
                    continue;
                }
            };
            if key.is_some_and(|k| k != letter.key) {
                continue;
            }
            let member = format!("{}{SEP}retried{}", letter.key, fastrand::u32(..));
            let revived: u64 = self
                .conn
                .invoke_once(
                    self.scripts
                        .revive
                        .key(DEAD)
                        .key(index_of(&member))
                        .key(READY)
                        .arg(entry)
                        .arg(&member),
                )
                .await?;
            n += revived;
        }
        Ok(n)
    }

    /// Deletes every dead letter; returns how many there were.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn purge_dead(&self) -> Result<u64, RepoError> {
        let n: u64 = self.conn.query(redis::cmd("LLEN").arg(DEAD)).await?;
        let _: () = self.conn.query(redis::cmd("DEL").arg(DEAD)).await?;
        Ok(n)
    }
}
