//! Test plugin for hot reload and instance reuse: logs `running v1` (or
//! `running v2` when built with the `v2` feature), then `instance call N`,
//! N counting the calls this instance has served, and returns ok.

use std::sync::atomic::{AtomicU32, Ordering};
use symphony_sdk::{Expiry, Plugin, Result, log};

const VERSION: &str = if cfg!(feature = "v2") { "v2" } else { "v1" };

static CALLS: AtomicU32 = AtomicU32::new(0);

struct Versioned;

impl Plugin for Versioned {
    fn on_expire(_e: Expiry) -> Result<()> {
        log::info(&format!("running {VERSION}"));
        let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        log::info(&format!("instance call {n}"));
        Ok(())
    }
}

symphony_sdk::export_plugin!(Versioned);
