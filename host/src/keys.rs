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

/// Longest tenant name, in bytes.
pub const MAX_TENANT_LEN: usize = 128;
/// Longest action, in bytes (a key heard from Redis with a longer one is
/// not run).
pub const MAX_ACTION_LEN: usize = 256;
/// Longest id, in bytes (as for the action). An id rides on every log line
/// of its job, and in the admin API's pages.
pub const MAX_ID_LEN: usize = 1024;

/// Tenant names no tenant may take: the host's own key prefix (`symphony:`),
/// and the words the repositories use across tenants (`pending_batches:`).
/// A tenant so named would write the host's index, or every tenant's set.
pub const RESERVED_TENANTS: [&str; 2] = [HOST_PREFIX, "pending_batches"];

/// The first part of every key the host itself keeps (`symphony:...`).
pub const HOST_PREFIX: &str = "symphony";

/// A key that was rejected before it reached Redis.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The tenant is empty.
    #[error("tenant must not be empty")]
    EmptyTenant,
    /// The tenant is a reserved word, starts with `__` (Redis's own
    /// `__keyspace@`/`__keyevent@` channels), or holds `{` or `}` (a Redis
    /// Cluster hash tag, which would pin its keys beside the host's).
    #[error("tenant {tenant:?} is not allowed: {why} (docs/security.md, tenant names)")]
    TenantReserved {
        /// The rejected tenant.
        tenant: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// A part is longer than its cap.
    #[error("{part} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// Which part.
        part: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The cap.
        max: usize,
    },
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

/// Refuses a part longer than `max` bytes.
///
/// # Errors
/// [`KeyError::TooLong`].
pub fn refuse_long(part: &'static str, value: &str, max: usize) -> Result<(), KeyError> {
    match value.len() > max {
        true => Err(KeyError::TooLong {
            part,
            len: value.len(),
            max,
        }),
        false => Ok(()),
    }
}

/// The one rule for tenant names, applied wherever a tenant enters: the
/// manifest, keys heard from Redis, the CLI, the admin API and the library.
/// A tenant is 1 to [`MAX_TENANT_LEN`] bytes without `:`, control
/// characters, `{` or `}`, does not start with `__`, and is none of
/// [`RESERVED_TENANTS`].
///
/// # Errors
/// [`KeyError::EmptyTenant`], [`KeyError::TenantWithColon`],
/// [`KeyError::ControlCharacter`], [`KeyError::TooLong`] or
/// [`KeyError::TenantReserved`].
pub fn validate_tenant(tenant: &str) -> Result<(), KeyError> {
    if tenant.is_empty() {
        return Err(KeyError::EmptyTenant);
    }
    refuse_long("tenant", tenant, MAX_TENANT_LEN)?;
    // C0, DEL and the C1 controls (U+0080 to U+009F): a tenant name is
    // never text to be laid out.
    if let Some(ch) = tenant.chars().find(|c| c.is_control()) {
        return Err(KeyError::ControlCharacter {
            part: "tenant",
            value: tenant.to_owned(),
            ch,
        });
    }
    if tenant.contains(':') {
        return Err(KeyError::TenantWithColon {
            tenant: tenant.to_owned(),
        });
    }
    let why = if RESERVED_TENANTS.contains(&tenant) {
        "the name is reserved for keys the host or every tenant shares"
    } else if tenant.starts_with("__") {
        "names starting with \"__\" are Redis's own (its __keyspace@/__keyevent@ channels)"
    } else if tenant.contains(['{', '}']) {
        "'{' and '}' would make a Redis Cluster hash tag"
    } else if tenant.contains(|c: char| c.is_whitespace() || c == '=') {
        "spaces and '=' would forge fields in the host's text log lines"
    } else if tenant.contains(invisible) {
        "invisible, reordering, private-use and unassigned characters (zero-width \
         spaces, bidi controls, tags, non-characters) would make one name look like \
         another, or like nothing, in logs and the dashboard"
    } else {
        return Ok(());
    };
    Err(KeyError::TenantReserved {
        tenant: tenant.to_owned(),
        why,
    })
}

/// Whether `c` is drawn as nothing, or changes how its neighbours are
/// drawn: Unicode's "Other" categories (format characters such as U+200B
/// and U+202E, private use, surrogates, unassigned code points and
/// non-characters; controls are refused before this), and the
/// Default_Ignorable_Code_Point characters of other categories (the
/// combining grapheme joiner U+034F, variation selectors, Hangul fillers
/// such as U+3164).
fn invisible(c: char) -> bool {
    use icu_properties::props::{
        BinaryProperty, DefaultIgnorableCodePoint, EnumeratedProperty, GeneralCategory,
        GeneralCategoryGroup,
    };
    GeneralCategoryGroup::Other.contains(GeneralCategory::for_char(c))
        || DefaultIgnorableCodePoint::for_char(c)
}

/// A `clap` value parser for tenant arguments: the rule of
/// [`validate_tenant`].
///
/// # Errors
/// The rule's error, as text.
pub fn parse_tenant(s: &str) -> Result<String, String> {
    validate_tenant(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
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
    refuse_long("action", action, MAX_ACTION_LEN)?;
    refuse_long("id", id, MAX_ID_LEN)?;
    refuse_control("action", action)?;
    refuse_control("id", id)?;
    Ok(format!(
        "{tenant}:{TRIGGER_MARKER}:{}:{}",
        escape(action),
        escape(id)
    ))
}

/// Why a key heard from Redis is not run as a trigger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotTrigger {
    /// Not `{tenant}:EXPTRIGGER:{action}:{id}`.
    #[error("not of the form {{tenant}}:EXPTRIGGER:{{action}}:{{id}}")]
    Shape,
    /// It holds a NUL byte, which separates a key from its tag in the
    /// delivery index.
    #[error("it holds a NUL byte")]
    Nul,
    /// Its tenant breaks the tenant rule.
    #[error("{0}")]
    Tenant(KeyError),
    /// Its action or id is longer than allowed.
    #[error("{0}")]
    TooLong(KeyError),
}

/// Parses a trigger key the way mimeiapify's `parse_trigger` does, and
/// checks it against the rules a key must meet to be run: see
/// [`NotTrigger`] for what is refused. Other control characters (than NUL)
/// are accepted from other clients and escaped in logs.
///
/// # Errors
/// Why the key is not a trigger the host runs.
pub fn check_trigger(key: &str) -> Result<TriggerKey<'_>, NotTrigger> {
    let mut parts = key.splitn(4, ':');
    let (Some(tenant), Some(TRIGGER_MARKER), Some(action), Some(id)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(NotTrigger::Shape);
    };
    if key.contains('\0') {
        return Err(NotTrigger::Nul);
    }
    validate_tenant(tenant).map_err(NotTrigger::Tenant)?;
    refuse_long("action", action, MAX_ACTION_LEN).map_err(NotTrigger::TooLong)?;
    refuse_long("id", id, MAX_ID_LEN).map_err(NotTrigger::TooLong)?;
    Ok(TriggerKey { tenant, action, id })
}

/// [`check_trigger`], without the reason: `None` for a key that is not run,
/// including keys whose tenant is empty or contains `:` (mimeiapify ignores
/// those too, or cannot scope them), or breaks the tenant rule.
pub fn parse_trigger(key: &str) -> Option<TriggerKey<'_>> {
    check_trigger(key).ok()
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
    fn tenants_with_c1_controls_are_refused() {
        for bad in ["a\u{85}b", "a\u{9b}b", "\u{80}", "a\u{7f}", "a\u{1b}[2J"] {
            let err = validate_tenant(bad).unwrap_err();
            assert!(
                matches!(err, KeyError::ControlCharacter { .. }),
                "{bad:?}: {err}"
            );
            let key = format!("{bad}:EXPTRIGGER:a:1");
            assert!(check_trigger(&key).is_err(), "{key:?}");
        }
        assert!(validate_tenant("café-ünï").is_ok());
    }

    #[test]
    fn the_tenant_rule_refuses_the_hosts_words_and_redis_channels() {
        for bad in [
            "symphony",
            "pending_batches",
            "__keyevent@8__",
            "__keyspace@0__",
            "__x",
            "a{b",
            "tag}",
            "victim action=rec",
            " ",
            "a\u{2028}b",
            // Zero-width space and joiner, bidi override and isolate, BOM,
            // a tag character, private use, a non-character, unassigned.
            "vic\u{200b}tim",
            "a\u{200d}b",
            "\u{202e}mitciv",
            "a\u{2066}b",
            "\u{feff}acme",
            "acme\u{e0041}",
            "a\u{e000}",
            "a\u{fdd0}",
            "a\u{10ffff}",
            "a\u{378}",
            // Default-ignorable marks and letters: a grapheme joiner,
            // variation selectors, Hangul fillers, a Mongolian selector.
            "vic\u{34f}tim",
            "victim\u{fe0f}",
            "victim\u{e0100}",
            "vic\u{3164}tim",
            "\u{3164}",
            "a\u{115f}",
            "a\u{17b4}",
            "a\u{180b}",
            &"t".repeat(MAX_TENANT_LEN + 1),
        ] {
            let err = validate_tenant(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    KeyError::TenantReserved { .. } | KeyError::TooLong { .. }
                ),
                "{bad:?}: {err}"
            );
            assert!(trigger_key(bad, "a", "1").is_err(), "{bad:?}");
            assert!(channel_name(bad, "expired").is_err(), "{bad:?}");
            let key = format!("{bad}:EXPTRIGGER:a:1");
            assert!(
                matches!(check_trigger(&key), Err(NotTrigger::Tenant(_))),
                "{key:?}"
            );
        }
        for good in [
            "acme",
            "Symphony",
            "symphony2",
            "_x",
            "a_b",
            "café-ünï",
            "東京",
            "ﾃﾅﾝﾄ",
            "🦀",
            "t".repeat(128).as_str(),
        ] {
            validate_tenant(good).unwrap();
        }
    }

    #[test]
    fn ids_and_actions_are_capped_where_keys_are_built_and_heard() {
        let long_id = "i".repeat(MAX_ID_LEN + 1);
        let long_action = "a".repeat(MAX_ACTION_LEN + 1);
        assert!(matches!(
            trigger_key("t", "a", &long_id),
            Err(KeyError::TooLong { part: "id", .. })
        ));
        assert!(matches!(
            trigger_key("t", &long_action, "1"),
            Err(KeyError::TooLong { part: "action", .. })
        ));
        let key = format!("t:EXPTRIGGER:a:{long_id}");
        assert!(matches!(check_trigger(&key), Err(NotTrigger::TooLong(_))));
        let key = format!("t:EXPTRIGGER:{long_action}:1");
        assert!(matches!(check_trigger(&key), Err(NotTrigger::TooLong(_))));
        let at_cap = format!(
            "t:EXPTRIGGER:{}:{}",
            "a".repeat(MAX_ACTION_LEN),
            "i".repeat(MAX_ID_LEN)
        );
        assert!(check_trigger(&at_cap).is_ok());
    }

    #[test]
    fn round_trips_built_keys() {
        let key = trigger_key("acme", "a:b", "c:d").unwrap();
        let k = parse_trigger(&key).unwrap();
        assert_eq!((k.tenant, k.action, k.id), ("acme", "a_b", "c_d"));
    }
}

/// Properties of what tenants and clients control: any text as a tenant,
/// action, id or whole key.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// Text with the characters that matter here overrepresented.
    fn text() -> impl Strategy<Value = String> {
        let special = prop_oneof![
            Just(':'),
            Just('{'),
            Just('}'),
            Just('_'),
            Just('\0'),
            Just('*'),
            Just('é'),
            Just('\n'),
            Just('\u{200b}'),
            Just('\u{202e}'),
            Just('\u{3164}'),
            any::<char>(),
            proptest::char::range('a', 'e'),
        ];
        proptest::collection::vec(special, 0..40).prop_map(|v| v.into_iter().collect())
    }

    fn tenant() -> impl Strategy<Value = String> {
        prop_oneof![
            text(),
            Just("symphony".to_owned()),
            Just("pending_batches".to_owned()),
            Just("__keyevent@8__".to_owned()),
            text().prop_map(|t| format!("__{t}")),
            Just("t".repeat(MAX_TENANT_LEN)),
            Just("t".repeat(MAX_TENANT_LEN + 1)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A tenant the rule accepts can name no key the host or another
        /// tenant owns, no Redis channel and no hash tag.
        #[test]
        fn accepted_tenants_reach_nothing_shared(t in tenant()) {
            if validate_tenant(&t).is_ok() {
                prop_assert!(!t.is_empty() && t.len() <= MAX_TENANT_LEN);
                let forbidden = [':', '{', '}'];
                prop_assert!(!t.contains(forbidden), "{:?}", t);
                prop_assert!(!t.starts_with("__"));
                prop_assert!(!RESERVED_TENANTS.contains(&t.as_str()));
                prop_assert!(!t.chars().any(|c| c.is_control() || invisible(c)));
            }
        }

        /// A key built from any parts parses back to its tenant and the
        /// escaped parts; a key refused when built is never run when heard.
        #[test]
        fn built_keys_round_trip_and_refusals_agree(t in tenant(), a in text(), i in text()) {
            match trigger_key(&t, &a, &i) {
                Ok(key) => {
                    let k = check_trigger(&key).expect("a built key is a trigger");
                    prop_assert_eq!(k.tenant, t.as_str());
                    let (action, id) = (escape(&a), escape(&i));
                    prop_assert_eq!(k.action, action.as_ref());
                    prop_assert_eq!(k.id, id.as_ref());
                }
                Err(_) => {
                    let raw = format!("{t}:{TRIGGER_MARKER}:{a}:{i}");
                    if let Ok(k) = check_trigger(&raw) {
                        // Only an empty action, or an id holding a control
                        // character other than NUL, passes when heard.
                        prop_assert!(
                            validate_tenant(k.tenant).is_ok()
                                && k.action.len() <= MAX_ACTION_LEN
                                && k.id.len() <= MAX_ID_LEN
                        );
                    }
                }
            }
        }

        /// Any key heard: the parser never panics, and what it accepts
        /// meets every rule.
        #[test]
        fn heard_keys_meet_the_rules(key in prop_oneof![
            text(),
            (tenant(), text(), text()).prop_map(|(t, a, i)| format!("{t}:EXPTRIGGER:{a}:{i}")),
        ]) {
            if let Ok(k) = check_trigger(&key) {
                prop_assert!(validate_tenant(k.tenant).is_ok());
                prop_assert!(k.action.len() <= MAX_ACTION_LEN && k.id.len() <= MAX_ID_LEN);
                prop_assert!(!key.contains('\0'));
                prop_assert_eq!(format!("{}:EXPTRIGGER:{}:{}", k.tenant, k.action, k.id), key);
            }
        }
    }
}
