//! The Lua scripts of delivery, one file each under `lua/`, every one
//! prefixed with `lua/prelude.lua` (the server time as `now`, and helpers).
//!
//! Each file's header says which KEYS and ARGV it takes. Most scripts touch
//! only the keys they are given; the claims and the reaper find tenants'
//! indexes in Redis, and the armings, indexings and claims use the space's
//! `spent` key or a key's fired mark ([`KeyUse::Finds`]), always beside a key they are given (in its
//! [`Space`](super::Space)), so on a cluster every script stays in one
//! slot. `hint`, `hint_cas` and `hints_due` work on a cluster's
//! hint buckets (and name a tenant's pairs beside the bucket's hints).

use std::sync::LazyLock;

/// How a script names the Redis keys it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyUse {
    /// Only its KEYS.
    Declared,
    /// Its KEYS and keys it names beside them: tenants' indexes found from
    /// the ready set or the leases, the space's `spent` key, a hint
    /// bucket's pairs of one tenant.
    Finds,
}

/// One script: its name (the file's), how it names keys, and the script.
pub(super) struct Lua {
    // Name and key use are checked by the tests against the files (a
    // script that finds keys must stay in the slot of a key it is given).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) name: &'static str,
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) keys: KeyUse,
    pub(super) script: redis::Script,
}

impl std::ops::Deref for Lua {
    type Target = redis::Script;
    fn deref(&self) -> &redis::Script {
        &self.script
    }
}

const PRELUDE: &str = include_str!("lua/prelude.lua");

fn lua(name: &'static str, keys: KeyUse, body: &str) -> Lua {
    Lua {
        name,
        keys,
        script: redis::Script::new(&format!(
            "local FIRED_TTL_MS = {}\n{PRELUDE}{body}",
            super::FIRED_TTL_MS
        )),
    }
}

macro_rules! scripts {
    ($($field:ident: $keys:ident),* $(,)?) => {
        pub(super) struct Scripts {
            $(pub(super) $field: Lua,)*
        }

        /// The scripts, hashed once per process.
        pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
            $($field: lua(
                stringify!($field),
                KeyUse::$keys,
                include_str!(concat!("lua/", stringify!($field), ".lua")),
            ),)*
        });

        impl Scripts {
            /// Every script.
            #[cfg(test)]
            pub(super) fn all(&self) -> Vec<&Lua> {
                vec![$(&self.$field,)*]
            }
        }
    };
}

scripts! {
    arm: Finds,
    arm_many: Finds,
    cancel: Declared,
    index: Finds,
    unindex: Declared,
    claim: Finds,
    claim_one: Finds,
    claim_many: Finds,
    claim_expired: Declared,
    reap: Finds,
    hint: Finds,
    hint_cas: Finds,
    hints_due: Finds,
    release: Declared,
    retry: Declared,
    finish: Declared,
    renew: Declared,
    revive: Declared,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prelude_names_indexes_as_the_host_does() {
        // `index_in(ready, m)`: the ready key without `ready`, then `due:`
        // and the tenant, which is what `Space` names.
        assert!(PRELUDE.contains("string.sub(ready_key, 1, -6) .. 'due:' .. tenant_of(m)"));
        assert!(PRELUDE.contains("string.sub(ready_key, 1, -6) .. 'spent'"));
        assert!(PRELUDE.contains("string.sub(ready_key, 1, -6) .. 'fired:' .. key"));
        for space in [
            super::super::Space::standalone(),
            super::super::Space::of_slot(9),
        ] {
            let ready = space.ready();
            let beside = ready.strip_suffix("ready").unwrap();
            assert_eq!(format!("{beside}due:acme"), space.due("acme"));
            assert_eq!(format!("{beside}spent"), space.spent());
            assert_eq!(format!("{beside}fired:"), space.fired());
            assert_eq!(format!("{beside}probe"), space.probe());
        }
    }

    #[test]
    fn the_hint_scripts_name_a_tenants_pairs_as_the_host_does() {
        let bucket = super::super::Bucket(3);
        assert_eq!(
            format!("{}:acme", bucket.hints()),
            bucket.tenant_hints("acme")
        );
        for name in ["hint", "hint_cas", "hints_due"] {
            assert!(
                include_str_of(name).contains("KEYS[1] .. ':' .. "),
                "{name}"
            );
        }
    }

    /// A script that finds keys says so: a cluster backend must know.
    #[test]
    fn only_scripts_marked_finds_compute_keys() {
        for lua in SCRIPTS.all() {
            let body = include_str_of(lua.name);
            let computes = body.contains("index_in(")
                || body.contains("claim_from(")
                || body.contains("set_quietly(")
                || body.contains("keep_due_firing(")
                || body.contains("KEYS[1] .. ':'")
                || body.contains("'symphony:");
            assert_eq!(
                computes,
                lua.keys == KeyUse::Finds,
                "{}.lua computes key names: {computes}, marked {:?}",
                lua.name,
                lua.keys
            );
        }
    }

    fn include_str_of(name: &str) -> String {
        let path = format!("{}/src/delivery/lua/{name}.lua", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }
}
