//! The example plugins, run as the README and docs/repositories.md show them.

use std::collections::HashMap;
use std::time::Duration;

use redis::Commands;

use crate::support::*;

#[test]
fn process_message_batch_drains_the_batch_into_a_summary() {
    let redis = RedisServer::start();
    let mut host = Host::start(
        &redis,
        &plugin_entry("batcher", "batcher", &["process_message_batch"]),
    );
    // What the application (or mimeiapify's RedisBatch.enqueue) writes.
    let mut db10 = redis.conn(10);
    for i in 1..=25 {
        let _: () = db10
            .rpush(
                "acme:batch:whatsapp:wa_123:messages",
                format!(r#"{{"text": "m{i}"}}"#),
            )
            .unwrap();
    }
    let _: () = db10.sadd("pending_batches:whatsapp", "acme").unwrap();
    let _: () = db10.sadd("pending_batches:whatsapp", "globex").unwrap();
    set_expiring(
        &mut redis.conn(8),
        b"acme:EXPTRIGGER:process_message_batch:wa_123",
        100,
    );
    let e = host.wait_for("the batch run", Duration::from_secs(10), |e| {
        is_dispatch(e, "process_message_batch", "wa_123")
    });
    assert_eq!(e["outcome"], "ok", "{e}");
    host.wait_for("the plugin's log", Duration::from_secs(1), |e| {
        e["message"] == "processed 25 messages of wa_123 in 3 chunks"
    });
    let summary: HashMap<String, String> = db10.hgetall("acme:state:batch_summary:wa_123").unwrap();
    assert_eq!(summary["messages"], "25");
    assert_eq!(summary["chunks"], "3");
    assert!(summary["text"].starts_with("m1 | m2 | m3"), "{summary:?}");
    assert_eq!(summary["last_message"], r#"{"text": "m25"}"#);
    assert_eq!(summary["handler_type"], "batch_summary");
    let left: u64 = db10.llen("acme:batch:whatsapp:wa_123:messages").unwrap();
    assert_eq!(left, 0);
    let pending: Vec<String> = db10.smembers("pending_batches:whatsapp").unwrap();
    assert_eq!(
        pending,
        vec!["globex".to_owned()],
        "only acme's mark is cleared"
    );
}
