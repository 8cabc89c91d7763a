//! Example plugin: cancels a tenant's pending reminder when an account closes.
//!
//! `account_closed` for an id deletes that id's pending `send_reminder` and
//! `followup_reminder` triggers and logs what it cancelled; any other action it
//! owns is rejected as an error so misrouted triggers are visible.

use symphony_sdk::{Error, Expiry, Plugin, Result, log, trigger};

struct Audit;

impl Plugin for Audit {
    fn on_expire(e: Expiry) -> Result<()> {
        if e.action != "account_closed" {
            return Err(Error::msg(format!(
                "audit does not handle action {:?}",
                e.action
            )));
        }
        let mut cancelled = Vec::new();
        for action in ["send_reminder", "followup_reminder"] {
            if trigger::delete(action, &e.id)? {
                cancelled.push(action);
            }
        }
        log::info(&format!(
            "account {} closed; cancelled {:?}",
            e.id, cancelled
        ));
        Ok(())
    }
}

symphony_sdk::export_plugin!(Audit);
