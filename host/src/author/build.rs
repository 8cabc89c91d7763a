//! `symphony-host build`: a plugin project into a component, with the
//! language's own toolchain.
//!
//! - Rust: `cargo build --target wasm32-wasip2 --profile plugin` (or
//!   `release` where the workspace defines no `plugin` profile); the
//!   cdylib is already a component.
//! - JavaScript: the entry (`package.json`'s `main`, else `src/index.js`)
//!   is bundled with what it imports by rolldown, the WIT's imports left as
//!   imports, and componentize-js makes the component.
//! - Go: wit-bindgen generates the bindings (module `wit_component`), the
//!   project's root package becomes `export_wit_world` and its other
//!   packages keep their paths, Go builds a wasip1 reactor, and wasm-tools
//!   embeds the WIT and adapts WASI preview1 into a component.
//!
//! The component goes to `dist/{name}.wasm` in the project (or `--out`),
//! written to a temporary file and renamed into place, so a host watching
//! it never loads half a file.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use super::toolchain::{self, run, run_quiet};
use super::{Language, WIT};

/// A component that [`build`] wrote.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Built {
    /// The project's language.
    pub language: Language,
    /// The plugin's name (crate, package or `go.mod` name).
    pub name: String,
    /// Where the component is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

/// Builds the project in `dir` into a component at `out` (default
/// `dir/dist/{name}.wasm`), installing the toolchain on first use.
///
/// # Errors
/// Not a project, a toolchain that cannot be installed, or a build that
/// fails (cargo's messages are on stderr; the other tools' are in the
/// error). Nothing is written to `out` then.
pub fn build(dir: &Path, out: Option<&Path>) -> anyhow::Result<Built> {
    let language = Language::of_project(dir)?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let work = tempfile::tempdir().context("cannot make a temporary directory")?;
    let (name, component) = match language {
        Language::Rust => build_rust(&dir)?,
        Language::Js => build_js(&dir, work.path())?,
        Language::Go => build_go(&dir, work.path())?,
    };
    let out = out.map_or_else(
        || dir.join("dist").join(format!("{name}.wasm")),
        Path::to_owned,
    );
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let staged = tempfile::NamedTempFile::new_in(&parent)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    std::fs::copy(&component, staged.path()).with_context(|| {
        format!(
            "cannot copy {} to {}",
            component.display(),
            parent.display()
        )
    })?;
    // Readable by a host that runs as another user (a temporary file is
    // made owner-only).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(staged.path(), std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot write in {}", parent.display()))?;
    }
    staged
        .persist(&out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    let size = std::fs::metadata(&out)
        .with_context(|| format!("cannot read {}", out.display()))?
        .len();
    Ok(Built {
        language,
        name,
        path: out,
        size,
    })
}

/// The WIT directory a build uses: the project's `wit/`, else one written
/// into `work` from the embedded WIT.
fn wit_dir(dir: &Path, work: &Path) -> anyhow::Result<PathBuf> {
    let own = dir.join("wit");
    if own.join("symphony.wit").is_file() {
        return Ok(own);
    }
    let wit = work.join("wit");
    std::fs::create_dir_all(&wit)?;
    std::fs::write(wit.join("symphony.wit"), WIT)?;
    Ok(wit)
}

/// What `build` reads of `cargo metadata`.
#[derive(serde::Deserialize)]
struct CargoMetadata {
    packages: Vec<CargoPackage>,
    target_directory: PathBuf,
    workspace_root: PathBuf,
}

#[derive(serde::Deserialize)]
struct CargoPackage {
    name: String,
    manifest_path: PathBuf,
    targets: Vec<CargoTarget>,
}

#[derive(serde::Deserialize)]
struct CargoTarget {
    name: String,
    crate_types: Vec<String>,
}

/// What `build` reads of `package.json`.
#[derive(serde::Deserialize)]
struct PackageJson {
    name: String,
    main: Option<String>,
}

fn build_rust(dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    toolchain::rust_target()?;
    let manifest = dir.join("Cargo.toml");
    let meta = Command::new("cargo")
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .context("cannot run cargo (install Rust with rustup)")?;
    anyhow::ensure!(
        meta.status.success(),
        "cargo cannot read {}: {}",
        manifest.display(),
        String::from_utf8_lossy(&meta.stderr).trim()
    );
    let meta: CargoMetadata =
        serde_json::from_slice(&meta.stdout).context("cargo metadata printed no JSON")?;
    let package = meta
        .packages
        .iter()
        .find(|p| p.manifest_path == manifest)
        .with_context(|| {
            format!(
                "{} is not a package (a workspace root?)",
                manifest.display()
            )
        })?;
    let name = package.name.clone();
    let lib = package
        .targets
        .iter()
        .find(|t| t.crate_types.iter().any(|c| c == "cdylib"))
        .with_context(|| {
            format!(
                "{name} has no cdylib: add `[lib] crate-type = [\"cdylib\"]` to {}",
                manifest.display()
            )
        })?;
    let lib_name = lib.name.replace('-', "_");
    let target_dir = meta.target_directory;
    let root = meta.workspace_root;
    let root_manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
    let has_plugin_profile = root_manifest
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get("profile")?.get("plugin").cloned())
        .is_some();
    let profile = if has_plugin_profile {
        "plugin"
    } else {
        "release"
    };
    run(
        Command::new("cargo")
            .args([
                "build",
                "--target",
                "wasm32-wasip2",
                "--profile",
                profile,
                "--manifest-path",
            ])
            .arg(&manifest),
        &format!("building {name}"),
        "the compiler's messages are above",
    )?;
    let wasm = target_dir
        .join("wasm32-wasip2")
        .join(profile)
        .join(format!("{lib_name}.wasm"));
    anyhow::ensure!(
        wasm.is_file(),
        "cargo built {name} but wrote no {}",
        wasm.display()
    );
    Ok((name, wasm))
}

fn build_js(dir: &Path, work: &Path) -> anyhow::Result<(String, PathBuf)> {
    let package_json = dir.join("package.json");
    let package: PackageJson = serde_json::from_str(
        &std::fs::read_to_string(&package_json)
            .with_context(|| format!("cannot read {}", package_json.display()))?,
    )
    .with_context(|| format!("{} is not JSON", package_json.display()))?;
    let name = package.name.as_str();
    // `@scope/name` -> `name`.
    let name = name.rsplit('/').next().unwrap_or(name).to_owned();
    // It names the output file: the rule of `new`, so it stays in dist/.
    super::scaffold::check_name(&name)
        .with_context(|| format!("the name in {}", package_json.display()))?;
    let entry = dir.join(package.main.as_deref().unwrap_or("src/index.js"));
    anyhow::ensure!(
        entry.is_file(),
        "{} has no entry module {} (set \"main\" in package.json)",
        dir.display(),
        entry.display()
    );
    let tools = toolchain::js()?;
    let bundle = work.join("bundle.js");
    run_quiet(
        Command::new(&tools.rolldown)
            .arg(&entry)
            .args(["-f", "esm", "-p", "neutral", "-o"])
            .arg(&bundle)
            .arg("-e")
            .arg(super::wit_imports().join(","))
            .stdout(std::process::Stdio::null()),
        &format!("bundling {}", entry.display()),
        "rolldown's messages follow",
    )?;
    // componentize-js resolves paths in its sandbox: run it in `work`.
    std::fs::copy(
        wit_dir(dir, work)?.join("symphony.wit"),
        work.join("symphony.wit"),
    )?;
    run_quiet(
        Command::new(&tools.componentize_js)
            .args(["bundle.js", "--wit", "symphony.wit", "-n", "plugin"])
            .args(["-d", "http", "-d", "fetch-event", "-o", "plugin.wasm"])
            .current_dir(work),
        &format!("componentizing {name}"),
        "componentize-js's messages follow",
    )?;
    Ok((name, work.join("plugin.wasm")))
}

/// The `// symphony-host plugin: NAME` line of `go.mod` (checked by the
/// rule of `new`: it names the output file, which must stay in `dist/`),
/// else the directory's name.
fn go_name(dir: &Path, go_mod: &str) -> anyhow::Result<String> {
    let line = go_mod
        .lines()
        .find_map(|l| l.trim().strip_prefix("// symphony-host plugin:"))
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    if let Some(name) = line {
        super::scaffold::check_name(&name)
            .context("the '// symphony-host plugin:' line of go.mod")?;
        return Ok(name);
    }
    Ok(dir
        .file_name()
        .map_or_else(|| "plugin".to_owned(), |n| n.to_string_lossy().into_owned()))
}

/// Copies the `.go` files of `from` (not tests) into `to`, and its
/// subdirectories' (packages) into `to`'s, skipping `dist`, `wit`,
/// `node_modules` and hidden ones.
fn copy_go(from: &Path, to: &Path, with_tests: bool) -> anyhow::Result<()> {
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?
    {
        let entry = entry?;
        let path = entry.path();
        let file = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !file.starts_with('.') && !matches!(file.as_str(), "dist" | "wit" | "node_modules") {
                copy_go(&path, &to.join(&file), true)?;
            }
        } else if file.ends_with(".go") && (with_tests || !file.ends_with("_test.go")) {
            std::fs::create_dir_all(to)?;
            std::fs::copy(&path, to.join(&file))
                .with_context(|| format!("cannot copy {}", path.display()))?;
        }
    }
    Ok(())
}

fn build_go(dir: &Path, work: &Path) -> anyhow::Result<(String, PathBuf)> {
    let go_mod = std::fs::read_to_string(dir.join("go.mod"))
        .with_context(|| format!("cannot read {}", dir.join("go.mod").display()))?;
    anyhow::ensure!(
        go_mod.lines().any(|l| l.trim() == "module wit_component"),
        "{}: the module must be `wit_component`, the module of the bindings \
         wit-bindgen generates (see a project made by `symphony-host new go`)",
        dir.join("go.mod").display()
    );
    let name = go_name(dir, &go_mod)?;
    let tools = toolchain::go()?;
    let wit = wit_dir(dir, work)?;
    let module = work.join("module");
    run_quiet(
        Command::new(&tools.wit_bindgen)
            .arg("go")
            .arg(&wit)
            .args(["--world", "plugin", "--quiet", "--out-dir"])
            .arg(&module),
        "generating the Go bindings",
        "wit-bindgen's messages follow",
    )?;
    // The generated go.mod requires the bindings' runtime package; it comes
    // from the wit-bindgen-go crate's source, so no Go module proxy is needed.
    let generated =
        std::fs::read_to_string(module.join("go.mod")).context("wit-bindgen wrote no go.mod")?;
    std::fs::write(
        module.join("go.mod"),
        format!(
            "{}\nreplace go.bytecodealliance.org/pkg => {}\n",
            generated.trim_end(),
            tools.go_pkg.display()
        ),
    )?;
    // The project's root package is the export package; its other packages
    // keep their paths. Without a `symphony` package of its own, the SDK
    // this binary embeds is used.
    copy_go(dir, &module.join("export_wit_world"), false)?;
    for entry in std::fs::read_dir(module.join("export_wit_world"))? {
        let entry = entry?;
        if entry.path().is_dir() {
            let to = module.join(entry.file_name());
            let _ = std::fs::remove_dir_all(&to);
            std::fs::rename(entry.path(), &to)?;
        }
    }
    if !module.join("symphony").is_dir() {
        std::fs::create_dir_all(module.join("symphony"))?;
        std::fs::write(
            module.join("symphony").join("symphony.go"),
            include_str!("../../../sdk/go/symphony.go"),
        )?;
    }
    run_quiet(
        Command::new(&tools.go)
            .args([
                "build",
                "-buildmode=c-shared",
                "-ldflags=-checklinkname=0",
                "-o",
                "core.wasm",
                ".",
            ])
            .current_dir(&module)
            .env("GOOS", "wasip1")
            .env("GOARCH", "wasm")
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local"),
        &format!("compiling {name}"),
        "Go's messages follow",
    )?;
    let embedded = work.join("embedded.wasm");
    run_quiet(
        Command::new(&tools.wasm_tools)
            .args(["component", "embed", "--world", "plugin"])
            .arg(&wit)
            .arg(module.join("core.wasm"))
            .arg("-o")
            .arg(&embedded),
        "embedding the WIT",
        "wasm-tools's messages follow",
    )?;
    let component = work.join("plugin.wasm");
    run_quiet(
        Command::new(&tools.wasm_tools)
            .args(["component", "new"])
            .arg(&embedded)
            .arg("--adapt")
            .arg(format!(
                "wasi_snapshot_preview1={}",
                tools.wasi_adapter.display()
            ))
            .arg("-o")
            .arg(&component),
        "making the component",
        "wasm-tools's messages follow",
    )?;
    Ok((name, component))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_go_project_name_is_checked_by_the_rule_of_new() {
        let dir = Path::new("/work/p/hello");
        let named = |n: &str| format!("module x\n// symphony-host plugin: {n}\n");
        assert_eq!(go_name(dir, &named("greeter")).unwrap(), "greeter");
        for bad in ["../../x", "a/b", "..", "Upper", "-x", "x y"] {
            let err = go_name(dir, &named(bad)).unwrap_err();
            assert!(
                format!("{err:#}").contains("invalid plugin name"),
                "{bad}: {err:#}"
            );
        }
        assert_eq!(go_name(dir, "module x\n").unwrap(), "hello");
    }
}
