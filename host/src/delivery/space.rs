//! Where the delivery state lives: its [`Space`]s, and on a Redis Cluster
//! the hint buckets that say which of them have work.
//!
//! On a standalone server there is one space, `symphony:` (the keys of
//! earlier versions, unchanged). On a cluster every hash slot `s` has its
//! own, `symphony:{t(s)}:`, where the tag `t(s)` is a short string whose
//! own slot is `s`: a trigger key's due index, ready set, leases, retry
//! metadata, fired marks and dead letters are in the key's slot, so arming,
//! cancelling, claiming and finishing each stay one single-slot script, and
//! a slot moved by resharding takes its delivery state along.
//!
//! Hosts find work through 16 hint buckets ([`Bucket`]), each covering 1024
//! slots: which (slot, tenant) pairs have entries and from when, and which
//! slots have leases and when the first ends (`docs/design.md`, "Redis
//! Cluster: sharded delivery").

use std::sync::LazyLock;

use crate::backend::{SLOTS, slot_of};

/// The keys of one delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Space {
    /// `symphony:`, or `symphony:{tag}:` on a cluster.
    prefix: String,
    /// The hash slot (cluster only).
    slot: Option<u16>,
}

impl Space {
    /// The one space of a standalone server.
    pub fn standalone() -> Space {
        Space {
            prefix: super::INTERNAL_PREFIX.to_owned(),
            slot: None,
        }
    }

    /// The space of cluster slot `slot`.
    pub fn of_slot(slot: u16) -> Space {
        Space {
            prefix: format!("{}{{{}}}:", super::INTERNAL_PREFIX, tag(slot)),
            slot: Some(slot),
        }
    }

    /// The cluster slot of this space (`None` standalone).
    pub fn slot(&self) -> Option<u16> {
        self.slot
    }

    /// The due index of `tenant`.
    pub fn due(&self, tenant: &str) -> String {
        format!("{}due:{tenant}", self.prefix)
    }

    /// Tenants with entries here, scored by (at most) their earliest.
    pub fn ready(&self) -> String {
        format!("{}ready", self.prefix)
    }

    /// Claimed firings, scored by lease end.
    pub fn leases(&self) -> String {
        format!("{}leases", self.prefix)
    }

    /// Retry metadata (member → JSON).
    pub fn meta(&self) -> String {
        format!("{}meta", self.prefix)
    }

    /// Dead letters of earlier versions, one list for every tenant (JSON,
    /// newest first): still read, listed and retried, never written.
    pub fn dead(&self) -> String {
        format!("{}dead", self.prefix)
    }

    /// A tenant's dead letters (JSON, newest first), capped per tenant, so
    /// one tenant's failures never trim another's letters.
    pub fn dead_of(&self, tenant: &str) -> String {
        format!("{}dead:{tenant}", self.prefix)
    }

    /// The tenants that have a dead-letter list in this space.
    pub fn dead_tenants(&self) -> String {
        format!("{}deadtenants", self.prefix)
    }

    /// Prefix of the `expired` fallback's run-once marks.
    pub fn fired(&self) -> String {
        format!("{}fired:", self.prefix)
    }

    /// Where a claim puts the live trigger key it takes (a RENAME, which
    /// emits no `del` event; the last one stays, without a TTL).
    pub fn spent(&self) -> String {
        format!("{}spent", self.prefix)
    }

    /// A key that never exists: `claim_many` reads it to learn whether
    /// the node serves this space's slot whole (not moved, not migrating).
    pub fn probe(&self) -> String {
        format!("{}probe", self.prefix)
    }

    /// The single index of earlier versions (standalone; on a cluster a key
    /// of the slot that never exists).
    pub fn legacy_due(&self) -> String {
        format!("{}due", self.prefix)
    }
}

/// Hint buckets of a cluster.
pub const BUCKETS: u16 = 16;
/// Slots per hint bucket.
pub const SLOTS_PER_BUCKET: u16 = SLOTS / BUCKETS;

/// The tag of each slot: the first of `0`, `1`, `2`, ... (in decimal) whose
/// slot it is. The same on every host and every version: it names keys.
static TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut tags: Vec<Option<String>> = vec![None; usize::from(SLOTS)];
    let mut missing = usize::from(SLOTS);
    let mut n: u64 = 0;
    while missing > 0 {
        let tag = n.to_string();
        if let Some(slot @ None) = tags.get_mut(usize::from(slot_of(&tag))) {
            *slot = Some(tag);
            missing -= 1;
        }
        n += 1;
    }
    tags.into_iter().map(Option::unwrap_or_default).collect()
});

/// The tag of `slot`.
fn tag(slot: u16) -> &'static str {
    TAGS.get(usize::from(slot)).map_or("", String::as_str)
}

/// A hint bucket: slots `[1024·b, 1024·b + 1023]`, its keys in slot `1024·b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket(pub u16);

impl Bucket {
    /// Every bucket.
    pub fn all() -> impl Iterator<Item = Bucket> {
        (0..BUCKETS).map(Bucket)
    }

    /// The bucket of `slot`.
    pub fn of(slot: u16) -> Bucket {
        Bucket(slot / SLOTS_PER_BUCKET)
    }

    /// The slots it covers.
    pub fn slots(self) -> std::ops::Range<u16> {
        self.0 * SLOTS_PER_BUCKET..(self.0 + 1) * SLOTS_PER_BUCKET
    }

    fn prefix(self) -> String {
        format!(
            "{}{{{}}}:",
            super::INTERNAL_PREFIX,
            tag(self.0 * SLOTS_PER_BUCKET)
        )
    }

    /// (slot, tenant) pairs with entries: member `slot:tenant`, scored by
    /// (at most) the tenant's earliest entry in that slot.
    pub fn hints(self) -> String {
        format!("{}hints", self.prefix())
    }

    /// Tenants with pairs in [`hints`](Self::hints), scored by their
    /// earliest pair here; each tenant's pairs are also in
    /// [`tenant_hints`](Self::tenant_hints). So a sweep finds the due
    /// tenants first, and reads only the pairs of those it does not skip.
    pub fn tenants(self) -> String {
        format!("{}hinttenants", self.prefix())
    }

    /// The pairs of `tenant` in [`hints`](Self::hints) (the scripts name it
    /// from the hints key: `{hints}:{tenant}`).
    pub fn tenant_hints(self, tenant: &str) -> String {
        format!("{}:{tenant}", self.hints())
    }

    /// Slots with leases: member `slot`, scored by (at most) the first end.
    pub fn lease_hints(self) -> String {
        format!("{}leasehints", self.prefix())
    }

    /// Slots with dead letters (a set of slot numbers).
    pub fn dead_slots(self) -> String {
        format!("{}deadslots", self.prefix())
    }

    /// Each hint's version (from the counter under the field `seq`): a
    /// writer that adds work sets a new one, so a claim's update, made from
    /// what it read before, applies only if nothing was added since.
    pub fn versions(self) -> String {
        format!("{}hintver", self.prefix())
    }
}

/// The hint member of `tenant` in `slot`.
pub fn tenant_hint(slot: u16, tenant: &str) -> String {
    format!("{slot}:{tenant}")
}

/// The slot and tenant of a tenant hint member.
pub fn parse_tenant_hint(member: &str) -> Option<(u16, &str)> {
    let (slot, tenant) = member.split_once(':')?;
    Some((slot.parse().ok()?, tenant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_a_tag_of_its_own_slot() {
        for slot in 0..SLOTS {
            let space = Space::of_slot(slot);
            for key in [
                space.due("acme"),
                space.ready(),
                space.leases(),
                space.meta(),
                space.dead(),
                space.dead_of("acme"),
                space.dead_tenants(),
                format!("{}k", space.fired()),
            ] {
                assert_eq!(slot_of(&key), slot, "{key}");
            }
        }
        for bucket in Bucket::all() {
            let first = bucket.slots().start;
            assert_eq!(slot_of(&bucket.hints()), first);
            assert_eq!(slot_of(&bucket.versions()), first);
            assert_eq!(slot_of(&bucket.lease_hints()), first);
            assert_eq!(slot_of(&bucket.dead_slots()), first);
            assert!(bucket.slots().all(|s| Bucket::of(s) == bucket));
        }
    }

    #[test]
    fn the_standalone_space_keeps_the_keys_of_earlier_versions() {
        let s = Space::standalone();
        assert_eq!(s.due("acme"), "symphony:due:acme");
        assert_eq!(s.ready(), "symphony:ready");
        assert_eq!(s.leases(), "symphony:leases");
        assert_eq!(s.meta(), "symphony:meta");
        assert_eq!(s.dead(), "symphony:dead");
        assert_eq!(s.fired(), "symphony:fired:");
        assert_eq!(s.legacy_due(), "symphony:due");
        assert_eq!(s.spent(), "symphony:spent");
    }

    #[test]
    fn tenant_hints_round_trip() {
        assert_eq!(
            parse_tenant_hint(&tenant_hint(77, "acme")),
            Some((77, "acme"))
        );
        assert_eq!(parse_tenant_hint("77"), None);
    }
}
