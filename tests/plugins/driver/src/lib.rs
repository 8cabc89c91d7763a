//! Test plugin that runs a script of host calls, so the integration tests
//! can drive every repository import through a real component.
//!
//! On action `drive` with id `N`, it reads the generic value `script:N` (a
//! JSON array of calls, each `[name, args...]`), runs the calls in order and
//! stores `result:N` (60 s): a JSON array with, per call, `{"ok": value}` or
//! `{"err": {"kind": ..., "message": ...}}`. Arguments for `json` parameters
//! are given as JSON values (the driver turns them into text); TTLs are a
//! number or null. `["generic.set-big", key, n]` stores a string of `n`
//! bytes built inside the plugin (to test size limits without a big script).

use serde_json::{Value, json};
use symphony_sdk::{
    Error, Expiry, Plugin, RepoError, Result, batch, generic, handler_state, pubsub, shared_state,
    table, trigger, user,
};

struct Driver;

impl Plugin for Driver {
    fn on_expire(e: Expiry) -> Result<()> {
        let script = generic::get(&format!("script:{}", e.id))?
            .ok_or_else(|| Error::msg(format!("no script:{}", e.id)))?;
        let calls: Vec<Vec<Value>> = symphony_sdk::json::from(&script)?;
        let results: Vec<Value> = calls.iter().map(|c| run(c)).collect::<Result<_>>()?;
        generic::set(
            &format!("result:{}", e.id),
            &Value::Array(results).to_string(),
            Some(60),
        )?;
        Ok(())
    }
}

struct Args<'a>(&'a [Value]);

impl Args<'_> {
    fn s(&self, i: usize) -> Result<&str> {
        self.0
            .get(i)
            .and_then(Value::as_str)
            .ok_or_else(|| Error::msg(format!("argument {i} must be a string")))
    }
    fn json(&self, i: usize) -> Result<String> {
        Ok(self.0.get(i).cloned().unwrap_or(Value::Null).to_string())
    }
    /// A `json` argument given as raw text (to test invalid JSON).
    fn raw(&self, i: usize) -> Result<String> {
        self.s(i).map(str::to_owned)
    }
    fn ttl(&self, i: usize) -> Option<u32> {
        self.0.get(i).and_then(Value::as_u64).map(|n| n as u32)
    }
    fn int(&self, i: usize) -> Result<i64> {
        self.0
            .get(i)
            .and_then(Value::as_i64)
            .ok_or_else(|| Error::msg(format!("argument {i} must be an integer")))
    }
}

fn parsed(text: Option<String>) -> Value {
    text.map_or(Value::Null, |t| {
        serde_json::from_str(&t).unwrap_or(Value::String(t))
    })
}

fn outcome<T>(r: std::result::Result<T, RepoError>, ok: impl FnOnce(T) -> Value) -> Value {
    match r {
        Ok(v) => json!({ "ok": ok(v) }),
        Err(e) => {
            let (kind, message) = match e {
                RepoError::NotFound => ("not-found", String::new()),
                RepoError::InvalidInput(m) => ("invalid-input", m),
                RepoError::Unavailable(m) => ("unavailable", m),
                RepoError::Denied(m) => ("denied", m),
            };
            json!({ "err": { "kind": kind, "message": message } })
        }
    }
}

fn unit(_: ()) -> Value {
    Value::Null
}

fn run(call: &[Value]) -> Result<Value> {
    let name = call
        .first()
        .and_then(Value::as_str)
        .ok_or_else(|| Error::msg("a call starts with its name"))?;
    let a = Args(&call[1..]);
    Ok(match name {
        // `["timed", [call...]]`: runs the inner call and reports how long
        // it took in the guest, `{"us": N, "result": ...}`.
        "timed" => {
            let inner = call
                .get(1)
                .and_then(Value::as_array)
                .ok_or_else(|| Error::msg("timed takes a call"))?;
            let start = std::time::Instant::now();
            let result = run(inner)?;
            json!({ "us": start.elapsed().as_micros() as u64, "result": result })
        }
        "user.get" => outcome(user::get(a.s(0)?), parsed),
        "user.upsert" => outcome(user::upsert(a.s(0)?, &a.json(1)?, a.ttl(2)), unit),
        "user.upsert-raw" => outcome(user::upsert(a.s(0)?, &a.raw(1)?, a.ttl(2)), unit),
        "user.get-field" => outcome(user::get_field(a.s(0)?, a.s(1)?), parsed),
        "user.update-field" => outcome(
            user::update_field(a.s(0)?, a.s(1)?, &a.json(2)?, a.ttl(3)),
            unit,
        ),
        "user.increment-field" => outcome(
            user::increment_field(a.s(0)?, a.s(1)?, a.int(2)?, a.ttl(3)),
            |n| json!(n),
        ),
        "user.append-to-list" => outcome(
            user::append_to_list(a.s(0)?, a.s(1)?, &a.json(2)?, a.ttl(3)),
            unit,
        ),
        "user.delete-field" => outcome(user::delete_field(a.s(0)?, a.s(1)?), |b| json!(b)),
        "user.delete" => outcome(user::delete(a.s(0)?), |b| json!(b)),
        "user.exists" => outcome(user::exists(a.s(0)?), |b| json!(b)),
        "user.find-by-field" => outcome(user::find_by_field(a.s(0)?, &a.json(1)?), parsed),

        "state.get" => outcome(handler_state::get(a.s(0)?, a.s(1)?), parsed),
        "state.upsert" => outcome(
            handler_state::upsert(a.s(0)?, a.s(1)?, &a.json(2)?, a.ttl(3)),
            unit,
        ),
        "state.get-field" => outcome(handler_state::get_field(a.s(0)?, a.s(1)?, a.s(2)?), parsed),
        "state.update-field" => outcome(
            handler_state::update_field(a.s(0)?, a.s(1)?, a.s(2)?, &a.json(3)?, a.ttl(4)),
            unit,
        ),
        "state.increment-field" => outcome(
            handler_state::increment_field(a.s(0)?, a.s(1)?, a.s(2)?, a.int(3)?, a.ttl(4)),
            |n| json!(n),
        ),
        "state.append-to-list" => outcome(
            handler_state::append_to_list(a.s(0)?, a.s(1)?, a.s(2)?, &a.json(3)?, a.ttl(4)),
            unit,
        ),
        "state.delete" => outcome(handler_state::delete(a.s(0)?, a.s(1)?), |b| json!(b)),
        "state.exists" => outcome(handler_state::exists(a.s(0)?, a.s(1)?), |b| json!(b)),
        "state.merge" => outcome(
            handler_state::merge(a.s(0)?, a.s(1)?, &a.json(2)?, a.ttl(3)),
            |t| parsed(Some(t)),
        ),

        "table.get" => outcome(table::get(a.s(0)?, a.s(1)?), parsed),
        "table.upsert" => outcome(table::upsert(a.s(0)?, a.s(1)?, &a.json(2)?, a.ttl(3)), unit),
        "table.get-field" => outcome(table::get_field(a.s(0)?, a.s(1)?, a.s(2)?), parsed),
        "table.update-field" => outcome(
            table::update_field(a.s(0)?, a.s(1)?, a.s(2)?, &a.json(3)?, a.ttl(4)),
            unit,
        ),
        "table.increment-field" => outcome(
            table::increment_field(a.s(0)?, a.s(1)?, a.s(2)?, a.int(3)?, a.ttl(4)),
            |n| json!(n),
        ),
        "table.append-to-list" => outcome(
            table::append_to_list(a.s(0)?, a.s(1)?, a.s(2)?, &a.json(3)?, a.ttl(4)),
            unit,
        ),
        "table.delete" => outcome(table::delete(a.s(0)?, a.s(1)?), |b| json!(b)),
        "table.exists" => outcome(table::exists(a.s(0)?, a.s(1)?), |b| json!(b)),
        "table.find-by-field" => {
            outcome(table::find_by_field(a.s(0)?, a.s(1)?, &a.json(2)?), parsed)
        }
        "table.delete-all-by-pkid" => outcome(table::delete_all_by_pkid(a.s(0)?), |n| json!(n)),

        "shared.get" => outcome(shared_state::get(a.s(0)?, a.s(1)?), parsed),
        "shared.upsert" => outcome(shared_state::upsert(a.s(0)?, a.s(1)?, &a.json(2)?), unit),
        "shared.get-field" => outcome(shared_state::get_field(a.s(0)?, a.s(1)?, a.s(2)?), parsed),
        "shared.update-field" => outcome(
            shared_state::update_field(a.s(0)?, a.s(1)?, a.s(2)?, &a.json(3)?, a.ttl(4)),
            unit,
        ),
        "shared.delete-field" => {
            outcome(shared_state::delete_field(a.s(0)?, a.s(1)?, a.s(2)?), |b| {
                json!(b)
            })
        }
        "shared.delete" => outcome(shared_state::delete(a.s(0)?, a.s(1)?), |b| json!(b)),
        "shared.exists" => outcome(shared_state::exists(a.s(0)?, a.s(1)?), |b| json!(b)),
        "shared.list-states" => outcome(shared_state::list_states(a.s(0)?), |v| json!(v)),
        "shared.clear-all-states" => outcome(shared_state::clear_all_states(a.s(0)?), |n| json!(n)),

        "batch.enqueue" => outcome(
            batch::enqueue(a.s(0)?, a.s(1)?, a.s(2)?, &a.json(3)?),
            |n| json!(n),
        ),
        "batch.get-chunk" => outcome(
            batch::get_chunk(a.s(0)?, a.s(1)?, a.s(2)?, a.int(3)?, a.int(4)?),
            |items| Value::Array(items.into_iter().map(|t| parsed(Some(t))).collect()),
        ),
        "batch.trim" => outcome(
            batch::trim(a.s(0)?, a.s(1)?, a.s(2)?, a.int(3)?, a.int(4)?),
            unit,
        ),
        "batch.length" => outcome(batch::length(a.s(0)?, a.s(1)?, a.s(2)?), |n| json!(n)),
        "batch.is-pending" => outcome(batch::is_pending(a.s(0)?), |b| json!(b)),
        "batch.remove-from-pending" => outcome(batch::remove_from_pending(a.s(0)?), |b| json!(b)),

        "generic.set" => outcome(generic::set(a.s(0)?, &a.json(1)?, a.ttl(2)), unit),
        "generic.get" => outcome(generic::get(a.s(0)?), parsed),
        "generic.set-big" => {
            let big = Value::String("x".repeat(a.int(1)? as usize)).to_string();
            outcome(generic::set(a.s(0)?, &big, None), unit)
        }
        "generic.delete" => outcome(generic::delete(a.s(0)?), |b| json!(b)),

        "trigger.set" => outcome(
            symphony_sdk::bindings::symphony::plugin::trigger::set(
                a.s(0)?,
                a.s(1)?,
                a.int(2)? as u64,
            ),
            unit,
        ),
        "trigger.delete" => match trigger::delete(a.s(0)?, a.s(1)?) {
            Ok(b) => json!({ "ok": b }),
            Err(e) => json!({ "err": { "kind": "sdk", "message": e.to_string() } }),
        },
        "trigger.delete-all-by-identifier" => match trigger::delete_all_by_identifier(a.s(0)?) {
            Ok(n) => json!({ "ok": n }),
            Err(e) => json!({ "err": { "kind": "sdk", "message": e.to_string() } }),
        },

        "pubsub.publish" => outcome(pubsub::publish(a.s(0)?, &a.json(1)?), |n| json!(n)),
        other => return Err(Error::msg(format!("unknown call {other:?}"))),
    })
}

symphony_sdk::export_plugin!(Driver);
