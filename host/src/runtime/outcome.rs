//! How an invocation ended: the outcomes a job is logged, counted and
//! settled by.

use std::time::Duration;

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// `on-expire` returned `ok`.
    Ok,
    /// `on-expire` returned `err` with this message.
    Error(String),
    /// `on-expire` returned `err` after a host call was denied for a missing
    /// capability.
    Denied(String),
    /// The instance trapped (panic, unreachable, stack overflow, exit).
    Trap(String),
    /// The invocation ran past its timeout and was stopped.
    Timeout(Duration),
    /// The plugin tried to grow its memory past its limit.
    Memory(String),
    /// The plugin ran out of fuel.
    Fuel,
    /// The plugin made more host calls than allowed.
    Limit(String),
}

impl Outcome {
    /// The outcome's name in logs: `ok`, `error`, `denied`, `trap`,
    /// `timeout`, `memory`, `fuel` or `limit`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error(_) => "error",
            Outcome::Denied(_) => "denied",
            Outcome::Trap(_) => "trap",
            Outcome::Timeout(_) => "timeout",
            Outcome::Memory(_) => "memory",
            Outcome::Fuel => "fuel",
            Outcome::Limit(_) => "limit",
        }
    }

    /// What went wrong, for the log's `error` field (`None` when ok).
    pub fn detail(&self) -> Option<String> {
        match self {
            Outcome::Ok => None,
            Outcome::Error(m)
            | Outcome::Denied(m)
            | Outcome::Trap(m)
            | Outcome::Memory(m)
            | Outcome::Limit(m) => Some(m.clone()),
            Outcome::Timeout(limit) => Some(format!("stopped at the {limit:?} timeout")),
            Outcome::Fuel => Some("ran out of fuel".to_owned()),
        }
    }
}
