//! Test plugin for hot reload: logs `running v1` (or `running v2` when built
//! with the `v2` feature) and returns ok.

use symphony_sdk::{Expiry, Plugin, Result, log};

const VERSION: &str = if cfg!(feature = "v2") { "v2" } else { "v1" };

struct Versioned;

impl Plugin for Versioned {
    fn on_expire(_e: Expiry) -> Result<()> {
        log::info(&format!("running {VERSION}"));
        Ok(())
    }
}

symphony_sdk::export_plugin!(Versioned);
