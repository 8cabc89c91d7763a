//! Trigger key format, byte-compatible with `mimeiapify`'s `KeyFactory`.
//!
//! A trigger key is `{tenant}:EXPTRIGGER:{action}:{id}`. When a key is built,
//! `:` in `action` and `id` is replaced by `_` (mimeiapify's escaping); the
//! tenant is never escaped, so a tenant containing `:` is rejected. Parsing
//! follows mimeiapify's `parse_trigger`: split on `:` at most three times and
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
    /// A key part is empty.
    #[error("{part} must not be empty")]
    Empty {
        /// Which part (`user id`, `table`, ...).
        part: &'static str,
    },
    /// A part contains a control character (U+0000 to U+001F, or U+007F).
    /// NUL separates a trigger key from its tag in the delivery index, and
    /// the others would corrupt log lines, so no entry point accepts them.
    #[error(
        "{part} {value:?} contains the control character {ch:?}; trigger keys and tenants may not carry control characters"
    )]
    ControlCharacter {
        /// Which part.
        part: &'static str,
        /// The rejected value.
        value: String,
        /// The first control character found.
        ch: char,
    },
    /// A part that the key format does not escape contains `:`, which would
    /// make the key ambiguous.
    #[error(
        "{part} {value:?} contains ':', which would make the key ambiguous (the Python library \
         does not escape this part); use another separator"
    )]
    Ambiguous {
        /// Which part.
        part: &'static str,
        /// The rejected value.
        value: String,
    },
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

/// Replaces `:` with `_`, as mimeiapify's `KeyFactory` does for named parts.
pub fn escape(part: &str) -> Cow<'_, str> {
    if part.contains(':') {
        Cow::Owned(part.replace(':', "_"))
    } else {
        Cow::Borrowed(part)
    }
}

/// Refuses a part holding a control character (see [`KeyError::ControlCharacter`]).
///
/// # Errors
/// [`KeyError::ControlCharacter`] naming the part and the first such character.
pub fn refuse_control(part: &'static str, value: &str) -> Result<(), KeyError> {
    match value.chars().find(|c| c.is_ascii_control()) {
        Some(ch) => Err(KeyError::ControlCharacter {
            part,
            value: value.to_owned(),
            ch,
        }),
        None => Ok(()),
    }
}

/// Checks that a tenant can appear in a key.
///
/// # Errors
/// [`KeyError::EmptyTenant`], [`KeyError::TenantWithColon`] or
/// [`KeyError::ControlCharacter`].
pub fn validate_tenant(tenant: &str) -> Result<(), KeyError> {
    if tenant.is_empty() {
        return Err(KeyError::EmptyTenant);
    }
    refuse_control("tenant", tenant)?;
    if tenant.contains(':') {
        return Err(KeyError::TenantWithColon {
            tenant: tenant.to_owned(),
        });
    }
    Ok(())
}

/// How the key format treats one part (mirrors mimeiapify's `KeyFactory`).
#[derive(Debug, Clone, Copy)]
enum Part {
    /// mimeiapify escapes `:` to `_` here.
    Escaped,
    /// mimeiapify keeps it as is and more parts follow: `:` is rejected.
    Middle,
    /// mimeiapify keeps it as is and it ends the key: anything goes.
    Tail,
}

fn part<'a>(name: &'static str, value: &'a str, how: Part) -> Result<Cow<'a, str>, KeyError> {
    if value.is_empty() {
        return Err(KeyError::Empty { part: name });
    }
    match how {
        Part::Escaped => Ok(escape(value)),
        Part::Middle if value.contains(':') => Err(KeyError::Ambiguous {
            part: name,
            value: value.to_owned(),
        }),
        Part::Middle | Part::Tail => Ok(Cow::Borrowed(value)),
    }
}

/// Escapes Redis glob characters (`* ? [ ] \`) so a SCAN pattern matches them literally.
pub fn glob_escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['*', '?', '[', ']', '\\']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// `{t}:user:{uid}` (pool `user`).
///
/// # Errors
/// An invalid tenant or an empty user id.
pub fn user_key(tenant: &str, user_id: &str) -> Result<String, KeyError> {
    validate_tenant(tenant)?;
    let uid = part("user id", user_id, Part::Tail)?;
    Ok(format!("{tenant}:user:{uid}"))
}

/// SCAN pattern of every user record of a tenant.
pub fn user_pattern(tenant: &str) -> String {
    format!("{}:user:*", glob_escape(tenant))
}

/// `{t}:state:{name}:{uid}` (pool `handlers`).
///
/// # Errors
/// An invalid tenant, an empty part, or a name containing `:`.
pub fn handler_key(tenant: &str, name: &str, user_id: &str) -> Result<String, KeyError> {
    validate_tenant(tenant)?;
    let name = part("handler name", name, Part::Middle)?;
    let uid = part("user id", user_id, Part::Tail)?;
    Ok(format!("{tenant}:state:{name}:{uid}"))
}

/// `{t}:df:{table}:pkid:{pk}` with table and pk escaped (pool `handlers`).
///
/// # Errors
/// An invalid tenant or an empty part.
pub fn table_key(tenant: &str, table: &str, pk: &str) -> Result<String, KeyError> {
    validate_tenant(tenant)?;
    let table = part("table", table, Part::Escaped)?;
    let pk = part("pk", pk, Part::Escaped)?;
    Ok(format!("{tenant}:df:{table}:pkid:{pk}"))
}

/// SCAN pattern of every row of one table.
///
/// # Errors
/// An empty table.
pub fn table_rows_pattern(tenant: &str, table: &str) -> Result<String, KeyError> {
    let table = part("table", table, Part::Escaped)?;
    Ok(format!(
        "{}:df:{}:pkid:*",
        glob_escape(tenant),
        glob_escape(&table)
    ))
}

/// SCAN pattern of the row `pk` in every table of a tenant.
///
/// # Errors
/// An empty pk.
pub fn table_pk_pattern(tenant: &str, pk: &str) -> Result<String, KeyError> {
    let pk = part("pk", pk, Part::Escaped)?;
    Ok(format!(
        "{}:df:*:pkid:{}",
        glob_escape(tenant),
        glob_escape(&pk)
    ))
}

/// `{t}:SS:{state}:{uid}` with state and uid escaped (pool `symphony_shared_state`).
///
/// # Errors
/// An invalid tenant or an empty part.
pub fn shared_state_key(tenant: &str, state: &str, user_id: &str) -> Result<String, KeyError> {
    validate_tenant(tenant)?;
    let state = part("state", state, Part::Escaped)?;
    let uid = part("user id", user_id, Part::Escaped)?;
    Ok(format!("{tenant}:SS:{state}:{uid}"))
}

/// SCAN pattern of every shared state of a user, and the key prefix and
/// suffix around the state name.
///
/// # Errors
/// An empty user id.
pub fn shared_states_pattern(
    tenant: &str,
    user_id: &str,
) -> Result<(String, String, String), KeyError> {
    let uid = part("user id", user_id, Part::Escaped)?;
    Ok((
        format!("{}:SS:*:{}", glob_escape(tenant), glob_escape(&uid)),
        format!("{tenant}:SS:"),
        format!(":{uid}"),
    ))
}

/// `{t}:batch:{service}:{entity}:{action}` (pool `handlers`).
///
/// # Errors
/// An invalid tenant, an empty part, or `:` in service or entity.
pub fn batch_key(
    tenant: &str,
    service: &str,
    entity: &str,
    action: &str,
) -> Result<String, KeyError> {
    validate_tenant(tenant)?;
    let service = part("service", service, Part::Middle)?;
    let entity = part("entity", entity, Part::Middle)?;
    let action = part("action", action, Part::Tail)?;
    Ok(format!("{tenant}:batch:{service}:{entity}:{action}"))
}

/// `pending_batches:{service}`: the set of tenants with pending batches (no tenant prefix).
///
/// # Errors
/// An empty service.
pub fn pending_key(service: &str) -> Result<String, KeyError> {
    let service = part("service", service, Part::Tail)?;
    Ok(format!("pending_batches:{service}"))
}

/// `{t}:{key}` (pool `default`).
///
/// # Errors
/// An invalid tenant or an empty key.
pub fn generic_key(tenant: &str, key: &str) -> Result<String, KeyError> {
    validate_tenant(tenant)?;
    let key = part("key", key, Part::Tail)?;
    Ok(format!("{tenant}:{key}"))
}

/// SCAN pattern of every trigger of an id, whatever its action.
///
/// # Errors
/// An empty id.
pub fn trigger_id_pattern(tenant: &str, id: &str) -> Result<String, KeyError> {
    refuse_control("id", id)?;
    let id = part("id", id, Part::Escaped)?;
    Ok(format!(
        "{}:{TRIGGER_MARKER}:*:{}",
        glob_escape(tenant),
        glob_escape(&id)
    ))
}

/// `{t}:{channel}`: a pub/sub channel under the tenant.
///
/// # Errors
/// An invalid tenant or an empty channel.
pub fn channel_name(tenant: &str, channel: &str) -> Result<String, KeyError> {
    validate_tenant(tenant)?;
    let channel = part("channel", channel, Part::Tail)?;
    Ok(format!("{tenant}:{channel}"))
}

/// Builds `{tenant}:EXPTRIGGER:{action}:{id}` with `action` and `id` escaped.
///
/// # Errors
/// An invalid tenant (see [`validate_tenant`]), an empty action, or a control
/// character in the action or id.
pub fn trigger_key(tenant: &str, action: &str, id: &str) -> Result<String, KeyError> {
    validate_tenant(tenant)?;
    if action.is_empty() {
        return Err(KeyError::EmptyAction);
    }
    refuse_control("action", action)?;
    refuse_control("id", id)?;
    Ok(format!(
        "{tenant}:{TRIGGER_MARKER}:{}:{}",
        escape(action),
        escape(id)
    ))
}

/// Parses a trigger key the way mimeiapify's `parse_trigger` does.
///
/// Returns `None` for keys that are not triggers, including keys whose tenant
/// is empty or contains `:` (mimeiapify ignores those too, or cannot scope them),
/// and keys holding a NUL byte: NUL separates a key from its tag in the
/// delivery index, so such a key (which only another client can write) is
/// reported as not a trigger rather than risk running it twice. Other
/// control characters are accepted from other clients and escaped in logs.
pub fn parse_trigger(key: &str) -> Option<TriggerKey<'_>> {
    if key.contains('\0') {
        return None;
    }
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
    fn builds_keys_like_mimeiapify() {
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
    fn parses_keys_like_mimeiapify() {
        // mimeiapify's measured table (docs/compat.md).
        let k = parse_trigger("t1:EXPTRIGGER:act:id:with:colons").unwrap();
        assert_eq!((k.tenant, k.action, k.id), ("t1", "act", "id:with:colons"));
        assert_eq!(parse_trigger("te:nant:EXPTRIGGER:act:id"), None);
        let k = parse_trigger("t1:EXPTRIGGER::id").unwrap();
        assert_eq!((k.tenant, k.action, k.id), ("t1", "", "id"));
        assert_eq!(parse_trigger("EXPTRIGGER:act:id"), None);
        // Ours is stricter only where mimeiapify could not scope a tenant.
        assert_eq!(parse_trigger(":EXPTRIGGER:act:id"), None);
        assert_eq!(parse_trigger("t1:EXPTRIGGER:act"), None);
        assert_eq!(parse_trigger("t1:user:u1"), None);
        let k = parse_trigger("t1:EXPTRIGGER:act:").unwrap();
        assert_eq!(k.id, "");
    }

    #[test]
    fn builds_repository_keys_like_mimeiapify() {
        // mimeiapify's keys, as docs/compat.md lists them.
        assert_eq!(user_key("t1", "u:1").unwrap(), "t1:user:u:1");
        assert_eq!(
            handler_key("t1", "chat", "flow:u:1").unwrap(),
            "t1:state:chat:flow:u:1"
        );
        assert_eq!(
            table_key("t1", "orders:2024", "pk:9").unwrap(),
            "t1:df:orders_2024:pkid:pk_9"
        );
        assert_eq!(
            shared_state_key("t1", "conv:x", "u:1").unwrap(),
            "t1:SS:conv_x:u_1"
        );
        assert_eq!(
            batch_key("t1", "wa", "ent", "1:act").unwrap(),
            "t1:batch:wa:ent:1:act"
        );
        assert_eq!(pending_key("wa").unwrap(), "pending_batches:wa");
        assert_eq!(generic_key("t1", "a:b").unwrap(), "t1:a:b");
        // Ambiguous parts are refused, not guessed.
        assert!(matches!(
            handler_key("t1", "chat:flow", "u1"),
            Err(KeyError::Ambiguous { .. })
        ));
        assert!(matches!(
            batch_key("t1", "wa", "ent:1", "act"),
            Err(KeyError::Ambiguous { .. })
        ));
        assert!(matches!(user_key("t1", ""), Err(KeyError::Empty { .. })));
        assert!(matches!(
            user_key("a:b", "u"),
            Err(KeyError::TenantWithColon { .. })
        ));
    }

    #[test]
    fn patterns_escape_globs() {
        assert_eq!(user_pattern("a*b"), "a\\*b:user:*");
        assert_eq!(
            table_pk_pattern("t", "x?[y]").unwrap(),
            "t:df:*:pkid:x\\?\\[y\\]"
        );
        assert_eq!(
            trigger_id_pattern("t", "i:d").unwrap(),
            "t:EXPTRIGGER:*:i_d"
        );
        assert_eq!(glob_escape("a\\b"), "a\\\\b");
    }

    #[test]
    fn refuses_control_characters_and_never_parses_nul() {
        for (tenant, action, id) in [
            ("t", "a", "n1\0r1"),
            ("t", "a\n", "1"),
            ("t\u{1b}", "a", "1"),
            ("t", "a", "x\u{7f}"),
        ] {
            let err = trigger_key(tenant, action, id).unwrap_err();
            assert!(
                matches!(err, KeyError::ControlCharacter { .. }),
                "{tenant:?} {action:?} {id:?}: {err}"
            );
        }
        assert_eq!(parse_trigger("t:EXPTRIGGER:a:n1\0r1"), None);
        assert!(parse_trigger("t:EXPTRIGGER:a:line\nbreak").is_some());
    }

    #[test]
    fn round_trips_built_keys() {
        let key = trigger_key("acme", "a:b", "c:d").unwrap();
        let k = parse_trigger(&key).unwrap();
        assert_eq!((k.tenant, k.action, k.id), ("acme", "a_b", "c_d"));
    }
}
