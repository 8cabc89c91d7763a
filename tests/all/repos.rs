//! Every repository import, driven through the `driver` test plugin against
//! a real redis-server, with the stored bytes checked in Redis.

use std::collections::HashMap;
use std::time::Duration;

use redis::Commands;
use serde_json::{Value, json};

use crate::support::*;

/// A host running the driver plugin, and a way to run scripts through it.
pub struct Driver<R: Backend = RedisServer> {
    pub redis: R,
    pub host: Host,
    next: u32,
}

impl Driver<RedisServer> {
    pub fn start() -> Driver {
        Self::start_with("")
    }

    pub fn start_with(extra: &str) -> Driver {
        let redis = RedisServer::start();
        let host = Host::start_with(&redis, &plugin_entry("driver", "driver", &["drive"]), extra);
        Driver {
            redis,
            host,
            next: 0,
        }
    }

    /// A driver with its own `[[plugin]]` entry (which must own `drive`).
    pub fn start_with_plugin(entry: &str) -> Driver {
        let redis = RedisServer::start();
        let host = Host::start(&redis, entry);
        Driver {
            redis,
            host,
            next: 0,
        }
    }
}

impl Driver<Box<dyn Backend>> {
    /// A driver on a fresh server, or on a fresh cluster.
    pub fn on(cluster: bool, extra: &str) -> Self {
        let redis = start_backend(cluster);
        let host = Host::start_with(&redis, &plugin_entry("driver", "driver", &["drive"]), extra);
        Driver {
            redis,
            host,
            next: 0,
        }
    }
}

impl<R: Backend> Driver<R> {
    /// Runs `calls` in the plugin for `tenant`; returns one result per call.
    pub fn run(&mut self, tenant: &str, calls: Value) -> Vec<Value> {
        let (n, e) = self.dispatch(tenant, &calls);
        assert_eq!(e["outcome"], "ok", "{e}");
        let raw: String = self
            .redis
            .db(15)
            .get(format!("{tenant}:result:{n}"))
            .unwrap();
        let results: Vec<Value> = serde_json::from_str(&raw).unwrap();
        results
    }

    /// Stores `calls` as the script of a new run for `tenant`, fires it
    /// and returns its number and its dispatch line, whatever the outcome.
    pub fn dispatch(&mut self, tenant: &str, calls: &Value) -> (u32, Value) {
        self.next += 1;
        let n = self.next;
        let _: () = self
            .redis
            .db(15)
            .set(format!("{tenant}:script:{n}"), calls.to_string())
            .unwrap();
        set_expiring(
            &mut self.redis.db(8),
            format!("{tenant}:EXPTRIGGER:drive:{n}").as_bytes(),
            1,
        );
        let id = n.to_string();
        let e = self
            .host
            .wait_for("the driver run", Duration::from_secs(10), |e| {
                is_dispatch(e, "drive", &id) && e["tenant"] == tenant
            });
        (n, e)
    }

    /// Runs one call and returns its `ok` value (panics on an error result).
    pub fn ok(&mut self, tenant: &str, call: Value) -> Value {
        let r = self.run(tenant, json!([call.clone()])).remove(0);
        match r.get("ok") {
            Some(v) => v.clone(),
            None => panic!("{call} failed: {r}"),
        }
    }

    /// Runs one call that must fail; returns (kind, message).
    pub fn err(&mut self, tenant: &str, call: Value) -> (String, String) {
        let r = self.run(tenant, json!([call.clone()])).remove(0);
        let e = r
            .get("err")
            .unwrap_or_else(|| panic!("{call} should fail: {r}"));
        (
            e["kind"].as_str().unwrap().to_owned(),
            e["message"].as_str().unwrap().to_owned(),
        )
    }

    pub fn hgetall(&self, db: u32, key: &str) -> HashMap<String, String> {
        self.redis.db(db).hgetall(key).unwrap()
    }

    pub fn ttl(&self, db: u32, key: &str) -> i64 {
        self.redis.db(db).ttl(key).unwrap()
    }
}

fn user_records(cluster: bool) {
    let mut d = Driver::on(cluster, "");
    let t = "acme";
    d.ok(
        t,
        json!(["user.upsert", "u:1", {"name": "Ann", "age": 30, "vip": true, "score": 1.5,
               "tags": ["a", "b"], "meta": {"k": "ü"}, "none": null}, 120]),
    );
    // Stored exactly as the Python library stores it, at mimeiapify's key.
    let raw = d.hgetall(11, "acme:user:u:1");
    assert_eq!(raw["name"], "Ann");
    assert_eq!(raw["age"], "30");
    assert_eq!(raw["vip"], "1");
    assert_eq!(raw["score"], "1.5");
    assert_eq!(raw["tags"], r#"["a", "b"]"#);
    assert_eq!(raw["meta"], r#"{"k": "ü"}"#);
    assert_eq!(raw["none"], "null");
    assert!((100..=120).contains(&d.ttl(11, "acme:user:u:1")));

    let rec = d.ok(t, json!(["user.get", "u:1"]));
    assert_eq!(
        rec,
        json!({"name": "Ann", "age": 30, "vip": true, "score": 1.5, "tags": ["a", "b"],
               "meta": {"k": "ü"}, "none": null})
    );
    assert_eq!(d.ok(t, json!(["user.get-field", "u:1", "age"])), json!(30));
    assert_eq!(
        d.ok(t, json!(["user.get-field", "u:1", "nope"])),
        json!(null)
    );
    d.ok(
        t,
        json!(["user.update-field", "u:1", "city", "Paris", null]),
    );
    assert_eq!(d.hgetall(11, "acme:user:u:1")["city"], "Paris");
    // No TTL given: the default (86400 s) is set again, as mimeiapify does.
    assert!(d.ttl(11, "acme:user:u:1") > 86_000);
    assert_eq!(
        d.ok(t, json!(["user.increment-field", "u:1", "visits", 5, null])),
        json!(5)
    );
    assert_eq!(
        d.ok(
            t,
            json!(["user.increment-field", "u:1", "visits", -2, null])
        ),
        json!(3)
    );
    d.ok(
        t,
        json!(["user.append-to-list", "u:1", "tags", {"c": 1}, null]),
    );
    assert_eq!(
        d.hgetall(11, "acme:user:u:1")["tags"],
        r#"["a", "b", {"c": 1}]"#
    );
    d.ok(t, json!(["user.append-to-list", "u:1", "fresh", "x", null]));
    assert_eq!(d.hgetall(11, "acme:user:u:1")["fresh"], r#"["x"]"#);
    assert_eq!(
        d.ok(t, json!(["user.delete-field", "u:1", "city"])),
        json!(true)
    );
    assert_eq!(
        d.ok(t, json!(["user.delete-field", "u:1", "city"])),
        json!(false)
    );
    assert_eq!(d.ok(t, json!(["user.exists", "u:1"])), json!(true));

    d.ok(t, json!(["user.upsert", "u2", {"name": "Bob"}, null]));
    assert_eq!(
        d.ok(t, json!(["user.find-by-field", "name", "Bob"]))["name"],
        json!("Bob")
    );
    assert_eq!(
        d.ok(t, json!(["user.find-by-field", "name", "Zed"])),
        json!(null)
    );
    assert_eq!(d.ok(t, json!(["user.delete", "u:1"])), json!(true));
    assert_eq!(d.ok(t, json!(["user.exists", "u:1"])), json!(false));
    assert_eq!(d.ok(t, json!(["user.get", "u:1"])), json!(null));
    // An empty upsert deletes, as mimeiapify's does.
    d.ok(t, json!(["user.upsert", "u2", {}, null]));
    assert_eq!(d.ok(t, json!(["user.exists", "u2"])), json!(false));
}

fn typed_errors_reach_the_plugin(cluster: bool) {
    let mut d = Driver::on(cluster, "");
    let t = "acme";
    let (kind, msg) = d.err(t, json!(["user.get", ""]));
    assert_eq!(
        (kind.as_str(), msg.as_str()),
        ("invalid-input", "user id must not be empty")
    );
    let (kind, msg) = d.err(t, json!(["user.upsert-raw", "u1", "{not json", null]));
    assert_eq!(kind, "invalid-input");
    assert!(msg.starts_with("not JSON"), "{msg}");
    let (kind, msg) = d.err(t, json!(["user.upsert", "u1", [1, 2], null]));
    assert_eq!(kind, "invalid-input");
    assert!(
        msg.contains("expected a JSON object, got an array"),
        "{msg}"
    );
    d.ok(t, json!(["user.update-field", "u1", "name", "Ann", null]));
    let (kind, msg) = d.err(t, json!(["user.increment-field", "u1", "name", 1, null]));
    assert_eq!(kind, "invalid-input");
    assert!(msg.contains("does not hold an integer"), "{msg}");
    let (kind, msg) = d.err(t, json!(["state.get", "chat:flow", "u1"]));
    assert_eq!(kind, "invalid-input");
    assert!(msg.contains("ambiguous"), "{msg}");
    let (kind, _) = d.err(t, json!(["batch.enqueue", "wa", "ent:1", "act", "x"]));
    assert_eq!(kind, "invalid-input");
    // None of this trapped: the same dispatch went on to the next call.
    let results = d.run(t, json!([["user.get", ""], ["user.exists", "u1"]]));
    assert_eq!(results[1], json!({"ok": true}));
}

#[test]
fn an_unreachable_pool_is_a_typed_unavailable_error() {
    // The user pool points at a port nobody listens on; the others work.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pools = format!(
        "[redis]\nurl = {:?}\n[redis.pools]\nuser = \"redis://127.0.0.1:{port}/11\"\n",
        redis.url()
    );
    let manifest = write_manifest(
        dir.path(),
        &plugin_entry("driver", "driver", &["drive"]),
        &pools,
    );
    let mut host = Host::spawn_without_override(&manifest, &redis, dir);
    host.wait_for("the listener", Duration::from_secs(20), |e| {
        e["event"] == "listening"
    });
    let mut d = Driver {
        redis,
        host,
        next: 0,
    };
    let (kind, msg) = d.err("acme", json!(["user.get", "u1"]));
    assert_eq!(kind, "unavailable", "{msg}");
    assert_eq!(d.ok("acme", json!(["generic.get", "x"])), json!(null));
}

fn handler_state_with_atomic_merge(cluster: bool) {
    let mut d = Driver::on(cluster, "");
    let t = "acme";
    d.ok(
        t,
        json!(["state.upsert", "chat", "u:1", {"step": 2, "data": {"a": 1}}, 60]),
    );
    let raw = d.hgetall(10, "acme:state:chat:u:1");
    assert_eq!(raw["step"], "2");
    assert_eq!(raw["data"], r#"{"a": 1}"#);
    assert_eq!(
        d.ok(t, json!(["state.get-field", "chat", "u:1", "step"])),
        json!(2)
    );
    d.ok(
        t,
        json!(["state.update-field", "chat", "u:1", "step", 3, null]),
    );
    assert_eq!(
        d.ok(
            t,
            json!(["state.increment-field", "chat", "u:1", "n", 2, null])
        ),
        json!(2)
    );
    d.ok(
        t,
        json!(["state.append-to-list", "chat", "u:1", "log", "hi", null]),
    );
    let merged = d.ok(
        t,
        json!(["state.merge", "chat", "u:1", {"extra": "yes", "step": 4}, null]),
    );
    assert_eq!(merged["extra"], "yes");
    assert_eq!(merged["step"], 4);
    assert_eq!(merged["data"], json!({"a": 1}));
    assert_eq!(merged["log"], json!(["hi"]));
    assert_eq!(merged["handler_type"], "chat");
    let ts = merged["timestamp"].as_str().unwrap();
    assert!(
        ts.starts_with("20") && !ts.ends_with('Z') && ts.contains('T'),
        "{ts}"
    );
    let raw = d.hgetall(10, "acme:state:chat:u:1");
    assert_eq!(raw["handler_type"], "chat");
    assert_eq!(raw["step"], "4");
    assert_eq!(d.ok(t, json!(["state.exists", "chat", "u:1"])), json!(true));
    assert_eq!(d.ok(t, json!(["state.get", "chat", "u:1"]))["extra"], "yes");
    assert_eq!(d.ok(t, json!(["state.delete", "chat", "u:1"])), json!(true));
    assert_eq!(d.ok(t, json!(["state.get", "chat", "u:1"])), json!(null));
}

fn table_rows(cluster: bool) {
    let mut d = Driver::on(cluster, "");
    let t = "acme";
    d.ok(
        t,
        json!(["table.upsert", "orders:2024", "pk:9", {"total": 10, "paid": false}, null]),
    );
    let raw = d.hgetall(10, "acme:df:orders_2024:pkid:pk_9");
    assert_eq!(raw["total"], "10");
    assert_eq!(raw["paid"], "0");
    assert_eq!(
        d.ok(t, json!(["table.get", "orders:2024", "pk:9"]))["paid"],
        json!(false)
    );
    assert_eq!(
        d.ok(
            t,
            json!(["table.get-field", "orders:2024", "pk:9", "total"])
        ),
        json!(10)
    );
    d.ok(
        t,
        json!([
            "table.update-field",
            "orders:2024",
            "pk:9",
            "note",
            "rush",
            30
        ]),
    );
    assert!(d.ttl(10, "acme:df:orders_2024:pkid:pk_9") <= 30);
    assert_eq!(
        d.ok(
            t,
            json!([
                "table.increment-field",
                "orders:2024",
                "pk:9",
                "total",
                5,
                null
            ])
        ),
        json!(15)
    );
    d.ok(
        t,
        json!([
            "table.append-to-list",
            "orders:2024",
            "pk:9",
            "items",
            7,
            null
        ]),
    );
    assert_eq!(
        d.hgetall(10, "acme:df:orders_2024:pkid:pk_9")["items"],
        "[7]"
    );
    assert_eq!(
        d.ok(
            t,
            json!(["table.find-by-field", "orders:2024", "note", "rush"])
        )["total"],
        json!(15)
    );
    assert_eq!(
        d.ok(t, json!(["table.find-by-field", "other", "note", "rush"])),
        json!(null)
    );
    d.ok(
        t,
        json!(["table.upsert", "refunds", "pk:9", {"x": 1}, null]),
    );
    d.ok(
        t,
        json!(["table.upsert", "refunds", "pk:10", {"x": 1}, null]),
    );
    assert_eq!(
        d.ok(t, json!(["table.exists", "refunds", "pk:9"])),
        json!(true)
    );
    assert_eq!(
        d.ok(t, json!(["table.delete-all-by-pkid", "pk:9"])),
        json!(2)
    );
    assert_eq!(
        d.ok(t, json!(["table.exists", "refunds", "pk:10"])),
        json!(true)
    );
    assert_eq!(
        d.ok(t, json!(["table.delete", "refunds", "pk:10"])),
        json!(true)
    );
    assert_eq!(
        d.ok(t, json!(["table.exists", "refunds", "pk:10"])),
        json!(false)
    );
}

fn shared_state_lists_names_as_stored(cluster: bool) {
    let mut d = Driver::on(cluster, "");
    let t = "acme";
    d.ok(t, json!(["shared.upsert", "conv:x", "u:1", {"a": 1}]));
    d.ok(t, json!(["shared.upsert", "my_state", "u:1", {"b": "two"}]));
    d.ok(t, json!(["shared.upsert", "conv:x", "u:2", {"c": 3}]));
    assert_eq!(d.hgetall(9, "acme:SS:conv_x:u_1")["a"], "1");
    assert!(d.ttl(9, "acme:SS:conv_x:u_1") > 86_000);
    assert_eq!(
        d.ok(t, json!(["shared.get", "conv:x", "u:1"])),
        json!({"a": true})
    );
    assert_eq!(
        d.ok(t, json!(["shared.get-field", "my_state", "u:1", "b"])),
        json!("two")
    );
    d.ok(
        t,
        json!(["shared.update-field", "my_state", "u:1", "d", [1], 50]),
    );
    assert!(d.ttl(9, "acme:SS:my_state:u_1") <= 50);
    assert_eq!(
        d.ok(t, json!(["shared.delete-field", "my_state", "u:1", "d"])),
        json!(true)
    );
    // mimeiapify would say "my:state" here.
    assert_eq!(
        d.ok(t, json!(["shared.list-states", "u:1"])),
        json!(["conv_x", "my_state"])
    );
    assert_eq!(
        d.ok(t, json!(["shared.exists", "conv:x", "u:1"])),
        json!(true)
    );
    assert_eq!(d.ok(t, json!(["shared.clear-all-states", "u:1"])), json!(2));
    assert_eq!(d.ok(t, json!(["shared.list-states", "u:1"])), json!([]));
    assert_eq!(
        d.ok(t, json!(["shared.exists", "conv:x", "u:2"])),
        json!(true)
    );
    assert_eq!(
        d.ok(t, json!(["shared.delete", "conv:x", "u:2"])),
        json!(true)
    );
}

fn batches_and_the_pending_set(cluster: bool) {
    let mut d = Driver::on(cluster, "");
    let t = "acme";
    for (i, msg) in ["one", "two", "three"].iter().enumerate() {
        let len = d.ok(
            t,
            json!(["batch.enqueue", "wa", "ent1", "act:x", {"text": msg}]),
        );
        assert_eq!(len, json!(i + 1));
    }
    let mut db10 = d.redis.db(10);
    let raw: Vec<String> = db10.lrange("acme:batch:wa:ent1:act:x", 0, -1).unwrap();
    assert_eq!(raw[0], r#"{"text": "one"}"#);
    let ttl: i64 = db10.ttl("acme:batch:wa:ent1:act:x").unwrap();
    assert!(ttl > 86_000, "batch lists get a TTL: {ttl}");
    let pending: Vec<String> = db10.smembers("pending_batches:wa").unwrap();
    assert_eq!(pending, vec!["acme".to_owned()]);
    assert_eq!(
        d.ok(t, json!(["batch.get-chunk", "wa", "ent1", "act:x", 0, 1])),
        json!([{"text": "one"}, {"text": "two"}])
    );
    d.ok(t, json!(["batch.trim", "wa", "ent1", "act:x", 2, -1]));
    assert_eq!(
        d.ok(t, json!(["batch.length", "wa", "ent1", "act:x"])),
        json!(1)
    );
    assert_eq!(d.ok(t, json!(["batch.is-pending", "wa"])), json!(true));
    assert_eq!(
        d.ok(t, json!(["batch.remove-from-pending", "wa"])),
        json!(true)
    );
    assert_eq!(d.ok(t, json!(["batch.is-pending", "wa"])), json!(false));
}

fn generic_values_and_triggers_and_publish(cluster: bool) {
    let mut d = Driver::on(cluster, "");
    let t = "acme";
    d.ok(t, json!(["generic.set", "a:b", {"x": 1}, 60]));
    let mut db15 = d.redis.db(15);
    let raw: String = db15.get("acme:a:b").unwrap();
    assert_eq!(raw, r#"{"x": 1}"#);
    assert!(d.ttl(15, "acme:a:b") <= 60);
    d.ok(t, json!(["generic.set", "plain", "text", null]));
    assert_eq!(db15.get::<_, String>("acme:plain").unwrap(), "text");
    assert_eq!(d.ttl(15, "acme:plain"), -1);
    assert_eq!(d.ok(t, json!(["generic.get", "a:b"])), json!({"x": 1}));
    assert_eq!(d.ok(t, json!(["generic.delete", "a:b"])), json!(true));
    assert_eq!(d.ok(t, json!(["generic.get", "a:b"])), json!(null));

    let mut db8 = d.redis.db(8);
    d.ok(t, json!(["trigger.set", "remind:me", "i:1", 600_000]));
    d.ok(t, json!(["trigger.set", "other", "i:1", 600_000]));
    d.ok(t, json!(["trigger.set", "other", "i:2", 600_000]));
    // The same id in another tenant must survive.
    let _: () = db8.set_ex("globex:EXPTRIGGER:other:i_1", "x", 600).unwrap();
    assert!(
        db8.exists::<_, bool>("acme:EXPTRIGGER:remind_me:i_1")
            .unwrap()
    );
    assert_eq!(
        d.ok(t, json!(["trigger.delete", "other", "i:2"])),
        json!(true)
    );
    assert_eq!(
        d.ok(t, json!(["trigger.delete-all-by-identifier", "i:1"])),
        json!(2)
    );
    assert!(
        db8.exists::<_, bool>("globex:EXPTRIGGER:other:i_1")
            .unwrap()
    );

    // Publish goes to {tenant}:{channel}.
    let mut sub = redis::Client::open(d.redis.server_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut ps = sub.as_pubsub();
    ps.subscribe("acme:events").unwrap();
    ps.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The count is of the receivers on the node that took the PUBLISH: on
    // a cluster that may not be the subscriber's (the message is forwarded
    // to every node all the same).
    let receivers = d.ok(t, json!(["pubsub.publish", "events", {"a": [1, 2]}]));
    if !d.redis.is_cluster() {
        assert_eq!(receivers, json!(1));
    }
    let msg = ps.get_message().unwrap();
    assert_eq!(msg.get_channel_name(), "acme:events");
    assert_eq!(msg.get_payload::<String>().unwrap(), r#"{"a": [1, 2]}"#);
}

fn concurrent_appends_and_merges_lose_nothing(cluster: bool) {
    let mut d = Driver::on(cluster, "");
    // 20 dispatches at once, each appending 10 items to the same field and
    // merging its own field into the same state.
    let writers = 20;
    let mut db15 = d.redis.db(15);
    let mut db8 = d.redis.db(8);
    for w in 0..writers {
        let mut calls = Vec::new();
        for i in 0..10 {
            calls.push(json!([
                "user.append-to-list",
                "shared",
                "items",
                format!("{w}-{i}"),
                null
            ]));
        }
        calls.push(json!(["state.merge", "flow", "shared", {format!("f{w}"): w}, null]));
        let _: () = db15
            .set(format!("acme:script:c{w}"), Value::Array(calls).to_string())
            .unwrap();
    }
    for w in 0..writers {
        let _: () = redis::cmd("SET")
            .arg(format!("acme:EXPTRIGGER:drive:c{w}"))
            .arg("")
            .arg("PX")
            .arg(200)
            .query(&mut db8)
            .unwrap();
    }
    d.host
        .wait_for_n("every writer", Duration::from_secs(20), writers, |e| {
            e["event"] == "dispatch" && e["action"] == "drive" && e["outcome"] == "ok"
        });
    // A call that failed says why in the writer's results.
    let failed: Vec<String> = (0..writers)
        .filter_map(|w| {
            let results: Option<String> = db15.get(format!("acme:result:c{w}")).unwrap();
            results
                .filter(|r| r.contains("\"err\""))
                .map(|r| format!("writer {w}: {r}"))
        })
        .collect();
    assert!(failed.is_empty(), "calls failed:\n{}", failed.join("\n"));
    let raw = d.hgetall(11, "acme:user:shared");
    let items: Vec<String> = serde_json::from_str(&raw["items"]).unwrap();
    assert_eq!(items.len(), writers * 10, "lost appends: {}", raw["items"]);
    let state = d.hgetall(10, "acme:state:flow:shared");
    for w in 0..writers {
        assert!(
            state.contains_key(&format!("f{w}")),
            "lost merge of f{w}: {state:?}"
        );
    }
}

fn crafted_ids_and_patterns_stay_inside_the_tenant(cluster: bool) {
    let mut d = Driver::on(cluster, "");
    // Another tenant's data, and look-alike tenants.
    let mut db11 = d.redis.db(11);
    let mut db10 = d.redis.db(10);
    let mut db9 = d.redis.db(9);
    let mut db8 = d.redis.db(8);
    for tenant in ["other", "acme2", "acm"] {
        let _: () = db11
            .hset(format!("{tenant}:user:u1"), "name", "secret")
            .unwrap();
        let _: () = db10
            .hset(format!("{tenant}:df:t:pkid:x"), "v", "1")
            .unwrap();
        let _: () = db9.hset(format!("{tenant}:SS:s:u1"), "v", "1").unwrap();
        let _: () = db8
            .set_ex(format!("{tenant}:EXPTRIGGER:a:x"), "v", 600)
            .unwrap();
    }
    let t = "acme";
    assert_eq!(
        d.ok(t, json!(["user.find-by-field", "name", "secret"])),
        json!(null)
    );
    for pk in ["*", "x*", "?", "[a-z]", "x"] {
        assert_eq!(
            d.ok(t, json!(["table.delete-all-by-pkid", pk])),
            json!(0),
            "{pk}"
        );
    }
    assert_eq!(
        d.ok(t, json!(["table.find-by-field", "*", "v", 1])),
        json!(null)
    );
    for uid in ["*", "u*", "u?", "[u]1", "u1"] {
        assert_eq!(
            d.ok(t, json!(["shared.list-states", uid])),
            json!([]),
            "{uid}"
        );
        assert_eq!(
            d.ok(t, json!(["shared.clear-all-states", uid])),
            json!(0),
            "{uid}"
        );
    }
    for id in ["*", "x", "?"] {
        assert_eq!(
            d.ok(t, json!(["trigger.delete-all-by-identifier", id])),
            json!(0)
        );
    }
    // ':' and the tenant separator in ids stay in the id: these keys are all
    // under acme:, whatever the id says.
    d.ok(
        t,
        json!(["user.upsert", "u1:other:user:u1", {"x": 1}, null]),
    );
    assert!(
        db11.exists::<_, bool>("acme:user:u1:other:user:u1")
            .unwrap()
    );
    d.ok(t, json!(["generic.set", "other:user:u1", "x", null]));
    assert!(
        d.redis
            .db(15)
            .exists::<_, bool>("acme:other:user:u1")
            .unwrap()
    );
    d.ok(t, json!(["shared.upsert", "s:u1", "..:other", {"v": 2}]));
    assert!(db9.exists::<_, bool>("acme:SS:s_u1:.._other").unwrap());

    // A tenant with glob characters only sees itself.
    let _: () = db11.hset("a*:user:u9", "name", "mine").unwrap();
    assert_eq!(
        d.ok("a*", json!(["user.find-by-field", "name", "secret"])),
        json!(null)
    );
    assert_eq!(
        d.ok("a*", json!(["user.find-by-field", "name", "mine"]))["name"],
        "mine"
    );

    // Nothing of the other tenants changed.
    for tenant in ["other", "acme2", "acm"] {
        assert_eq!(
            d.hgetall(11, &format!("{tenant}:user:u1"))["name"],
            "secret"
        );
        assert!(
            db10.exists::<_, bool>(format!("{tenant}:df:t:pkid:x"))
                .unwrap()
        );
        assert!(db9.exists::<_, bool>(format!("{tenant}:SS:s:u1")).unwrap());
        assert!(
            db8.exists::<_, bool>(format!("{tenant}:EXPTRIGGER:a:x"))
                .unwrap()
        );
    }
}

/// Each test above runs on a standalone server and on a 3-primary cluster.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod standalone {
            $(#[test]
            fn $name() {
                super::$name(false)
            })*
        }
        mod cluster {
            $(#[test]
            fn $name() {
                super::$name(true)
            })*
        }
    };
}

on_both_backends!(
    user_records,
    typed_errors_reach_the_plugin,
    handler_state_with_atomic_merge,
    table_rows,
    shared_state_lists_names_as_stored,
    batches_and_the_pending_set,
    generic_values_and_triggers_and_publish,
    concurrent_appends_and_merges_lose_nothing,
    crafted_ids_and_patterns_stay_inside_the_tenant,
);
