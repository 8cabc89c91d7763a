//! Host functions of the `plugin` world, implemented on [`JobState`].
//!
//! Each takes the tenant from the Store data (the firing trigger), never from
//! the guest. Every call is admitted first ([`JobState::admit`]): it is
//! counted against `max_host_calls` (past it, the invocation traps with
//! outcome `limit`), its repository grant is checked (a missing one is the
//! WIT error `denied`, naming the grant), and its input must fit
//! `max_value_bytes`, as must its output. Failures a plugin can handle come
//! back as the WIT `repo-error`, never as a trap.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::bindings::WitRepoError;
use crate::bindings::symphony::plugin::{
    batch, context, generic, handler_state, log, pubsub, shared_state, table, trigger, types, user,
};
use crate::policy::{Access, Repo};
use crate::repo::{
    BatchRepo, GenericRepo, HandlerStateRepo, Publisher, RepoError, SharedStateRepo, TableRepo,
    TriggerRepo, UserRepo,
};

use super::JobState;

impl types::Host for JobState {}

impl log::Host for JobState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.count_call()?;
        let message = crate::text::cap(message);
        // The job's fields come from its span (see `dispatch`).
        macro_rules! emit {
            ($lvl:ident) => {
                tracing::$lvl!(target: "symphony::plugin", event = "plugin_log", "{message}")
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
        self.count_call()?;
        Ok(self.job.tenant.clone())
    }
}

/// What every repository import returns: a trap (outer) or a WIT result.
type Ret<T> = wasmtime::Result<Result<T, WitRepoError>>;

/// Bytes a result carries back into the guest.
trait OutSize {
    fn out_size(&self) -> usize {
        0
    }
}
impl OutSize for () {}
impl OutSize for bool {}
impl OutSize for u32 {}
impl OutSize for u64 {}
impl OutSize for i64 {}
impl OutSize for String {
    fn out_size(&self) -> usize {
        self.len()
    }
}
impl OutSize for Option<String> {
    fn out_size(&self) -> usize {
        self.as_ref().map_or(0, String::len)
    }
}
impl OutSize for Vec<String> {
    fn out_size(&self) -> usize {
        self.iter().map(String::len).sum()
    }
}

/// The WIT result of a repository call whose output must fit `max` bytes.
fn ret<T: OutSize>(max: usize, r: Result<T, RepoError>) -> Ret<T> {
    Ok(match r {
        Ok(v) if v.out_size() > max => Err(WitRepoError::InvalidInput(format!(
            "the result is {} bytes, over this plugin's max_value_kib ({} bytes)",
            v.out_size(),
            max
        ))),
        other => other.map_err(Into::into),
    })
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

/// Admits a repository call (count, grant, input size), runs `$body` with
/// the pools and tenant bound to `$p` and `$t`, and checks the output size.
/// `grow` marks a call that may add to what the tenant stores in Redis: it
/// is charged to the tenant's memory budget first (`crate::budget`).
macro_rules! call {
    ($self:ident, $repo:ident, $access:ident, [$($input:expr),*], |$p:ident, $t:ident| $body:expr) => {
        call!($self, $repo, $access, false, [$($input),*], |$p, $t| $body)
    };
    ($self:ident, $repo:ident, $access:ident, grow, [$($input:expr),*], |$p:ident, $t:ident| $body:expr) => {
        call!($self, $repo, $access, true, [$($input),*], |$p, $t| $body)
    };
    ($self:ident, $repo:ident, $access:ident, $grow:literal, [$($input:expr),*], |$p:ident, $t:ident| $body:expr) => {{
        let bytes = 0usize $(+ $input.len())*;
        let (pools, tenant, max) = match $self.admit(Repo::$repo, Access::$access, bytes)? {
            Ok((p, t, max)) => (p.clone(), t.to_owned(), max),
            Err(e) => return Ok(Err(e)),
        };
        if $grow {
            let cost = || crate::budget::write_cost(&[$(AsRef::<str>::as_ref(&$input)),*]);
            if let Err(e) = $self.quotas.store(&tenant, cost) {
                return Ok(Err(e.into()));
            }
        }
        // At the tenant's Redis-call quota, the call waits for its token.
        $self.quotas.redis_call(&tenant).await;
        // From the guest threads, on the control runtime.
        let control = pools
            .control()
            .filter(|_| super::on_guest_thread())
            .cloned();
        // SCAN pages after a call's first are charged as host calls.
        let meter = crate::repo::meter::Meter::new(
            $self.quotas.clone(),
            tenant.clone(),
            $self.calls_left(),
        );
        // Replies are capped in Redis, before they reach the host.
        let call = crate::repo::meter::with_meter(
            meter.clone(),
            crate::repo::capped::with_cap(max, async move {
                let ($p, $t) = (&pools, tenant.as_str());
                let result: Result<_, RepoError> = $body;
                result
            }),
        );
        // On the control runtime, where the connections' I/O lives: where
        // the job runs until its first epoch tick, or spawned there from
        // the guest threads.
        let result = match control {
            Some(handle) => handle.spawn(call).await.unwrap_or_else(|e| {
                Err(RepoError::Unavailable(format!("the Redis call's task failed: {e}")))
            }),
            None => call.await,
        };
        $self.charge_pages(meter.used())?;
        ret(max, result)
    }};
}

impl trigger::Host for JobState {
    async fn set(&mut self, action: String, id: String, ttl_ms: u64) -> Ret<()> {
        let quotas = self.quotas.clone();
        call!(self, Trigger, Write, grow, [action, id], |p, t| {
            let cap = quotas.of(t).max_pending_triggers;
            let repo = TriggerRepo::new(p, t)?.with_pending_cap(cap);
            if let Some(cap) = cap
                && !repo.enforces_pending_cap()
            {
                quotas
                    .admit_pending(t, cap, || repo.pending(), || repo.is_pending(&action, &id))
                    .await
                    .inspect_err(|e| quotas.note_refused(t, e))?;
            }
            repo.set(&action, &id, Duration::from_millis(ttl_ms))
                .await
                .map(drop)
                .inspect_err(|e| quotas.note_refused(t, e))
        })
    }

    async fn delete(&mut self, action: String, id: String) -> Ret<bool> {
        let quotas = self.quotas.clone();
        call!(self, Trigger, Write, [action, id], |p, t| {
            let deleted = TriggerRepo::new(p, t)?.delete(&action, &id).await?;
            if deleted {
                quotas.note_cancelled(t).await;
            }
            Ok(deleted)
        })
    }

    async fn delete_all_by_identifier(&mut self, id: String) -> Ret<u32> {
        call!(self, Trigger, Write, [id], |p, t| {
            TriggerRepo::new(p, t)?.delete_all_by_identifier(&id).await
        })
    }
}

/// The import functions shared by the four hash repositories, for a
/// scheme whose id is built from the listed string arguments.
macro_rules! hash_imports {
    ($iface:ident, $cap:ident, $repo:ty, ($($arg:ident),+), $id:expr) => {
        impl $iface::Host for JobState {
            async fn get(&mut self, $($arg: String),+) -> Ret<Option<String>> {
                call!(self, $cap, Read, [$($arg),+], |p, t| {
                    Ok(<$repo>::new(p, t)?.get($id($(&$arg),+)).await?.map(json_map))
                })
            }

            async fn get_field(&mut self, $($arg: String),+, field: String) -> Ret<Option<String>> {
                call!(self, $cap, Read, [$($arg),+, field], |p, t| {
                    Ok(<$repo>::new(p, t)?
                        .get_field($id($(&$arg),+), &field)
                        .await?
                        .map(|v| json(&v)))
                })
            }

            async fn update_field(
                &mut self,
                $($arg: String),+,
                field: String,
                value: String,
                ttl_secs: Option<u32>,
            ) -> Ret<()> {
                call!(self, $cap, Write, grow, [$($arg),+, field, value], |p, t| {
                    let value = parse_value(&value)?;
                    <$repo>::new(p, t)?
                        .update_field($id($(&$arg),+), &field, &value, ttl_secs)
                        .await
                })
            }

            async fn delete(&mut self, $($arg: String),+) -> Ret<bool> {
                call!(self, $cap, Write, [$($arg),+], |p, t| {
                    <$repo>::new(p, t)?.delete($id($(&$arg),+)).await
                })
            }

            async fn exists(&mut self, $($arg: String),+) -> Ret<bool> {
                call!(self, $cap, Read, [$($arg),+], |p, t| {
                    <$repo>::new(p, t)?.exists($id($(&$arg),+)).await
                })
            }

            hash_imports!(@extra $iface, $cap, $repo, ($($arg),+), $id);
        }
    };
    (@upsert $cap:ident, $repo:ty, ($($arg:ident),+), $id:expr) => {
        async fn upsert(&mut self, $($arg: String),+, data: String, ttl_secs: Option<u32>) -> Ret<()> {
            call!(self, $cap, Write, grow, [$($arg),+, data], |p, t| {
                let data = parse_object(&data)?;
                <$repo>::new(p, t)?.upsert($id($(&$arg),+), &data, ttl_secs).await
            })
        }
    };
    (@counters $cap:ident, $repo:ty, ($($arg:ident),+), $id:expr) => {
        async fn increment_field(
            &mut self,
            $($arg: String),+,
            field: String,
            by: i64,
            ttl_secs: Option<u32>,
        ) -> Ret<i64> {
            call!(self, $cap, Write, grow, [$($arg),+, field], |p, t| {
                <$repo>::new(p, t)?
                    .increment_field($id($(&$arg),+), &field, by, ttl_secs)
                    .await
            })
        }

        async fn append_to_list(
            &mut self,
            $($arg: String),+,
            field: String,
            value: String,
            ttl_secs: Option<u32>,
        ) -> Ret<()> {
            call!(self, $cap, Write, grow, [$($arg),+, field, value], |p, t| {
                let value = parse_value(&value)?;
                <$repo>::new(p, t)?
                    .append_to_list($id($(&$arg),+), &field, &value, ttl_secs)
                    .await
            })
        }
    };
    (@delete_field $cap:ident, $repo:ty, ($($arg:ident),+), $id:expr) => {
        async fn delete_field(&mut self, $($arg: String),+, field: String) -> Ret<bool> {
            call!(self, $cap, Write, [$($arg),+, field], |p, t| {
                <$repo>::new(p, t)?.delete_field($id($(&$arg),+), &field).await
            })
        }
    };
    (@extra user, $cap:ident, $repo:ty, ($($arg:ident),+), $id:expr) => {
        hash_imports!(@upsert $cap, $repo, ($($arg),+), $id);
        hash_imports!(@counters $cap, $repo, ($($arg),+), $id);
        hash_imports!(@delete_field $cap, $repo, ($($arg),+), $id);
        async fn find_by_field(&mut self, field: String, value: String) -> Ret<Option<String>> {
            call!(self, $cap, Read, [field, value], |p, t| {
                let value = parse_value(&value)?;
                Ok(<$repo>::new(p, t)?.find_by_field(&field, &value).await?.map(json_map))
            })
        }
    };
    (@extra handler_state, $cap:ident, $repo:ty, ($($arg:ident),+), $id:expr) => {
        hash_imports!(@upsert $cap, $repo, ($($arg),+), $id);
        hash_imports!(@counters $cap, $repo, ($($arg),+), $id);
        async fn merge(
            &mut self,
            name: String,
            user_id: String,
            data: String,
            ttl_secs: Option<u32>,
        ) -> Ret<String> {
            call!(self, $cap, Write, grow, [name, user_id, data], |p, t| {
                let data = parse_object(&data)?;
                Ok(json_map(<$repo>::new(p, t)?.merge(&name, &user_id, &data, ttl_secs).await?))
            })
        }
    };
    (@extra table, $cap:ident, $repo:ty, ($($arg:ident),+), $id:expr) => {
        hash_imports!(@upsert $cap, $repo, ($($arg),+), $id);
        hash_imports!(@counters $cap, $repo, ($($arg),+), $id);
        async fn find_by_field(
            &mut self,
            table: String,
            field: String,
            value: String,
        ) -> Ret<Option<String>> {
            call!(self, $cap, Read, [table, field, value], |p, t| {
                let value = parse_value(&value)?;
                Ok(<$repo>::new(p, t)?
                    .find_by_field(&table, &field, &value)
                    .await?
                    .map(json_map))
            })
        }

        async fn delete_all_by_pkid(&mut self, pk: String) -> Ret<u32> {
            call!(self, $cap, Write, [pk], |p, t| {
                <$repo>::new(p, t)?.delete_all_by_pkid(&pk).await
            })
        }
    };
    (@extra shared_state, $cap:ident, $repo:ty, ($($arg:ident),+), $id:expr) => {
        hash_imports!(@delete_field $cap, $repo, ($($arg),+), $id);
        async fn upsert(&mut self, state: String, user_id: String, data: String) -> Ret<()> {
            call!(self, $cap, Write, [state, user_id, data], |p, t| {
                let data = parse_object(&data)?;
                <$repo>::new(p, t)?.upsert_default_ttl(&state, &user_id, &data).await
            })
        }

        async fn list_states(&mut self, user_id: String) -> Ret<Vec<String>> {
            call!(self, $cap, Read, [user_id], |p, t| {
                <$repo>::new(p, t)?.list_states(&user_id).await
            })
        }

        async fn clear_all_states(&mut self, user_id: String) -> Ret<u32> {
            call!(self, $cap, Write, [user_id], |p, t| {
                <$repo>::new(p, t)?.clear_all_states(&user_id).await
            })
        }
    };
}

fn one(a: &str) -> &str {
    a
}

fn two<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    (a, b)
}

hash_imports!(user, User, UserRepo, (user_id), one);
hash_imports!(
    handler_state,
    HandlerState,
    HandlerStateRepo,
    (name, user_id),
    two
);
hash_imports!(table, Table, TableRepo, (table, pk), two);
hash_imports!(
    shared_state,
    SharedState,
    SharedStateRepo,
    (state, user_id),
    two
);

impl batch::Host for JobState {
    async fn enqueue(
        &mut self,
        service: String,
        entity: String,
        action: String,
        data: String,
    ) -> Ret<u64> {
        call!(
            self,
            Batch,
            Write,
            grow,
            [service, entity, action, data],
            |p, t| {
                let data = parse_value(&data)?;
                BatchRepo::new(p, t)?
                    .enqueue(&service, &entity, &action, &data)
                    .await
            }
        )
    }

    async fn get_chunk(
        &mut self,
        service: String,
        entity: String,
        action: String,
        start: i64,
        stop: i64,
    ) -> Ret<Vec<String>> {
        call!(self, Batch, Read, [service, entity, action], |p, t| {
            let items = BatchRepo::new(p, t)?
                .get_chunk(&service, &entity, &action, start, stop)
                .await?;
            Ok(items.iter().map(json).collect())
        })
    }

    async fn trim(
        &mut self,
        service: String,
        entity: String,
        action: String,
        start: i64,
        stop: i64,
    ) -> Ret<()> {
        call!(self, Batch, Write, [service, entity, action], |p, t| {
            BatchRepo::new(p, t)?
                .trim(&service, &entity, &action, start, stop)
                .await
        })
    }

    async fn length(&mut self, service: String, entity: String, action: String) -> Ret<u64> {
        call!(self, Batch, Read, [service, entity, action], |p, t| {
            BatchRepo::new(p, t)?
                .length(&service, &entity, &action)
                .await
        })
    }

    async fn is_pending(&mut self, service: String) -> Ret<bool> {
        call!(self, Batch, Read, [service], |p, t| {
            BatchRepo::new(p, t)?.is_pending(&service).await
        })
    }

    async fn remove_from_pending(&mut self, service: String) -> Ret<bool> {
        call!(self, Batch, Write, [service], |p, t| {
            BatchRepo::new(p, t)?.remove_from_pending(&service).await
        })
    }
}

impl generic::Host for JobState {
    async fn set(&mut self, key: String, value: String, ttl_secs: Option<u32>) -> Ret<()> {
        call!(self, Generic, Write, grow, [key, value], |p, t| {
            let value = parse_value(&value)?;
            GenericRepo::new(p, t)?.set(&key, &value, ttl_secs).await
        })
    }

    async fn get(&mut self, key: String) -> Ret<Option<String>> {
        call!(self, Generic, Read, [key], |p, t| {
            Ok(GenericRepo::new(p, t)?.get(&key).await?.map(|v| json(&v)))
        })
    }

    async fn delete(&mut self, key: String) -> Ret<bool> {
        call!(self, Generic, Write, [key], |p, t| {
            GenericRepo::new(p, t)?.delete(&key).await
        })
    }
}

impl pubsub::Host for JobState {
    async fn publish(&mut self, channel: String, message: String) -> Ret<u32> {
        call!(self, Pubsub, Write, [channel, message], |p, t| {
            let message = parse_value(&message)?;
            Publisher::new(p, t)?.publish(&channel, &message).await
        })
    }
}
