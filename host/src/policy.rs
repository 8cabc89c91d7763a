//! What a plugin may do: the repositories it is granted, the tenants it
//! serves, and its limits. Deny by default: a plugin gets no repository it is
//! not granted and serves no tenant it does not list.

use std::collections::BTreeMap;
use std::fmt;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::time::Duration;

use serde::Deserialize;

use crate::keys::validate_tenant;

/// A repository a plugin can be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Repo {
    /// WIT `user`.
    User,
    /// WIT `handler-state`.
    HandlerState,
    /// WIT `table`.
    Table,
    /// WIT `shared-state`.
    SharedState,
    /// WIT `batch`.
    Batch,
    /// WIT `generic`.
    Generic,
    /// WIT `trigger` (writes only).
    Trigger,
    /// WIT `pubsub` (writes only).
    Pubsub,
}

impl Repo {
    const ALL: [Repo; 8] = [
        Repo::User,
        Repo::HandlerState,
        Repo::Table,
        Repo::SharedState,
        Repo::Batch,
        Repo::Generic,
        Repo::Trigger,
        Repo::Pubsub,
    ];

    /// The name used in manifests and in the WIT.
    pub fn name(self) -> &'static str {
        match self {
            Repo::User => "user",
            Repo::HandlerState => "handler-state",
            Repo::Table => "table",
            Repo::SharedState => "shared-state",
            Repo::Batch => "batch",
            Repo::Generic => "generic",
            Repo::Trigger => "trigger",
            Repo::Pubsub => "pubsub",
        }
    }

    fn has_reads(self) -> bool {
        !matches!(self, Repo::Trigger | Repo::Pubsub)
    }

    /// This repository's bit in a [`Grants`] mask. The enum has no explicit
    /// discriminants, so they count from 0, and the assertion below keeps
    /// them under 32: a new repository needs no other change here.
    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

const _: () = assert!(
    (Repo::ALL.len() as u32) < u32::BITS,
    "Grants keeps one bit per repository in a u32"
);

/// Reading or changing data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Operations that only read.
    Read,
    /// Operations that write (a write grant includes reads).
    Write,
}

/// One grant from a manifest: `"user"` (read and write) or `"user:read"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Capability {
    /// The repository.
    pub repo: Repo,
    /// The access granted.
    pub access: Access,
}

impl TryFrom<String> for Capability {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let (name, access) = match s.strip_suffix(":read") {
            Some(name) => (name, Access::Read),
            None => (s.as_str(), Access::Write),
        };
        let repo = Repo::ALL
            .into_iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Repo::ALL.iter().map(|r| r.name()).collect();
                format!(
                    "unknown capability {s:?}: use one of {} (read and write) or `<name>:read`",
                    names.join(", ")
                )
            })?;
        if access == Access::Read && !repo.has_reads() {
            return Err(format!(
                "capability {s:?}: {} has no read-only operations; grant {:?}",
                repo.name(),
                repo.name()
            ));
        }
        Ok(Capability { repo, access })
    }
}

/// The grants of one plugin: a bit per repository for reads, and one for
/// writes (a write grant includes reads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grants {
    read: u32,
    write: u32,
}

impl Grants {
    /// Grants from manifest capabilities (the widest access per repository wins).
    pub fn new(capabilities: impl IntoIterator<Item = Capability>) -> Self {
        let mut g = Grants::default();
        for c in capabilities {
            match c.access {
                Access::Read => g.read |= c.repo.bit(),
                Access::Write => g.write |= c.repo.bit(),
            }
        }
        g
    }

    /// Whether `access` to `repo` is granted.
    pub fn allows(&self, repo: Repo, access: Access) -> bool {
        let granted = match access {
            Access::Read => self.read | self.write,
            Access::Write => self.write,
        };
        granted & repo.bit() != 0
    }

    /// The capabilities granted, as the manifest writes them (`user`,
    /// `table:read`, ...), in the order of the WIT's imports.
    pub fn capabilities(&self) -> Vec<String> {
        Repo::ALL
            .iter()
            .filter_map(|&repo| {
                if self.allows(repo, Access::Write) {
                    Some(repo.name().to_owned())
                } else if self.allows(repo, Access::Read) {
                    Some(format!("{}:read", repo.name()))
                } else {
                    None
                }
            })
            .collect()
    }

    /// The grant a denied call lacks, for the error message.
    pub fn missing(repo: Repo, access: Access) -> String {
        match access {
            Access::Read => format!("`{}:read` (or `{}`)", repo.name(), repo.name()),
            Access::Write => format!("`{}`", repo.name()),
        }
    }
}

/// A duration written like `"500ms"`, `"5s"` or `"2m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HumanDuration(pub Duration);

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                format!("invalid duration {s:?} ({e}); write e.g. \"500ms\", \"5s\" or \"2m\"")
            })
    }
}

/// `[plugin.retry]`: what happens when a handler fails.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts in all, the first included (1 means no retry).
    #[serde(default = "default_attempts")]
    pub max_attempts: NonZeroU32,
    /// Delay before the second attempt; it doubles each time (with jitter).
    #[serde(default = "default_backoff")]
    pub backoff: HumanDuration,
    /// The longest delay.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
    /// `max_attempts` per action prefix (the longest matching prefix wins).
    #[serde(default)]
    pub actions: BTreeMap<String, NonZeroU32>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
            actions: BTreeMap::new(),
        }
    }
}

impl RetryConfig {
    /// Attempts in all for `action`.
    pub fn attempts_for(&self, action: &str) -> u32 {
        self.actions
            .iter()
            .filter(|(prefix, _)| action.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(self.max_attempts, |(_, n)| *n)
            .get()
    }

    /// What follows a failed attempt of `action`, the `attempts`th made:
    /// another attempt after a delay, or giving up.
    pub fn after_failure(&self, action: &str, attempts: u32) -> AfterFailure {
        let max_attempts = self.attempts_for(action);
        if attempts < max_attempts {
            AfterFailure::Retry {
                delay: self.delay(attempts + 1),
                max_attempts,
            }
        } else {
            AfterFailure::GiveUp
        }
    }

    /// The delay before attempt `next` (2 for the first retry), with ±20% jitter.
    pub fn delay(&self, next: u32) -> Duration {
        let exp = next.saturating_sub(2).min(30);
        let base = self
            .backoff
            .0
            .saturating_mul(1 << exp)
            .min(self.max_backoff.0);
        base.mul_f64(0.8 + 0.4 * fastrand::f64())
    }
}

fn default_attempts() -> NonZeroU32 {
    // A zero here fails the build (the `unwrap` runs at compile time).
    const DEFAULT_ATTEMPTS: NonZeroU32 = NonZeroU32::new(3).unwrap();
    DEFAULT_ATTEMPTS
}
fn default_backoff() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_max_backoff() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

/// What follows a failed attempt ([`RetryConfig::after_failure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again after `delay`.
    Retry {
        /// The delay (exponential backoff with jitter).
        delay: Duration,
        /// Attempts in all for this action.
        max_attempts: u32,
    },
    /// That was the last attempt: dead-letter it.
    GiveUp,
}

/// A tenant a plugin serves: one name, or `"*"` for all.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum TenantSelector {
    /// `"*"`.
    Any,
    /// One tenant.
    Only(String),
}

impl TryFrom<String> for TenantSelector {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "*" {
            return Ok(TenantSelector::Any);
        }
        validate_tenant(&s).map_err(|e| format!("invalid tenant {s:?}: {e}"))?;
        Ok(TenantSelector::Only(s))
    }
}

impl fmt::Display for TenantSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenantSelector::Any => f.write_str("*"),
            TenantSelector::Only(t) => f.write_str(t),
        }
    }
}

/// Whether `tenant` is served by a plugin listing `selectors`.
pub fn serves(selectors: &[TenantSelector], tenant: &str) -> bool {
    selectors.iter().any(|s| match s {
        TenantSelector::Any => true,
        TenantSelector::Only(t) => t == tenant,
    })
}

/// The limits one invocation of a plugin runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time per invocation.
    pub timeout: Duration,
    /// Largest linear memory, in bytes.
    pub max_memory_bytes: usize,
    /// Fuel per invocation (instructions, roughly), if metered.
    pub fuel: Option<NonZeroU64>,
    /// Instances of this plugin running at once.
    pub max_instances: NonZeroUsize,
    /// Largest value (argument or result) crossing the boundary, in bytes.
    pub max_value_bytes: usize,
    /// Host calls per invocation.
    pub max_host_calls: NonZeroU64,
}

/// Everything the host enforces for one plugin.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Repositories granted.
    pub grants: Grants,
    /// Tenants served.
    pub tenants: Vec<TenantSelector>,
    /// Per-invocation limits.
    pub limits: Limits,
    /// Retries of failed handlers.
    pub retry: RetryConfig,
    /// Jobs one warm instance may serve (same tenant only); `None`: a fresh
    /// instance per job.
    pub reuse: Option<std::num::NonZeroU32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(s: &str) -> Result<Capability, String> {
        Capability::try_from(s.to_owned())
    }

    #[test]
    fn capabilities_parse_and_grant() {
        let g = Grants::new([cap("user:read").unwrap(), cap("trigger").unwrap()]);
        assert_eq!(g.capabilities(), ["user:read", "trigger"]);
        assert!(g.allows(Repo::User, Access::Read));
        assert!(!g.allows(Repo::User, Access::Write));
        assert!(g.allows(Repo::Trigger, Access::Write));
        assert!(!g.allows(Repo::Table, Access::Read));
        let g = Grants::new([cap("table:read").unwrap(), cap("table").unwrap()]);
        assert!(g.allows(Repo::Table, Access::Write));
        assert!(cap("users").unwrap_err().contains("unknown capability"));
        assert!(cap("pubsub:read").unwrap_err().contains("no read-only"));
    }

    #[test]
    fn every_repository_has_its_own_grant() {
        for r in Repo::ALL {
            let g = Grants::new([cap(r.name()).unwrap()]);
            for other in Repo::ALL {
                assert_eq!(
                    g.allows(other, Access::Write),
                    other == r,
                    "{r:?} {other:?}"
                );
            }
        }
    }

    /// `Repo::ALL` is the list of the WIT's imports less the three that need
    /// no grant: a repository added to the WIT fails here until it is added
    /// to `Repo` and `ALL`.
    #[test]
    fn the_repositories_are_the_wits_imports() {
        let wit = include_str!("../../wit/symphony.wit");
        let imports: Vec<&str> = wit
            .lines()
            .filter_map(|l| l.trim().strip_prefix("import ")?.strip_suffix(';'))
            .filter(|name| !["types", "log", "context"].contains(name))
            .collect();
        let names: Vec<&str> = Repo::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names, imports);
    }

    #[test]
    fn tenants_select() {
        let any = vec![TenantSelector::Any];
        assert!(serves(&any, "x"));
        let only = vec![TenantSelector::try_from("acme".to_owned()).unwrap()];
        assert!(serves(&only, "acme") && !serves(&only, "acme2"));
        assert!(TenantSelector::try_from("a:b".to_owned()).is_err());
        assert!(!serves(&[], "acme"));
    }
}
