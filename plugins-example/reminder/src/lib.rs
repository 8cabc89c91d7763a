//! Example plugin: sends a reminder, then schedules and handles a follow-up.
//!
//! `send_reminder` logs and schedules `followup_reminder` for the same id two
//! seconds later, in the same tenant; `followup_*` logs that the follow-up ran.

use std::time::Duration;
use symphony_sdk::{Expiry, Plugin, Result, log, tenant, trigger};

struct Reminder;

impl Plugin for Reminder {
    fn on_expire(e: Expiry) -> Result<()> {
        if e.action.starts_with("followup_") {
            log::info(&format!(
                "follow-up {} for {} in tenant {}",
                e.action,
                e.id,
                tenant()
            ));
            return Ok(());
        }
        log::info(&format!("reminder for {} (key {})", e.id, e.key));
        trigger::set("followup_reminder", &e.id, Duration::from_secs(2))?;
        log::info("scheduled followup_reminder in 2s");
        Ok(())
    }
}

symphony_sdk::export_plugin!(Reminder);
