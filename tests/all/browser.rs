//! The dashboard in a real browser: Debian's Chromium, driven by
//! playwright-core (`tests/browser/drive.mjs`), against a real host and
//! redis-server. Each step waits (bounded) for what the page shows.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(15);

/// One headless Chromium page, driven step by step.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    fn start() -> Browser {
        let dir = root().join("tests/browser");
        assert!(
            dir.join("node_modules/playwright-core").exists(),
            "playwright-core is missing: run scripts/setup.sh"
        );
        let mut child = Command::new("node")
            .arg("drive.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot run node tests/browser/drive.mjs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Browser {
            child,
            stdin,
            stdout,
        }
    }

    /// Runs `step`; its value, or the step's error.
    fn try_step(&mut self, step: Value) -> Result<Value, String> {
        writeln!(self.stdin, "{step}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the driver answered {line:?} to {step}: {e}"));
        if answer["ok"] == true {
            Ok(answer["value"].clone())
        } else {
            Err(answer["error"].as_str().unwrap_or("?").to_owned())
        }
    }

    /// Runs `step`; panics with `what`, the error and the page's text.
    fn step(&mut self, what: &str, step: Value) -> Value {
        match self.try_step(step.clone()) {
            Ok(v) => v,
            Err(e) => {
                let page = self.try_step(json!({"text": "body"})).unwrap_or_default();
                panic!("{what}: {step} failed: {e}\n--- page ---\n{page}")
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn row(key: &str) -> String {
    format!("tr[data-key=\"{key}\"]")
}

#[test]
fn the_dashboard_shows_and_acts_on_real_data_in_a_real_browser() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.wasm");
    std::fs::copy(plugins_dir().join("recorder.wasm"), &live).unwrap();
    std::fs::write(dir.path().join("admin.token"), "browser-token\n").unwrap();
    let mut host = Host::start_in(
        dir,
        &redis,
        &format!(
            "[[plugin]]\nname = \"live\"\npath = {:?}\nactions = [\"rec_\", \"fail_\", \"spin_\"]\n\
             tenants = [\"*\"]\ncapabilities = [\"trigger\"]\n[plugin.limits]\ntimeout = \"8s\"\n\
             [plugin.retry]\nmax_attempts = 1\n",
            live.display().to_string()
        ),
        "[admin]\ntoken_file = \"admin.token\"\n",
    );
    let base = host.admin_url();
    let mut db8 = redis.conn(8);
    let mut b = Browser::start();

    // The token: asked for, then used.
    b.step("open", json!({"goto": format!("{base}#overview")}));
    b.step(
        "the token form",
        json!({"wait_text": "#login", "text": "needs its token"}),
    );
    b.step(
        "type the token",
        json!({"fill": "#token", "value": "browser-token"}),
    );
    b.step("use it", json!({"click": "#token-save"}));
    b.step(
        "the overview",
        json!({"wait_text": "#card-pending", "text": "scheduled"}),
    );

    // A dispatch that just happened shows in the overview and the list.
    set_expiring(&mut db8, b"acme:EXPTRIGGER:rec_now:d1", 50);
    host.wait_for("d1's dispatch", WAIT, |e| is_dispatch(e, "rec_now", "d1"));
    b.step(
        "overview row",
        json!({"wait_text": "#data tr", "text": "tenant acme"}),
    );
    b.step(
        "overview by plugin",
        json!({"wait_text": "#data tr", "text": "plugin live"}),
    );
    b.step(
        "the fleet's rate",
        json!({"wait_text": "#card-fleet-rate", "text": "1 host(s)"}),
    );
    b.step(
        "recent dispatches",
        json!({"goto": format!("{base}#dispatches")}),
    );
    b.step(
        "d1 listed",
        json!({"wait_text": "tr[data-id=\"d1\"]", "text": "ok"}),
    );

    // In flight: a long job (it spins to its 8 s timeout) shows with the
    // host running it (from the host's heartbeat, every 2 s).
    set_expiring(&mut db8, b"acme:EXPTRIGGER:spin_long:s1", 50);
    b.step("in flight", json!({"goto": format!("{base}#in-flight")}));
    b.step(
        "s1 running on this host",
        json!({"wait_text": row("acme:EXPTRIGGER:spin_long:s1"), "text": format!(":{}:", host.pid())}),
    );

    // Cancel: a scheduled trigger's button cancels it; it never runs.
    let armed = Instant::now();
    arm(
        &redis,
        &[("acme".into(), "rec_later".into(), "c1".into(), 6000)],
    );
    let c1 = row("acme:EXPTRIGGER:rec_later:c1");
    b.step("scheduled", json!({"goto": format!("{base}#scheduled")}));
    b.step("c1 listed", json!({"wait_text": c1, "text": "rec_later"}));
    b.step(
        "cancel c1",
        json!({"click": format!("{c1} button[data-act=cancel]")}),
    );
    b.step(
        "cancelled",
        json!({"wait_text": "#notice", "text": "Cancelled acme:EXPTRIGGER:rec_later:c1"}),
    );
    b.step("c1 gone from the list", json!({"wait_gone": c1}));
    let pending: Option<f64> = redis::cmd("ZSCORE")
        .arg("symphony:due:acme")
        .arg("acme:EXPTRIGGER:rec_later:c1")
        .query(&mut db8)
        .unwrap();
    assert_eq!(pending, None, "c1 left the index");
    std::thread::sleep((armed + Duration::from_secs(7)).saturating_duration_since(Instant::now()));
    assert!(
        host.events(|e| e["id"] == "c1" && e["event"] != "admin_cancelled")
            .is_empty(),
        "the cancelled trigger ran:\n{}",
        host.log()
    );

    // A failing plugin's trigger is a dead letter.
    set_expiring(&mut db8, b"acme:EXPTRIGGER:fail_pay:f1", 50);
    host.wait_for("f1's dead letter", WAIT, |e| {
        e["event"] == "dead_lettered" && e["id"] == "f1"
    });
    let f1 = row("acme:EXPTRIGGER:fail_pay:f1");
    b.step("dead letters", json!({"goto": format!("{base}#dead")}));
    b.step(
        "f1 listed",
        json!({"wait_text": f1, "text": "recorder failed on purpose"}),
    );

    // A broken plugin file: its reload error shows on the plugins view.
    std::fs::write(&live, b"\0asm not really").unwrap();
    host.wait_for("the rejected reload", WAIT, |e| {
        e["event"] == "reload_rejected"
    });
    b.step("plugins", json!({"goto": format!("{base}#plugins")}));
    b.step(
        "the reload error",
        json!({"wait_text": "#reload-error", "text": "live.wasm"}),
    );

    // Fixed (a plugin that succeeds), reloaded with the button.
    let fixed = plugins_dir().join("versioned-v1.wasm");
    let tmp = live.with_extension("tmp");
    std::fs::copy(&fixed, &tmp).unwrap();
    std::fs::rename(&tmp, &live).unwrap();
    host.wait_for("the fixed plugin's reload", WAIT, |e| {
        e["event"] == "reloaded"
    });
    b.step("reload now", json!({"click": "button[data-act=reload]"}));
    b.step(
        "reloaded",
        json!({"wait_text": "#notice", "text": "Reloaded: generation"}),
    );
    b.step(
        "no reload error",
        json!({"wait_text": "#reload-ok", "text": "succeeded"}),
    );

    // Retry: f1 is queued, runs with the fixed plugin, and leaves the list.
    b.step(
        "dead letters again",
        json!({"goto": format!("{base}#dead")}),
    );
    b.step(
        "retry f1",
        json!({"click": format!("{f1} button[data-act=retry]")}),
    );
    b.step(
        "queued",
        json!({"wait_text": "#notice", "text": "Queued 1 again"}),
    );
    host.wait_for("f1 to run again", WAIT, |e| {
        is_dispatch(e, "fail_pay", "f1") && e["outcome"] == "ok"
    });
    b.step("f1 gone", json!({"wait_gone": f1}));

    // Values from Redis are text, never HTML.
    let xss = "<img src=x onerror=alert(1)>";
    let letter = json!({
        "tenant": "acme", "action": "fail_pay", "id": "<b id=injected>x</b>",
        "key": "acme:EXPTRIGGER:fail_pay:<b id=injected>x</b>", "attempts": 1,
        "last_error": xss, "first_due_ms": 1, "failed_at_ms": 2,
    });
    // In acme's own list, newest first: the first row.
    let _: () = redis::cmd("LPUSH")
        .arg("symphony:dead:acme")
        .arg(letter.to_string())
        .query(&mut db8)
        .unwrap();
    let _: () = redis::cmd("SADD")
        .arg("symphony:deadtenants")
        .arg("acme")
        .query(&mut db8)
        .unwrap();
    b.step(
        "the hostile letter",
        json!({"wait_text": "td.err", "text": xss}),
    );
    assert_eq!(
        b.step("no injected image", json!({"count": "#data img"})),
        0
    );
    assert_eq!(
        b.step("no injected element", json!({"count": "#injected"})),
        0
    );
    let id_cell = b.step("the id", json!({"text": "#data td.mono"}));
    assert_eq!(id_cell, "<b id=injected>x</b>");
    assert_eq!(b.step("dialogs", json!({"dialogs": true})), json!([]));
    assert_eq!(b.step("script errors", json!({"errors": true})), json!([]));

    // Hosts: this one, alive.
    b.step("hosts", json!({"goto": format!("{base}#hosts")}));
    b.step(
        "this host",
        json!({"wait_text": "#data tr", "text": "alive"}),
    );

    // SCREENSHOT=path saves the overview with this data (docs/dashboard.png).
    if let Ok(path) = std::env::var("SCREENSHOT") {
        b.step("overview", json!({"goto": format!("{base}#overview")}));
        b.step(
            "overview rows",
            json!({"wait_text": "#data tr", "text": "plugin live"}),
        );
        b.step("screenshot", json!({"screenshot": path}));
    }
}
