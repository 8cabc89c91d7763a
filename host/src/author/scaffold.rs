//! `symphony-host new`: a plugin project in its own directory, from the
//! templates and the WIT embedded in this binary (`host/templates/`).
//!
//! Every project holds the WIT it builds against, the SDK of its language
//! (written from this binary, so it matches that WIT), a handler that makes
//! one repository call and logs the action and id, a test of its logic that
//! the language's own runner runs, a `README.md` and a `symphony.toml`
//! manifest that runs it. Nothing is written unless every check passed; a
//! failure while writing removes what was written.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{Language, WIT};
use crate::author::toolchain::{COMPONENTIZE_JS_VERSION, WIT_BINDGEN_VERSION};

/// One file of a template: its path in the project and its text, with
/// `{{name}}` and the versions still to fill in.
struct Template {
    path: &'static str,
    text: &'static str,
}

macro_rules! template {
    ($path:literal, $file:literal) => {
        Template {
            path: $path,
            text: include_str!(concat!("../../templates/", $file)),
        }
    };
}

const RUST: &[Template] = &[
    template!("Cargo.toml", "rust/Cargo.toml"),
    template!("src/lib.rs", "rust/src/lib.rs"),
    template!("README.md", "rust/README.md"),
    template!(".gitignore", "rust/gitignore"),
    template!("sdk/rust/Cargo.toml", "rust/sdk.Cargo.toml"),
    Template {
        path: "sdk/rust/src/lib.rs",
        text: include_str!("../../../sdk/rust/src/lib.rs"),
    },
];

const JS: &[Template] = &[
    template!("package.json", "js/package.json"),
    template!("src/index.js", "js/src/index.js"),
    template!("src/logic.js", "js/src/logic.js"),
    template!("test/logic.test.js", "js/test/logic.test.js"),
    template!("jsconfig.json", "js/jsconfig.json"),
    template!("README.md", "js/README.md"),
    template!(".gitignore", "js/gitignore"),
    Template {
        path: "symphony/symphony.js",
        text: include_str!("../../../sdk/js/symphony.js"),
    },
    Template {
        path: "symphony/symphony.d.ts",
        text: include_str!("../../../sdk/js/symphony.d.ts"),
    },
];

const GO: &[Template] = &[
    template!("go.mod", "go/go.mod"),
    template!("main.go", "go/main.go"),
    template!("logic/logic.go", "go/logic/logic.go"),
    template!("logic/logic_test.go", "go/logic/logic_test.go"),
    template!("README.md", "go/README.md"),
    template!(".gitignore", "go/gitignore"),
    Template {
        path: "symphony/symphony.go",
        text: include_str!("../../../sdk/go/symphony.go"),
    },
];

/// Files every project has, whatever its language.
const COMMON: &[Template] = &[template!("symphony.toml", "symphony.toml")];

/// A project that [`new_project`] wrote.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NewProject {
    /// Its directory.
    pub dir: PathBuf,
    /// The files written, relative to `dir`, in order.
    pub files: Vec<PathBuf>,
}

/// Checks a project name: it names the plugin in the manifest, the Rust
/// crate or npm package, the output file and the action prefix
/// (`{name}_`), so it is 1 to 64 lowercase letters, digits, `-` or `_`,
/// starting with a letter.
///
/// # Errors
/// The rule, when `name` breaks it.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !starts_with_letter || !rest_ok || name.len() > 64 {
        anyhow::bail!(
            "invalid plugin name {name:?}: use 1 to 64 lowercase letters, digits, '-' or '_', \
             starting with a letter (it names the plugin, its package and its action prefix; \
             use --dir to choose where the project goes)"
        );
    }
    Ok(())
}

/// The project's files, with the name and versions filled in.
fn render(language: Language, name: &str) -> Vec<(PathBuf, String)> {
    let files = match language {
        Language::Rust => RUST,
        Language::Js => JS,
        Language::Go => GO,
    };
    let sdk_version = env!("CARGO_PKG_VERSION");
    let mut out: Vec<(PathBuf, String)> = files
        .iter()
        .chain(COMMON)
        .map(|t| {
            let text = t
                .text
                .replace("{{name}}", name)
                .replace("{{sdk_version}}", sdk_version)
                .replace("{{wit_bindgen_version}}", WIT_BINDGEN_VERSION)
                .replace("{{componentize_js_version}}", COMPONENTIZE_JS_VERSION);
            (PathBuf::from(t.path), text)
        })
        .collect();
    // The SDK's bindings are generated from `../../wit` (Rust), the bundle's
    // imports and the Go bindings from `wit/`: the WIT goes in one place.
    out.push((PathBuf::from("wit/symphony.wit"), WIT.to_owned()));
    out
}

/// Creates a `language` project named `name` in `dir` (default `./{name}`),
/// which must not exist or be an empty directory.
///
/// # Errors
/// A bad name, a `dir` that is a file or a directory with files in it
/// (nothing written then), or a failure to write (what was written is
/// removed).
pub fn new_project(
    language: Language,
    name: &str,
    dir: Option<&Path>,
) -> anyhow::Result<NewProject> {
    check_name(name)?;
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_owned);
    let existed = match std::fs::read_dir(&dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                anyhow::bail!(
                    "{} already exists and is not empty: nothing was written (choose another \
                     name or --dir)",
                    dir.display()
                );
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) if dir.exists() => anyhow::bail!(
            "{} exists and is not a directory I can read ({e}): nothing was written",
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let files = render(language, name);
    let write = || -> anyhow::Result<()> {
        for (path, text) in &files {
            let path = dir.join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    };
    if let Err(e) = write() {
        // Leave the directory as it was: gone, or empty.
        if existed {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    let _ = std::fs::remove_dir_all(entry.path())
                        .or_else(|_| std::fs::remove_file(entry.path()));
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return Err(e.context("nothing was kept"));
    }
    Ok(NewProject {
        dir,
        files: files.into_iter().map(|(p, _)| p).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["hello", "a", "my-plugin_2"] {
            check_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "../x",
            "Hello",
            "1st",
            "a b",
            "a/b",
            "é",
            &"a".repeat(65),
        ] {
            let err = check_name(bad).expect_err(bad).to_string();
            assert!(err.contains("invalid plugin name"), "{err}");
        }
    }

    #[test]
    fn every_template_is_filled_in() {
        for language in Language::ALL {
            let files = render(language, "hello");
            assert!(
                files.iter().any(|(p, _)| p == Path::new(language.marker())),
                "{language}: no marker"
            );
            for (path, text) in &files {
                assert!(
                    !text.contains("{{"),
                    "{language} {}: a placeholder is left",
                    path.display()
                );
            }
        }
    }
}
