//! Host functions of the `plugin` world, implemented on [`JobState`].
//!
//! Each takes the tenant from the Store data (the firing trigger), never from
//! the guest. Failures a plugin can handle come back as the WIT `repo-error`.

use std::time::Duration;

use crate::bindings::WitRepoError;
use crate::bindings::symphony::plugin::{context, log, trigger, types};
use crate::repo::TriggerRepo;

use super::JobState;

/// Longest log message kept from a plugin; the rest is cut.
const MAX_LOG_MESSAGE: usize = 16 * 1024;

impl types::Host for JobState {}

impl log::Host for JobState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let mut message = message;
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [truncated]");
        }
        let j = &self.job;
        macro_rules! emit {
            ($lvl:ident) => {
                tracing::$lvl!(
                    target: "symphony::plugin",
                    tenant = %j.tenant, action = %j.action, id = %j.id, plugin = %j.plugin,
                    "{message}"
                )
            };
        }
        match level {
            log::Level::Trace => emit!(trace),
            log::Level::Debug => emit!(debug),
            log::Level::Info => emit!(info),
            log::Level::Warn => emit!(warn),
            log::Level::Error => emit!(error),
        }
        Ok(())
    }
}

impl context::Host for JobState {
    async fn tenant(&mut self) -> wasmtime::Result<String> {
        Ok(self.job.tenant.clone())
    }
}

impl JobState {
    fn triggers(&self) -> Result<TriggerRepo, WitRepoError> {
        Ok(TriggerRepo::new(&self.pools, &self.job.tenant)?)
    }
}

impl trigger::Host for JobState {
    async fn set(
        &mut self,
        action: String,
        id: String,
        ttl_ms: u64,
    ) -> wasmtime::Result<Result<(), WitRepoError>> {
        let repo = match self.triggers() {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(repo
            .set(&action, &id, Duration::from_millis(ttl_ms))
            .await
            .map(drop)
            .map_err(Into::into))
    }

    async fn delete(
        &mut self,
        action: String,
        id: String,
    ) -> wasmtime::Result<Result<bool, WitRepoError>> {
        let repo = match self.triggers() {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(repo.delete(&action, &id).await.map_err(Into::into))
    }
}
