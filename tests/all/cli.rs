//! `check`, `trigger set|set-many|cancel` and shutdown.

use std::time::Duration;

use redis::Commands;

use crate::support::*;

fn check(manifest: &std::path::Path) -> (bool, String, String) {
    let out = host_cmd().arg("check").arg(manifest).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_example_manifest() {
    plugins_dir();
    let (ok, stdout, stderr) = check(&root().join("plugins-example/manifest.toml"));
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("3 plugin(s) ok"), "{stdout}");
    assert!(stdout.contains("reminders"), "{stdout}");
}

#[test]
fn check_rejects_an_unknown_field_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let m = write_manifest(
        dir.path(),
        &plugin_entry("recorder", "recorder", &["rec_"]),
        "retries = 3",
    );
    let (ok, _, stderr) = check(&m);
    assert!(!ok);
    // write_manifest puts `retries` on line 5, under [runtime].
    let expected = format!("{}:5:1: unknown field `retries`", m.display());
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in:\n{stderr}"
    );
}

#[test]
fn check_rejects_a_missing_wasm_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.toml");
    std::fs::write(
        &m,
        "[[plugin]]\nname = \"ghost\"\npath = \"nowhere/ghost.wasm\"\nactions = [\"boo\"]\ntenants = [\"*\"]\n",
    )
    .unwrap();
    let (ok, _, stderr) = check(&m);
    assert!(!ok);
    assert!(
        stderr.contains("plugin ghost: cannot read") && stderr.contains("nowhere/ghost.wasm"),
        "{stderr}"
    );
    assert!(stderr.contains("No such file"), "{stderr}");
}

#[test]
fn check_rejects_files_that_are_not_components() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("text.wasm"), "definitely not wasm").unwrap();
    // A valid core module (empty): wasm, but not a component.
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let m = dir.path().join("m.toml");
    std::fs::write(
        &m,
        "[[plugin]]\nname = \"text\"\npath = \"text.wasm\"\nactions = [\"a\"]\ntenants = [\"*\"]\n\
         [[plugin]]\nname = \"core\"\npath = \"core.wasm\"\nactions = [\"b\"]\ntenants = [\"*\"]\n",
    )
    .unwrap();
    let (ok, _, stderr) = check(&m);
    assert!(!ok);
    assert!(stderr.contains("2 plugin(s) failed to load"), "{stderr}");
    assert!(
        stderr.contains("plugin text:") && stderr.contains("not a WebAssembly component"),
        "{stderr}"
    );
    assert!(stderr.contains("magic bytes"), "{stderr}");
    assert!(
        stderr.contains("plugin core:") && stderr.contains("core WebAssembly module"),
        "{stderr}"
    );
}

#[test]
fn check_rejects_a_component_of_another_world() {
    // The audit plugin's world is fine, but a component built for no world
    // at all (here: the test plugin with its export renamed) is refused.
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(plugin("recorder")).unwrap();
    let needle = b"on-expire";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("export name in the component");
    bytes[at..at + needle.len()].copy_from_slice(b"on-exp1re");
    std::fs::write(dir.path().join("odd.wasm"), &bytes).unwrap();
    let m = dir.path().join("m.toml");
    std::fs::write(
        &m,
        "[[plugin]]\nname = \"odd\"\npath = \"odd.wasm\"\nactions = [\"a\"]\ntenants = [\"*\"]\n",
    )
    .unwrap();
    let (ok, _, stderr) = check(&m);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("plugin odd:"), "{stderr}");
}

#[test]
fn trigger_set_and_cancel_write_seed_compatible_keys() {
    let redis = RedisServer::start();
    run_ok(
        host_cmd()
            .args([
                "trigger",
                "set",
                "acme",
                "send:reminder",
                "user:1",
                "--ttl",
                "90s",
            ])
            .env("SYMPHONY_REDIS_URL", redis.url()),
    );
    let mut db8 = redis.conn(8);
    let key = "acme:EXPTRIGGER:send_reminder:user_1";
    let value: String = db8.get(key).unwrap();
    assert!(value.starts_with("trigger:20"), "{value:?}");
    let ttl: i64 = db8.pttl(key).unwrap();
    assert!((80_000..=90_000).contains(&ttl), "pttl {ttl}");

    let cancelled = run_ok(
        host_cmd()
            .args(["trigger", "cancel", "acme", "send:reminder", "user:1"])
            .args(["--redis-url", &redis.url()]),
    );
    assert!(cancelled.contains("cancelled"));
    assert!(!db8.exists::<_, bool>(key).unwrap());

    let out = host_cmd()
        .args(["trigger", "set", "te:nant", "a", "b", "--ttl", "1s"])
        .args(["--redis-url", &redis.url()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("contains ':'"));
}

#[test]
fn trigger_set_many_sets_every_line_or_none() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut db8 = redis.conn(8);
    // A bad TTL on line 3: nothing is set, and the error names the line.
    let bad = dir.path().join("bad.txt");
    std::fs::write(
        &bad,
        "acme remind 1 5s\nacme remind 2 5s\nacme remind 3 soon\n",
    )
    .unwrap();
    let out = host_cmd()
        .args(["trigger", "set-many"])
        .arg(&bad)
        .env("SYMPHONY_REDIS_URL", redis.url())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("line 3") && stderr.contains("nothing was set"),
        "{stderr}"
    );
    assert_eq!(db8.zcard::<_, i64>("symphony:due:acme").unwrap(), 0);

    // 2500 lines over two tenants (more than one batch), with a comment and
    // a blank line, read from stdin.
    let mut text = String::from("# tenant action id ttl\n\n");
    for i in 0..2500 {
        let tenant = if i % 2 == 0 { "acme" } else { "globex" };
        text.push_str(&format!("{tenant}\tsend:reminder   user:{i} 90s\n"));
    }
    let mut child = host_cmd()
        .args(["trigger", "set-many", "-"])
        .env("SYMPHONY_REDIS_URL", redis.url())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("set 2500 triggers of 2 tenants"));
    // Each tenant's due index holds its own, and both are ready.
    assert_eq!(db8.zcard::<_, i64>("symphony:due:acme").unwrap(), 1250);
    assert_eq!(db8.zcard::<_, i64>("symphony:due:globex").unwrap(), 1250);
    assert_eq!(db8.zcard::<_, i64>("symphony:ready").unwrap(), 2);
    let value: String = db8
        .get("globex:EXPTRIGGER:send_reminder:user_2499")
        .unwrap();
    assert!(value.starts_with("trigger:20"), "{value:?}");
    let ttl: i64 = db8.pttl("acme:EXPTRIGGER:send_reminder:user_0").unwrap();
    assert!((80_000..=90_000).contains(&ttl), "pttl {ttl}");
}

#[test]
fn sigterm_lets_the_in_flight_job_finish_and_exits_zero() {
    let redis = RedisServer::start();
    let mut host = Host::start(&redis, &plugin_entry("recorder", "recorder", &["slow"]));
    let mut db8 = redis.conn(8);
    set_expiring(&mut db8, b"acme:EXPTRIGGER:slow_job:1", 50);
    host.wait_for("the slow job to start", Duration::from_secs(10), |e| {
        e["message"] == "slow start"
    });
    let status = host.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}\n{}", host.log());
    let e = host.wait_for("the drained dispatch", Duration::from_secs(1), |e| {
        is_dispatch(e, "slow_job", "1")
    });
    assert_eq!(e["outcome"], "ok", "{e}");
    assert!(
        db8.exists::<_, bool>("acme:EXPTRIGGER:seen_slow_job:1")
            .unwrap()
    );
}

#[test]
fn the_polyglot_example_runs_its_javascript_and_go_plugins() {
    plugins_dir();
    let redis = RedisServer::start();
    let dir = root().join("plugins-example");
    let manifest = dir.join("polyglot.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace(
        "[redis]",
        &format!(
            "[runtime]\ncache_dir = {:?}\n[redis]",
            root().join("target/test-wasm-cache").display().to_string()
        ),
    );
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("polyglot.toml");
    std::fs::write(
        &copy,
        text.replace("plugins/", &format!("{}/plugins/", dir.display())),
    )
    .unwrap();
    let mut host = Host::spawn(&copy, &redis, tmp);
    host.wait_for("the listener", Duration::from_secs(60), |e| {
        e["event"] == "listening"
    });
    let _: () = redis.conn(11).hset("acme:user:u1", "name", "Ann").unwrap();
    let mut db8 = redis.conn(8);
    set_expiring(&mut db8, b"acme:EXPTRIGGER:welcome_user:u1", 20);
    set_expiring(&mut db8, b"acme:EXPTRIGGER:count_view:u1", 20);
    host.wait_for("the JavaScript greeting", Duration::from_secs(20), |e| {
        e["message"] == "welcome, Ann (tenant acme)"
    });
    for action in ["welcome_user", "count_view"] {
        let e = host.wait_for(action, Duration::from_secs(20), |e| {
            is_dispatch(e, action, "u1")
        });
        assert_eq!(e["outcome"], "ok", "{e}");
    }
    let views: String = redis.conn(15).get("acme:views:u1").unwrap();
    assert_eq!(views, "1");
    let onboarding: std::collections::HashMap<String, String> =
        redis.conn(10).hgetall("acme:state:onboarding:u1").unwrap();
    assert_eq!(onboarding["welcomed"], "1");
    assert!(
        redis::Commands::exists::<_, bool>(&mut db8, "acme:EXPTRIGGER:followup_onboarding:u1")
            .unwrap()
    );
}
