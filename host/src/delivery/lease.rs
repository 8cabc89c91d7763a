//! Leases and claim tokens.
//!
//! Every claim gives the firing it takes a lease of its own, named
//! `{member}\0@{token}`: the index member and a claim token unique to that
//! claim (this process's random owner id, a counter of its claim calls,
//! and the firing's place in the call). So when a key is armed again while
//! its first firing runs, and the new firing is claimed before the first
//! one finishes, the two hold two leases; the first one's finish, retry or
//! release names its own lease and cannot remove the second's.
//!
//! A lease written by an earlier version has no token: it is its member,
//! and is reaped, renewed and finished as before (`member_of` is the
//! identity on it), so a rolling upgrade loses nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

use super::{Delivery, Space};
use crate::error::RepoError;

/// Between a lease's member and its claim token.
pub const TOKEN_SEP: &str = "\0@";

/// This process's owner id, random: claim tokens of two hosts never meet.
static OWNER: LazyLock<String> = LazyLock::new(|| format!("{:016x}", fastrand::u64(..)));

static CALLS: AtomicU64 = AtomicU64::new(0);

/// A fresh token for one claim call; the script appends each firing's
/// place in the call.
pub fn next_token() -> String {
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    format!("{}.{n}", *OWNER)
}

/// The index member a lease names (the lease itself when it has no token).
pub fn member_of(lease: &str) -> &str {
    lease.find(TOKEN_SEP).map_or(lease, |at| &lease[..at])
}

/// How long the leases of a claim call whose reply was lost are looked
/// for: a script that timed out may still run after the error came.
const DOUBT_FOR: Duration = Duration::from_secs(5);
/// A doubt is given up after this long (the lease's end covers it then).
const DOUBT_MAX: Duration = Duration::from_secs(120);

/// Claim calls whose reply never came (the connection dropped, a Cluster
/// primary died): Redis may have run them, recording leases that no host
/// holds. Each is remembered by its claim token and the spaces it could
/// have written, and the sweeper looks there for leases carrying that
/// token ([`Delivery::settle_doubts`]) and gives them back, so such a
/// firing runs within seconds instead of at its lease's end (60 s by
/// default).
#[derive(Debug, Default)]
pub struct Doubts(Mutex<Vec<Doubt>>);

#[derive(Debug, Clone)]
struct Doubt {
    token: String,
    spaces: Vec<Space>,
    since: Instant,
}

impl Doubts {
    /// A claim call with `token`, over `spaces`, failed without a reply.
    pub(super) fn add(&self, token: String, spaces: Vec<Space>) {
        let mut doubts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        doubts.push(Doubt {
            token,
            spaces,
            since: Instant::now(),
        });
    }

    fn all(&self) -> Vec<Doubt> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn drop_settled(&self, settled: &[String]) {
        let mut doubts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        doubts.retain(|d| !settled.contains(&d.token) && d.since.elapsed() < DOUBT_MAX);
    }
}

impl Delivery {
    /// Gives back the leases of claim calls whose reply was lost (see
    /// `Doubts`); returns how many. A doubt is settled once its spaces
    /// were searched after `DOUBT_FOR`; until then it is searched again
    /// at every call.
    ///
    /// # Errors
    /// Redis failing (the doubts stay, for the next call).
    pub async fn settle_doubts(&self) -> Result<usize, RepoError> {
        let doubts = self.doubts.all();
        if doubts.is_empty() {
            return Ok(0);
        }
        let mut released = 0;
        let mut settled = Vec::new();
        for doubt in &doubts {
            for space in &doubt.spaces {
                for lease in self.leases_of(space, &doubt.token).await? {
                    self.release(&lease).await?;
                    released += 1;
                }
            }
            if doubt.since.elapsed() >= DOUBT_FOR {
                settled.push(doubt.token.clone());
            }
        }
        self.doubts.drop_settled(&settled);
        if released > 0 {
            warn!(
                event = "orphans_released", pool = %self.pool, released,
                "claims whose reply was lost had leased firings no host holds; gave them back"
            );
        }
        Ok(released)
    }

    /// The leases in `space` taken by the claim call `token`.
    async fn leases_of(&self, space: &Space, token: &str) -> Result<Vec<String>, RepoError> {
        let pattern = format!("*{TOKEN_SEP}{token}.*");
        let mut found = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<String>) = self
                .conn
                .query(
                    redis::cmd("ZSCAN")
                        .arg(space.leases())
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            // ZSCAN pairs each member with its score.
            found.extend(page.into_iter().step_by(2));
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_names_its_member_and_tokens_never_repeat() {
        let a = next_token();
        let b = next_token();
        assert_ne!(a, b);
        let lease = format!("t:EXPTRIGGER:a:1\0r2{TOKEN_SEP}{a}.0");
        assert_eq!(member_of(&lease), "t:EXPTRIGGER:a:1\0r2");
        assert_eq!(member_of("t:EXPTRIGGER:a:1"), "t:EXPTRIGGER:a:1");
        assert_eq!(member_of("t:EXPTRIGGER:a:1\0d5"), "t:EXPTRIGGER:a:1\0d5");
    }
}
