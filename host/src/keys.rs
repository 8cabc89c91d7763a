//! Trigger key format, byte-compatible with `mimeiapify`'s `KeyFactory`.
//!
//! A trigger key is `{tenant}:EXPTRIGGER:{action}:{id}`. When a key is built,
//! `:` in `action` and `id` is replaced by `_` (the seed's escaping); the
//! tenant is never escaped, so a tenant containing `:` is rejected. Parsing
//! follows the seed's `parse_trigger`: split on `:` at most three times and
//! require the second part to be `EXPTRIGGER`, so an id may contain `:` when a
//! client wrote the key by hand.

use std::borrow::Cow;

/// The marker between tenant and action in every trigger key.
pub const TRIGGER_MARKER: &str = "EXPTRIGGER";

/// A key that was rejected before it reached Redis.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The tenant is empty.
    #[error("tenant must not be empty")]
    EmptyTenant,
    /// The tenant contains `:`, which would make the key unparseable.
    #[error(
        "tenant {tenant:?} contains ':', which trigger keys cannot carry (the tenant is never escaped)"
    )]
    TenantWithColon {
        /// The rejected tenant.
        tenant: String,
    },
    /// The action is empty.
    #[error("action must not be empty")]
    EmptyAction,
}

/// The parts of a trigger key, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerKey<'a> {
    /// Tenant: everything before the first `:`.
    pub tenant: &'a str,
    /// Action: between `EXPTRIGGER:` and the next `:`.
    pub action: &'a str,
    /// Identifier: the rest (may contain `:` if the key was written by hand).
    pub id: &'a str,
}

/// Replaces `:` with `_`, as the seed's `KeyFactory` does for named parts.
pub fn escape(part: &str) -> Cow<'_, str> {
    if part.contains(':') {
        Cow::Owned(part.replace(':', "_"))
    } else {
        Cow::Borrowed(part)
    }
}

/// Checks that a tenant can appear in a key.
///
/// # Errors
/// [`KeyError::EmptyTenant`] or [`KeyError::TenantWithColon`].
pub fn validate_tenant(tenant: &str) -> Result<(), KeyError> {
    if tenant.is_empty() {
        return Err(KeyError::EmptyTenant);
    }
    if tenant.contains(':') {
        return Err(KeyError::TenantWithColon {
            tenant: tenant.to_owned(),
        });
    }
    Ok(())
}

/// Builds `{tenant}:EXPTRIGGER:{action}:{id}` with `action` and `id` escaped.
///
/// # Errors
/// An invalid tenant (see [`validate_tenant`]) or an empty action.
pub fn trigger_key(tenant: &str, action: &str, id: &str) -> Result<String, KeyError> {
    validate_tenant(tenant)?;
    if action.is_empty() {
        return Err(KeyError::EmptyAction);
    }
    Ok(format!(
        "{tenant}:{TRIGGER_MARKER}:{}:{}",
        escape(action),
        escape(id)
    ))
}

/// Parses a trigger key the way the seed's `parse_trigger` does.
///
/// Returns `None` for keys that are not triggers, including keys whose tenant
/// is empty or contains `:` (the seed ignores those too, or cannot scope them).
pub fn parse_trigger(key: &str) -> Option<TriggerKey<'_>> {
    let mut parts = key.splitn(4, ':');
    let tenant = parts.next()?;
    let marker = parts.next()?;
    let action = parts.next()?;
    let id = parts.next()?;
    if marker != TRIGGER_MARKER || tenant.is_empty() {
        return None;
    }
    Some(TriggerKey { tenant, action, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_keys_like_the_seed() {
        assert_eq!(
            trigger_key("t1", "send_reminder", "id:7").unwrap(),
            "t1:EXPTRIGGER:send_reminder:id_7"
        );
        assert_eq!(
            trigger_key("t1", "user:profile:update", "user:123").unwrap(),
            "t1:EXPTRIGGER:user_profile_update:user_123"
        );
        assert_eq!(trigger_key("", "a", "b"), Err(KeyError::EmptyTenant));
        assert!(matches!(
            trigger_key("te:nant", "a", "b"),
            Err(KeyError::TenantWithColon { .. })
        ));
        assert_eq!(trigger_key("t", "", "b"), Err(KeyError::EmptyAction));
    }

    #[test]
    fn parses_keys_like_the_seed() {
        // The seed's measured table (SEED_BEHAVIOUR.md §3).
        let k = parse_trigger("t1:EXPTRIGGER:act:id:with:colons").unwrap();
        assert_eq!((k.tenant, k.action, k.id), ("t1", "act", "id:with:colons"));
        assert_eq!(parse_trigger("te:nant:EXPTRIGGER:act:id"), None);
        let k = parse_trigger("t1:EXPTRIGGER::id").unwrap();
        assert_eq!((k.tenant, k.action, k.id), ("t1", "", "id"));
        assert_eq!(parse_trigger("EXPTRIGGER:act:id"), None);
        // Ours is stricter only where the seed could not scope a tenant.
        assert_eq!(parse_trigger(":EXPTRIGGER:act:id"), None);
        assert_eq!(parse_trigger("t1:EXPTRIGGER:act"), None);
        assert_eq!(parse_trigger("t1:user:u1"), None);
        let k = parse_trigger("t1:EXPTRIGGER:act:").unwrap();
        assert_eq!(k.id, "");
    }

    #[test]
    fn round_trips_built_keys() {
        let key = trigger_key("acme", "a:b", "c:d").unwrap();
        let k = parse_trigger(&key).unwrap();
        assert_eq!((k.tenant, k.action, k.id), ("acme", "a_b", "c_d"));
    }
}
