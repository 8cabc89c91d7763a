//! Byte compatibility with the Python library, driven by the real
//! `mimeiapify==1.4.3` from PyPI (scripts/python-venv.sh makes the venv once).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use redis::Commands;
use serde_json::Value;

use crate::repos::Driver;
use crate::support::*;

fn python() -> &'static PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = run_ok(Command::new("bash").arg(root().join("scripts/python-venv.sh")));
        PathBuf::from(venv.trim())
    })
}

fn library(mode: &str, url: &str) -> Value {
    let out = Command::new(python())
        .arg(root().join("tests/compat/compat.py"))
        .args([mode, url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "compat.py {mode} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("compat.py {mode} printed no JSON ({e}):\n{stdout}"))
}

#[test]
fn the_python_library_and_plugins_read_each_others_data() {
    let mut d = Driver::start();
    // The library writes records and schedules our plugin with RedisTrigger.set.
    let py_view = library("write", &d.redis.url());
    let e = d.host.wait_for(
        "the dispatch of the library's trigger",
        Duration::from_secs(10),
        |e| is_dispatch(e, "drive", "py1"),
    );
    assert_eq!(e["tenant"], "acme");
    assert_eq!(e["outcome"], "ok", "{e}");
    let raw: String = d.redis.conn(15).get("acme:result:py1").unwrap();
    let results: Vec<Value> = serde_json::from_str(&raw).unwrap();

    // Our plugin reads every record exactly as the library's own get() does.
    let names = [
        "user",
        "handler state",
        "table",
        "shared state",
        "batch",
        "generic",
    ];
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            results[i]["ok"], py_view[i],
            "{name}: the plugin read {} but the library reads {}",
            results[i], py_view[i]
        );
    }
    for r in &results[names.len()..] {
        assert!(r.get("ok").is_some(), "a plugin write failed: {r}");
    }

    // The library reads what the plugin wrote as it reads its own records.
    let ours = library("read", &d.redis.url());
    let record = &py_view[0];
    for name in ["user", "state", "table", "shared"] {
        assert_eq!(&ours[name], record, "{name} as the library reads it");
    }
    assert_eq!(ours["batch"], Value::Array(vec![py_view[4][0].clone()]));
    assert_eq!(ours["generic"], py_view[5]);
    assert_eq!(ours["pending"], serde_json::json!(["acme"]));
    assert_eq!(
        ours["trigger_exists"], true,
        "the library cancels the plugin's trigger"
    );

    // And the bytes are the same: our record and the library's are identical hashes.
    let mut db11 = d.redis.conn(11);
    let theirs: std::collections::BTreeMap<String, String> =
        db11.hgetall("acme:user:py:1").unwrap();
    let mine: std::collections::BTreeMap<String, String> = db11.hgetall("acme:user:rs:1").unwrap();
    assert_eq!(mine, theirs);
}
