//! Test plugin whose behaviour is chosen by the action it receives.
//!
//! - `fail*`: returns `Err("recorder failed on purpose")`.
//! - `trap*`: panics, which traps the instance.
//! - `spin*`: loops for ever (the host's timeout must stop it).
//! - `slow*`: logs `slow start`, sleeps one second, then records as below.
//! - anything else: records the call by setting the trigger
//!   `seen_{action}` for the same id (60 s TTL) in the current tenant, and logs
//!   `recorded tenant=.. action=.. id=.. key=..`, so a test can check both the
//!   arguments and the tenant scoping through Redis and the logs.

use std::time::Duration;
use symphony_sdk::{Error, Expiry, Plugin, Result, log, tenant, trigger};

struct Recorder;

impl Plugin for Recorder {
    fn on_expire(e: Expiry) -> Result<()> {
        if e.action.starts_with("fail") {
            return Err(Error::msg("recorder failed on purpose"));
        }
        if e.action.starts_with("trap") {
            #[allow(clippy::panic)]
            {
                panic!("recorder trapped on purpose");
            }
        }
        if e.action.starts_with("spin") {
            #[allow(clippy::empty_loop)]
            loop {}
        }
        if e.action.starts_with("slow") {
            log::info("slow start");
            std::thread::sleep(Duration::from_secs(1));
        }
        let tenant = tenant();
        log::info(&format!(
            "recorded tenant={tenant} action={} id={} key={}",
            e.action, e.id, e.key
        ));
        trigger::set(
            &format!("seen_{}", e.action),
            &e.id,
            Duration::from_secs(60),
        )?;
        Ok(())
    }
}

symphony_sdk::export_plugin!(Recorder);
