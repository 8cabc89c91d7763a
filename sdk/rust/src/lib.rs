//! # symphony-sdk: write symphony-host plugins in Rust
//!
//! A plugin is a WebAssembly component that symphony-host runs when one of
//! its trigger keys (`{tenant}:EXPTRIGGER:{action}:{id}`) expires. This crate
//! wraps the bindings generated from the project's WIT (`wit/symphony.wit`)
//! so a plugin is one trait impl and one macro call:
//!
//! ```
//! use std::time::Duration;
//! use symphony_sdk::{Expiry, Plugin, Result, log, trigger};
//!
//! struct Reminder;
//!
//! impl Plugin for Reminder {
//!     fn on_expire(expiry: Expiry) -> Result<()> {
//!         log::info(&format!("reminding {} ({})", expiry.id, expiry.action));
//!         // Schedule a follow-up for the same id, one minute from now, in
//!         // the tenant of the trigger that fired.
//!         trigger::set("followup_reminder", &expiry.id, Duration::from_secs(60))?;
//!         Ok(())
//!     }
//! }
//!
//! symphony_sdk::export_plugin!(Reminder);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2` (crate type `cdylib`);
//! the `.wasm` that comes out is already a component.
//!
//! # Layout
//! - [`Plugin`], [`Expiry`] and [`export_plugin!`]: the entry point.
//! - [`log`], [`tenant`], [`trigger`]: logging, the current tenant, and
//!   triggers (with [`Duration`] TTLs).
//! - [`user`], [`handler_state`], [`table`], [`shared_state`], [`batch`],
//!   [`generic`], [`pubsub`]: the repositories, as generated from the WIT.
//!   Values cross as JSON text; [`json::to`] and [`json::from`] convert with
//!   serde. Every call is scoped by the host to the tenant of the firing
//!   trigger; none takes a tenant.
//! - [`Error`] / [`Result`]: what a plugin returns; a host call's
//!   [`RepoError`] converts into it with `?`.
//! - [`bindings`]: the raw generated bindings, for what the wrappers do not cover.

use std::fmt;
use std::time::Duration;

/// Raw bindings generated from `wit/symphony.wit` by wit-bindgen.
#[allow(missing_docs, unsafe_code)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "symphony_sdk::bindings",
        export_macro_name: "export",
    });
}

/// Why a host call failed (re-exported from the WIT `types` interface).
pub use bindings::symphony::plugin::types::RepoError;

/// Repositories, as generated from the WIT (`wit/symphony.wit` documents
/// each function). `json` arguments and results are JSON text.
pub use bindings::symphony::plugin::{
    batch, generic, handler_state, pubsub, shared_state, table, user,
};

/// JSON text to and from Rust values, for the repositories' `json` values.
///
/// ```
/// # fn main() -> symphony_sdk::Result<()> {
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Profile { name: String, visits: u32 }
/// let text = symphony_sdk::json::to(&Profile { name: "Ann".into(), visits: 3 })?;
/// let back: Profile = symphony_sdk::json::from(&text)?;
/// assert_eq!(back.visits, 3);
/// # Ok(()) }
/// ```
pub mod json {
    use super::Result;

    /// Serializes `value` to JSON text.
    ///
    /// # Errors
    /// When serde cannot represent the value as JSON.
    pub fn to<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
        Ok(serde_json::to_string(value)?)
    }

    /// Deserializes JSON text.
    ///
    /// # Errors
    /// When the text is not JSON or does not fit `T`.
    pub fn from<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
        Ok(serde_json::from_str(text)?)
    }
}

/// The trigger that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Expiry {
    /// The action part of the key, as stored (`:` escaped to `_`).
    pub action: String,
    /// The identifier part of the key, as stored.
    pub id: String,
    /// The full key, `{tenant}:EXPTRIGGER:{action}:{id}`.
    pub key: String,
}

impl Expiry {
    /// Builds an `Expiry`; the host does this for you, tests of plugin logic may too.
    pub fn new(action: impl Into<String>, id: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            id: id.into(),
            key: key.into(),
        }
    }
}

/// Implemented by a plugin; export it with [`export_plugin!`].
pub trait Plugin {
    /// Handles one expired trigger. An `Err` is reported by the host as the
    /// dispatch outcome `error`, with the error's text.
    fn on_expire(expiry: Expiry) -> Result<()>;
}

/// What a plugin's handler returns.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A host call failed.
    Repo(RepoError),
    /// The plugin's own failure, with a message for the logs.
    Failed(String),
}

impl Error {
    /// A plugin failure with a message.
    pub fn msg(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Repo(e) => write!(f, "host call failed: {}", repo_error_text(e)),
            Error::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Repo(e) => Some(e),
            Error::Failed(_) => None,
        }
    }
}

impl From<RepoError> for Error {
    fn from(e: RepoError) -> Self {
        Error::Repo(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Failed(format!("JSON: {e}"))
    }
}

impl From<String> for Error {
    fn from(m: String) -> Self {
        Error::Failed(m)
    }
}

impl From<&str> for Error {
    fn from(m: &str) -> Self {
        Error::Failed(m.to_owned())
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn repo_error_text(e: &RepoError) -> String {
    match e {
        RepoError::NotFound => "not found".to_owned(),
        RepoError::InvalidInput(m) => format!("invalid input: {m}"),
        RepoError::Unavailable(m) => format!("backend unavailable: {m}"),
        RepoError::Denied(m) => format!("denied: {m}"),
    }
}

/// Logging into the host's tracing; each line carries tenant, action, id and plugin.
pub mod log {
    use crate::bindings::symphony::plugin::log::{Level, log};

    /// Logs at trace level.
    pub fn trace(message: &str) {
        log(Level::Trace, message);
    }
    /// Logs at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        log(Level::Info, message);
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// The tenant of the trigger that fired.
pub fn tenant() -> String {
    bindings::symphony::plugin::context::tenant()
}

/// Schedule and cancel triggers of the current tenant.
pub mod trigger {
    use super::{Duration, Result};
    use crate::bindings::symphony::plugin::trigger as raw;

    /// Schedules `action` for `id` to fire after `ttl` (millisecond
    /// precision), replacing a pending one with the same action and id.
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`](crate::RepoError) for an empty action or a
    /// zero `ttl`, [`RepoError::Unavailable`](crate::RepoError) when Redis is down.
    pub fn set(action: &str, id: &str, ttl: Duration) -> Result<()> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        raw::set(action, id, ms)?;
        Ok(())
    }

    /// Cancels a pending trigger; returns whether one was pending.
    ///
    /// # Errors
    /// As [`set`].
    pub fn delete(action: &str, id: &str) -> Result<bool> {
        Ok(raw::delete(action, id)?)
    }

    /// Cancels every pending trigger of `id`, whatever its action; returns how many.
    ///
    /// # Errors
    /// As [`set`].
    pub fn delete_all_by_identifier(id: &str) -> Result<u32> {
        Ok(raw::delete_all_by_identifier(id)?)
    }
}

/// Runs a [`Plugin`] for one call; used by [`export_plugin!`].
#[doc(hidden)]
pub fn __dispatch<P: Plugin>(action: String, id: String, key: String) -> Result<(), String> {
    P::on_expire(Expiry { action, id, key }).map_err(|e| e.to_string())
}

/// Exports a type implementing [`Plugin`] as the component's `on-expire`.
///
/// Call it once, at the top level of the plugin crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct __SymphonyExport;
            impl $crate::bindings::Guest for __SymphonyExport {
                fn on_expire(
                    action: ::std::string::String,
                    id: ::std::string::String,
                    key: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__dispatch::<$plugin>(action, id, key)
                }
            }
    $crate::bindings::export!(__SymphonyExport with_types_in $crate::bindings);
        };
    };
}
