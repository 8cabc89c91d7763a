//! Host functions of the `plugin` world, implemented on [`JobState`].
//!
//! Each takes the tenant from the Store data (the firing trigger), never from
//! the guest. Failures a plugin can handle come back as the WIT `repo-error`.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::bindings::WitRepoError;
use crate::bindings::symphony::plugin::{
    batch, context, generic, handler_state, log, pubsub, shared_state, table, trigger, types, user,
};
use crate::pools::Pools;
use crate::repo::{
    BatchRepo, GenericRepo, HandlerStateRepo, Publisher, RepoError, SharedStateRepo, TableRepo,
    TriggerRepo, UserRepo,
};

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

/// What every repository import returns: a trap (outer) or a WIT result.
type Ret<T> = wasmtime::Result<Result<T, WitRepoError>>;

fn ret<T>(r: Result<T, RepoError>) -> Ret<T> {
    Ok(r.map_err(Into::into))
}

fn parse_value(text: &str) -> Result<Value, RepoError> {
    serde_json::from_str(text).map_err(|e| RepoError::InvalidInput(format!("not JSON: {e}")))
}

fn parse_object(text: &str) -> Result<Map<String, Value>, RepoError> {
    match parse_value(text)? {
        Value::Object(map) => Ok(map),
        other => Err(RepoError::InvalidInput(format!(
            "expected a JSON object, got {}",
            kind(&other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn json(v: &Value) -> String {
    v.to_string()
}

fn json_map(m: Map<String, Value>) -> String {
    Value::Object(m).to_string()
}

impl JobState {
    /// The pools and the tenant, borrowed apart from the rest of the state
    /// (whose WASI context is not `Sync`) so host-call futures stay `Send`.
    fn scope(&self) -> (&Pools, &str) {
        (&self.pools, &self.job.tenant)
    }
}

impl trigger::Host for JobState {
    async fn set(&mut self, action: String, id: String, ttl_ms: u64) -> Ret<()> {
        {
            let (p, t) = self.scope();
            ret(async move {
                let repo = TriggerRepo::new(p, t)?;
                repo.set(&action, &id, Duration::from_millis(ttl_ms))
                    .await?;
                Ok(())
            }
            .await)
        }
    }

    async fn delete(&mut self, action: String, id: String) -> Ret<bool> {
        {
            let (p, t) = self.scope();
            ret(async move { TriggerRepo::new(p, t)?.delete(&action, &id).await }.await)
        }
    }

    async fn delete_all_by_identifier(&mut self, id: String) -> Ret<u32> {
        {
            let (p, t) = self.scope();
            ret(async move { TriggerRepo::new(p, t)?.delete_all_by_identifier(&id).await }.await)
        }
    }
}

/// The import functions shared by the four hash repositories, for a
/// scheme whose id is built from the listed string arguments.
macro_rules! hash_imports {
    ($iface:ident, $repo:ty, ($($arg:ident),+), $id:expr) => {
        impl $iface::Host for JobState {
            async fn get(&mut self, $($arg: String),+) -> Ret<Option<String>> {
                { let (p, t) = self.scope(); ret(async move {
                    let repo = <$repo>::new(p, t)?;
                    Ok(repo.get($id($(&$arg),+)).await?.map(json_map))
                }
                .await) }
            }

            async fn get_field(&mut self, $($arg: String),+, field: String) -> Ret<Option<String>> {
                { let (p, t) = self.scope(); ret(async move {
                    let repo = <$repo>::new(p, t)?;
                    Ok(repo.get_field($id($(&$arg),+), &field).await?.map(|v| json(&v)))
                }
                .await) }
            }

            async fn update_field(
                &mut self,
                $($arg: String),+,
                field: String,
                value: String,
                ttl_secs: Option<u32>,
            ) -> Ret<()> {
                { let (p, t) = self.scope(); ret(async move {
                    let value = parse_value(&value)?;
                    let repo = <$repo>::new(p, t)?;
                    repo.update_field($id($(&$arg),+), &field, &value, ttl_secs).await
                }
                .await) }
            }

            async fn delete(&mut self, $($arg: String),+) -> Ret<bool> {
                { let (p, t) = self.scope(); ret(async move { <$repo>::new(p, t)?.delete($id($(&$arg),+)).await }.await) }
            }

            async fn exists(&mut self, $($arg: String),+) -> Ret<bool> {
                { let (p, t) = self.scope(); ret(async move { <$repo>::new(p, t)?.exists($id($(&$arg),+)).await }.await) }
            }

            hash_imports!(@extra $iface, $repo, ($($arg),+), $id);
        }
    };
    (@upsert $repo:ty, ($($arg:ident),+), $id:expr) => {
        async fn upsert(&mut self, $($arg: String),+, data: String, ttl_secs: Option<u32>) -> Ret<()> {
            { let (p, t) = self.scope(); ret(async move {
                let data = parse_object(&data)?;
                let repo = <$repo>::new(p, t)?;
                repo.upsert($id($(&$arg),+), &data, ttl_secs).await
            }
            .await) }
        }
    };
    (@counters $repo:ty, ($($arg:ident),+), $id:expr) => {
        async fn increment_field(
            &mut self,
            $($arg: String),+,
            field: String,
            by: i64,
            ttl_secs: Option<u32>,
        ) -> Ret<i64> {
            { let (p, t) = self.scope(); ret(async move {
                let repo = <$repo>::new(p, t)?;
                repo.increment_field($id($(&$arg),+), &field, by, ttl_secs).await
            }
            .await) }
        }

        async fn append_to_list(
            &mut self,
            $($arg: String),+,
            field: String,
            value: String,
            ttl_secs: Option<u32>,
        ) -> Ret<()> {
            { let (p, t) = self.scope(); ret(async move {
                let value = parse_value(&value)?;
                let repo = <$repo>::new(p, t)?;
                repo.append_to_list($id($(&$arg),+), &field, &value, ttl_secs).await
            }
            .await) }
        }
    };
    (@delete_field $repo:ty, ($($arg:ident),+), $id:expr) => {
        async fn delete_field(&mut self, $($arg: String),+, field: String) -> Ret<bool> {
            { let (p, t) = self.scope(); ret(async move {
                <$repo>::new(p, t)?
                    .delete_field($id($(&$arg),+), &field)
                    .await
            }
            .await) }
        }
    };
    (@extra user, $repo:ty, ($($arg:ident),+), $id:expr) => {
        hash_imports!(@upsert $repo, ($($arg),+), $id);
        hash_imports!(@counters $repo, ($($arg),+), $id);
        hash_imports!(@delete_field $repo, ($($arg),+), $id);
        async fn find_by_field(&mut self, field: String, value: String) -> Ret<Option<String>> {
            { let (p, t) = self.scope(); ret(async move {
                let value = parse_value(&value)?;
                let repo = <$repo>::new(p, t)?;
                Ok(repo.find_by_field(&field, &value).await?.map(json_map))
            }
            .await) }
        }
    };
    (@extra handler_state, $repo:ty, ($($arg:ident),+), $id:expr) => {
        hash_imports!(@upsert $repo, ($($arg),+), $id);
        hash_imports!(@counters $repo, ($($arg),+), $id);
        async fn merge(
            &mut self,
            name: String,
            user_id: String,
            data: String,
            ttl_secs: Option<u32>,
        ) -> Ret<String> {
            { let (p, t) = self.scope(); ret(async move {
                let data = parse_object(&data)?;
                let repo = <$repo>::new(p, t)?;
                Ok(json_map(repo.merge(&name, &user_id, &data, ttl_secs).await?))
            }
            .await) }
        }
    };
    (@extra table, $repo:ty, ($($arg:ident),+), $id:expr) => {
        hash_imports!(@upsert $repo, ($($arg),+), $id);
        hash_imports!(@counters $repo, ($($arg),+), $id);
        async fn find_by_field(
            &mut self,
            table: String,
            field: String,
            value: String,
        ) -> Ret<Option<String>> {
            { let (p, t) = self.scope(); ret(async move {
                let value = parse_value(&value)?;
                let repo = <$repo>::new(p, t)?;
                Ok(repo.find_by_field(&table, &field, &value).await?.map(json_map))
            }
            .await) }
        }

        async fn delete_all_by_pkid(&mut self, pk: String) -> Ret<u32> {
            { let (p, t) = self.scope(); ret(async move { <$repo>::new(p, t)?.delete_all_by_pkid(&pk).await }.await) }
        }
    };
    (@extra shared_state, $repo:ty, ($($arg:ident),+), $id:expr) => {
        hash_imports!(@delete_field $repo, ($($arg),+), $id);
        async fn upsert(&mut self, state: String, user_id: String, data: String) -> Ret<()> {
            { let (p, t) = self.scope(); ret(async move {
                let data = parse_object(&data)?;
                let repo = <$repo>::new(p, t)?;
                repo.upsert_default_ttl(&state, &user_id, &data).await
            }
            .await) }
        }

        async fn list_states(&mut self, user_id: String) -> Ret<Vec<String>> {
            { let (p, t) = self.scope(); ret(async move { <$repo>::new(p, t)?.list_states(&user_id).await }.await) }
        }

        async fn clear_all_states(&mut self, user_id: String) -> Ret<u32> {
            { let (p, t) = self.scope(); ret(async move { <$repo>::new(p, t)?.clear_all_states(&user_id).await }.await) }
        }
    };
}

fn one(a: &str) -> &str {
    a
}

fn two<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    (a, b)
}

hash_imports!(user, UserRepo, (user_id), one);
hash_imports!(handler_state, HandlerStateRepo, (name, user_id), two);
hash_imports!(table, TableRepo, (table, pk), two);
hash_imports!(shared_state, SharedStateRepo, (state, user_id), two);

impl batch::Host for JobState {
    async fn enqueue(
        &mut self,
        service: String,
        entity: String,
        action: String,
        data: String,
    ) -> Ret<u64> {
        {
            let (p, t) = self.scope();
            ret(async move {
                let data = parse_value(&data)?;
                BatchRepo::new(p, t)?
                    .enqueue(&service, &entity, &action, &data)
                    .await
            }
            .await)
        }
    }

    async fn get_chunk(
        &mut self,
        service: String,
        entity: String,
        action: String,
        start: i64,
        stop: i64,
    ) -> Ret<Vec<String>> {
        {
            let (p, t) = self.scope();
            ret(async move {
                let items = BatchRepo::new(p, t)?
                    .get_chunk(&service, &entity, &action, start, stop)
                    .await?;
                Ok(items.iter().map(json).collect())
            }
            .await)
        }
    }

    async fn trim(
        &mut self,
        service: String,
        entity: String,
        action: String,
        start: i64,
        stop: i64,
    ) -> Ret<()> {
        {
            let (p, t) = self.scope();
            ret(async move {
                BatchRepo::new(p, t)?
                    .trim(&service, &entity, &action, start, stop)
                    .await
            }
            .await)
        }
    }

    async fn length(&mut self, service: String, entity: String, action: String) -> Ret<u64> {
        {
            let (p, t) = self.scope();
            ret(async move {
                BatchRepo::new(p, t)?
                    .length(&service, &entity, &action)
                    .await
            }
            .await)
        }
    }

    async fn is_pending(&mut self, service: String) -> Ret<bool> {
        {
            let (p, t) = self.scope();
            ret(async move { BatchRepo::new(p, t)?.is_pending(&service).await }.await)
        }
    }

    async fn remove_from_pending(&mut self, service: String) -> Ret<bool> {
        {
            let (p, t) = self.scope();
            ret(async move { BatchRepo::new(p, t)?.remove_from_pending(&service).await }.await)
        }
    }
}

impl generic::Host for JobState {
    async fn set(&mut self, key: String, value: String, ttl_secs: Option<u32>) -> Ret<()> {
        {
            let (p, t) = self.scope();
            ret(async move {
                let value = parse_value(&value)?;
                GenericRepo::new(p, t)?.set(&key, &value, ttl_secs).await
            }
            .await)
        }
    }

    async fn get(&mut self, key: String) -> Ret<Option<String>> {
        {
            let (p, t) = self.scope();
            ret(async move { Ok(GenericRepo::new(p, t)?.get(&key).await?.map(|v| json(&v))) }.await)
        }
    }

    async fn delete(&mut self, key: String) -> Ret<bool> {
        {
            let (p, t) = self.scope();
            ret(async move { GenericRepo::new(p, t)?.delete(&key).await }.await)
        }
    }
}

impl pubsub::Host for JobState {
    async fn publish(&mut self, channel: String, message: String) -> Ret<u32> {
        {
            let (p, t) = self.scope();
            ret(async move {
                let message = parse_value(&message)?;
                Publisher::new(p, t)?.publish(&channel, &message).await
            }
            .await)
        }
    }
}
