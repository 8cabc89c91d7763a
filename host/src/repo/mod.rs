//! Tenant-scoped repositories over Redis, byte-compatible with `mimeiapify`.
//!
//! Each repository is built for one tenant and can only name keys under it;
//! plugins reach them through host functions, Rust code embedding the host
//! can use them directly.

mod batch;
pub mod capped;
pub mod codec;
mod generic;
pub mod hash;
pub mod meter;
mod pubsub;
mod trigger;

pub use batch::BatchRepo;
pub use generic::GenericRepo;
pub use hash::{HandlerStateRepo, HashRepo, SharedStateRepo, TableRepo, UserRepo};
pub use pubsub::Publisher;
pub use trigger::{MAX_TTL_MS, TriggerRepo, ttl_ms};

pub use crate::error::RepoError;

/// `datetime.utcnow().isoformat()` as Python prints it: microseconds, no zone.
pub(crate) fn utc_now_iso() -> String {
    let s = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    s.trim_end_matches('Z').to_owned()
}
