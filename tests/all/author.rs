//! The plugin author's workflow: `symphony-host new`, `build` and `invoke`,
//! run as the README gives them, in directories outside the repository.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use redis::Commands;

use crate::support::*;

/// The README's plugin quick starts: each ```sh block that begins with
/// `symphony-host new`, with the language and name it makes.
fn readme_quick_starts() -> Vec<(String, String, String)> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```sh" {
            continue;
        }
        let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let Some(first) = block.first() else { continue };
        let Some(rest) = first.strip_prefix("symphony-host new ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (language, name) = (words.next().unwrap(), words.next().unwrap());
        blocks.push((language.to_owned(), name.to_owned(), block.join("\n")));
    }
    blocks
}

/// A command with the author's environment: the host under test and the
/// Go it installs on `PATH`, Redis at `redis`, Rust builds in a target dir
/// shared across test runs.
fn author_cmd(program: &str, redis: &RedisServer) -> Command {
    let host_dir = Path::new(env!("CARGO_BIN_EXE_symphony-host"))
        .parent()
        .unwrap();
    let mut path = vec![host_dir.to_owned()];
    if program == "bash" {
        // `go test` in the Go quick start: the Go `build` installs.
        let go = symphony_host::author::toolchain::go().expect("the Go toolchain");
        path.push(go.go.parent().unwrap().to_owned());
    }
    path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap()));
    let mut cmd = Command::new(program);
    cmd.env("PATH", std::env::join_paths(path).unwrap())
        .env("SYMPHONY_REDIS_URL", redis.url())
        .env("CARGO_TARGET_DIR", root().join("target/author"))
        .env("RUST_LOG", "info");
    cmd
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_readme_quick_starts_make_test_build_and_run_a_plugin_in_each_language() {
    let redis = RedisServer::start();
    let work = tempfile::tempdir().unwrap();
    let starts = readme_quick_starts();
    let languages: Vec<&str> = starts.iter().map(|(l, _, _)| l.as_str()).collect();
    assert_eq!(languages, ["rust", "js", "go"], "the README's quick starts");

    let mut built: Vec<(String, PathBuf)> = Vec::new();
    for (language, name, block) in &starts {
        let out = author_cmd("bash", &redis)
            .args(["-euo", "pipefail", "-c", block])
            .current_dir(work.path())
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "the {language} quick start failed:\n{block}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
        // `invoke` printed the outcome, the plugin's log line and its one
        // repository call; the language's own test runner passed.
        assert!(stdout.contains("outcome ok"), "{language}: {stdout}");
        let call = format!("\"HINCRBY\" \"acme:state:{name}:u1\" \"runs\" \"1\"");
        assert!(stdout.contains(&call), "{language}: no {call} in\n{stdout}");
        assert!(
            stderr.contains(&format!("{name}_greet for u1: run 1")),
            "{language}: {stderr}"
        );
        let passed = match language.as_str() {
            "rust" => "test result: ok. 1 passed",
            "js" => "# pass 1",
            _ => "ok  \twit_component/logic",
        };
        assert!(
            stdout.contains(passed) || stderr.contains(passed),
            "{language}: the project's own test did not pass:\n{stdout}\n{stderr}"
        );
        let runs: i64 = redis
            .conn(10)
            .hget(format!("acme:state:{name}:u1"), "runs")
            .unwrap();
        assert_eq!(runs, 1, "{language}: the handler's write");
        let wasm = work
            .path()
            .join(name)
            .join("dist")
            .join(format!("{name}.wasm"));
        assert!(wasm.is_file(), "{language}: no {}", wasm.display());
        built.push((name.clone(), wasm));
    }

    // One manifest with the three, checked, then run by a real host that
    // dispatches a trigger to each.
    let plugins: String = built
        .iter()
        .map(|(name, wasm)| {
            format!(
                "[[plugin]]\nname = {name:?}\npath = {:?}\nactions = [\"{name}_\"]\n\
                 tenants = [\"*\"]\ncapabilities = [\"handler-state\"]\n\n",
                wasm.display().to_string()
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), &plugins, "");
    let checked = run_ok(host_cmd().arg("check").arg(&manifest));
    assert!(checked.contains("3 plugin(s) ok"), "{checked}");
    let mut host = Host::start(&redis, &plugins);
    let mut db8 = redis.conn(8);
    for (name, _) in &built {
        set_expiring(
            &mut db8,
            format!("acme:EXPTRIGGER:{name}_fire:u2").as_bytes(),
            100,
        );
    }
    for (name, _) in &built {
        let action = format!("{name}_fire");
        let e = host.wait_for(
            &format!("{name}'s dispatch"),
            Duration::from_secs(20),
            |e| is_dispatch(e, &action, "u2"),
        );
        assert_eq!(e["outcome"], "ok", "{e}");
        let runs: i64 = redis
            .conn(10)
            .hget(format!("acme:state:{name}:u2"), "runs")
            .unwrap();
        assert_eq!(
            runs, 1,
            "{name}: the handler's write from the host's dispatch"
        );
    }
}

/// A manifest for `invoke`: the reminders example and the hostile fixture,
/// and a plugin that serves tenant `beta` only.
fn invoke_manifest(dir: &Path) -> PathBuf {
    let plugins = [
        plugin_entry_with(
            "reminders",
            "reminder",
            &["send_", "followup_"],
            "tenants = [\"*\"]\ncapabilities = [\"trigger\"]\n",
        ),
        plugin_entry_with(
            "hostile",
            "hostile",
            &["h_"],
            "tenants = [\"*\"]\ncapabilities = []\n[plugin.limits]\ntimeout = \"2s\"\n",
        ),
        plugin_entry_with(
            "beta-only",
            "recorder",
            &["rec_"],
            "tenants = [\"beta\"]\ncapabilities = []\n",
        ),
    ];
    write_manifest(dir, &plugins.concat(), "")
}

fn invoke(redis: &RedisServer, manifest: &Path, args: &[&str]) -> (bool, String, String) {
    let out = host_cmd()
        .arg("invoke")
        .arg(manifest)
        .args(args)
        .args(["--redis-url", &redis.url()])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    (out.status.success(), stdout, stderr)
}

#[test]
fn invoke_shows_the_runs_logs_commands_and_outcome_and_fails_with_a_failing_plugin() {
    plugins_dir();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = invoke_manifest(dir.path());
    let mut db8 = redis.conn(8);

    // A plugin that schedules a follow-up: its trigger call is a script,
    // shown with the commands the script ran; the follow-up is scheduled,
    // and nothing is written for the invoked trigger itself.
    let (ok, stdout, stderr) = invoke(&redis, &manifest, &["acme", "send_reminder", "u1"]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("plugin reminders ran acme:EXPTRIGGER:send_reminder:u1"),
        "{stdout}"
    );
    assert!(stdout.contains("outcome ok in"), "{stdout}");
    assert!(
        stderr.contains("reminder for u1"),
        "the plugin's log line: {stderr}"
    );
    let script_lines: Vec<&str> = stdout.lines().filter(|l| l.contains(" script ")).collect();
    assert!(
        script_lines
            .iter()
            .any(|l| l.contains("\"acme:EXPTRIGGER:followup_reminder:u1\"")),
        "the script's commands, with the follow-up's key:\n{stdout}"
    );
    assert!(stdout.contains("\"EVALSHA\""), "{stdout}");
    let followup: Option<String> = db8.get("acme:EXPTRIGGER:followup_reminder:u1").unwrap();
    assert!(followup.is_some(), "the plugin's trigger call took effect");
    let invoked: bool = db8.exists("acme:EXPTRIGGER:send_reminder:u1").unwrap();
    assert!(!invoked, "invoke wrote the invoked trigger");

    // --dry-run: the same calls, on a throwaway copy of the tenant's keys.
    let _: () = redis.conn(11).hset("acme:user:u2", "name", "Ann").unwrap();
    let (ok, stdout, stderr) = invoke(
        &redis,
        &manifest,
        &["acme", "send_reminder", "u2", "--dry-run"],
    );
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("dry run: 2 key(s) of tenant acme copied"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"acme:EXPTRIGGER:followup_reminder:u2\""),
        "{stdout}"
    );
    let followup: bool = db8.exists("acme:EXPTRIGGER:followup_reminder:u2").unwrap();
    assert!(!followup, "a dry run wrote to the configured Redis");

    // A plugin that makes no call: no command, and no key written.
    let before: u64 = redis::cmd("DBSIZE").query(&mut db8).unwrap();
    let (ok, stdout, stderr) = invoke(&redis, &manifest, &["acme", "h_quiet", "x"]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("redis commands (0):"), "{stdout}");
    let after: u64 = redis::cmd("DBSIZE").query(&mut db8).unwrap();
    assert_eq!(before, after, "invoke wrote to the expiry DB");

    // Failures exit non-zero, the outcome named.
    for (action, outcome) in [("h_panic", "outcome trap"), ("h_loop", "outcome timeout")] {
        let (ok, stdout, stderr) = invoke(&redis, &manifest, &["acme", action, "x"]);
        assert!(!ok, "{action} succeeded:\n{stdout}");
        assert!(stdout.contains(outcome), "{action}: {stdout}");
        assert!(
            stderr.contains(&format!("plugin hostile failed: {outcome}")),
            "{action}: {stderr}"
        );
    }

    // Bad input: an action no plugin owns, a tenant the plugin does not
    // serve, a key the format refuses.
    let (ok, _, stderr) = invoke(&redis, &manifest, &["acme", "zz_unknown", "x"]);
    assert!(
        !ok && stderr.contains("owns action \"zz_unknown\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("send_"),
        "the prefixes are listed: {stderr}"
    );
    let (ok, _, stderr) = invoke(&redis, &manifest, &["acme", "rec_x", "x"]);
    assert!(
        !ok && stderr.contains("does not serve tenant \"acme\""),
        "{stderr}"
    );
    // The tenant rule holds at the command line, before any key is made.
    let (ok, _, stderr) = invoke(&redis, &manifest, &["ac:me", "send_reminder", "x"]);
    assert!(
        !ok && stderr.contains("invalid value 'ac:me' for '<TENANT>'") && stderr.contains("':'"),
        "{stderr}"
    );
}

#[test]
fn new_and_build_refuse_bad_input_and_write_nothing() {
    let redis = RedisServer::start();
    let work = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = author_cmd(env!("CARGO_BIN_EXE_symphony-host"), &redis)
            .args(args)
            .current_dir(work.path())
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        (out.status.success(), format!("{stdout}{stderr}"))
    };
    let listing = |dir: &Path| -> Vec<PathBuf> {
        let mut l: Vec<PathBuf> = walk(dir);
        l.sort();
        l
    };

    let (ok, out) = run(&["new", "cobol", "x"]);
    assert!(!ok && out.contains("unknown language \"cobol\""), "{out}");
    for bad in ["../x", "Hello", "a/b", ""] {
        let (ok, out) = run(&["new", "go", bad]);
        assert!(!ok && out.contains("invalid plugin name"), "{bad:?}: {out}");
    }
    assert!(
        listing(work.path()).is_empty(),
        "a refused `new` wrote files"
    );

    // An existing directory with files is left as it was.
    let taken = work.path().join("taken");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("notes.txt"), "mine").unwrap();
    let (ok, out) = run(&["new", "rust", "taken"]);
    assert!(
        !ok && out.contains("already exists and is not empty"),
        "{out}"
    );
    assert_eq!(listing(&taken), [taken.join("notes.txt")]);
    // An empty one is used.
    std::fs::create_dir(work.path().join("empty")).unwrap();
    let (ok, out) = run(&["new", "js", "fine", "--dir", "empty"]);
    assert!(ok, "{out}");
    assert!(work.path().join("empty/package.json").is_file());

    // `build` of a directory that is no project, and of a project that
    // does not compile: a clear error, nothing written.
    let (ok, out) = run(&["build", "taken"]);
    assert!(!ok && out.contains("is not a plugin project"), "{out}");
    let (ok, out) = run(&["build", "missing"]);
    assert!(!ok && out.contains("is not a plugin project"), "{out}");
    // Project `dir` with `file` replaced by `source`, which does not
    // compile: the build fails and writes no dist/; its output.
    let build_broken = |dir: &str, file: &str, source: &str| {
        std::fs::write(work.path().join(dir).join(file), source).unwrap();
        let (ok, out) = run(&["build", dir]);
        assert!(!ok, "{dir}: a project that does not compile built: {out}");
        assert!(
            !work.path().join(dir).join("dist").exists(),
            "{dir}: a failed build wrote dist/"
        );
        out
    };
    let out = build_broken("empty", "src/index.js", "export function onExpire( {\n");
    assert!(out.contains("bundling"), "{out}");
    let (ok, out) = run(&["new", "go", "broken"]);
    assert!(ok, "{out}");
    let out = build_broken(
        "broken",
        "main.go",
        "package export_wit_world\n\nfunc OnExpire(\n",
    );
    assert!(out.contains("compiling broken"), "{out}");
    assert!(
        out.contains("main.go"),
        "Go's message names the file: {out}"
    );
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
