//! {{name}}: a symphony-host plugin.
//!
//! `on_expire` runs when a trigger key `{tenant}:EXPTRIGGER:{action}:{id}`
//! routed to this plugin expires. It counts the runs of each id in the
//! handler state `{{name}}` (hash `{tenant}:state:{{name}}:{id}`, field
//! `runs`), logs the action and id, and returns ok.

use symphony_sdk::{Expiry, Plugin, Result, handler_state, log};

/// The log line of one run: the plugin's own logic, tested by `cargo test`.
pub fn summary(action: &str, id: &str, runs: i64) -> String {
    format!("{action} for {id}: run {runs}")
}

struct Handler;

impl Plugin for Handler {
    fn on_expire(expiry: Expiry) -> Result<()> {
        // Scoped by the host to the tenant of the trigger that fired.
        let runs = handler_state::increment_field("{{name}}", &expiry.id, "runs", 1, None)?;
        log::info(&summary(&expiry.action, &expiry.id, runs));
        Ok(())
    }
}

symphony_sdk::export_plugin!(Handler);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_the_action_the_id_and_the_run() {
        assert_eq!(summary("remind", "u1", 2), "remind for u1: run 2");
    }
}
