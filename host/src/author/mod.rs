//! The plugin author's workflow: `symphony-host new`, `build` and `invoke`.
//!
//! - [`scaffold`]: a plugin project in Rust, JavaScript or Go, in its own
//!   directory, from templates and the WIT embedded in this binary.
//! - [`build`](mod@build): builds such a project into a component with the
//!   language's own toolchain, which [`toolchain`] installs at pinned
//!   versions, once per machine.
//! - [`invoke`](mod@invoke): runs the plugin that owns an action once,
//!   against real data (or a throwaway copy of the tenant's), and reports
//!   its outcome and every Redis command its host calls made.

pub mod build;
pub mod invoke;
pub mod scaffold;
pub mod toolchain;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// The WIT this binary's host speaks: written into every new project, and
/// the one projects are built against.
pub const WIT: &str = include_str!("../../../wit/symphony.wit");

/// A plugin project's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Rust, with the symphony SDK crate, built with cargo for `wasm32-wasip2`.
    Rust,
    /// JavaScript, bundled with the SDK helpers and componentized.
    Js,
    /// Go, with wit-bindgen's Go bindings, built for wasip1 and adapted.
    Go,
}

impl Language {
    /// Every language, in the order `new` lists them.
    pub const ALL: [Language; 3] = [Language::Rust, Language::Js, Language::Go];

    /// The name on the command line: `rust`, `js` or `go`.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Js => "js",
            Language::Go => "go",
        }
    }

    /// The file that marks a project of this language.
    pub fn marker(self) -> &'static str {
        match self {
            Language::Rust => "Cargo.toml",
            Language::Js => "package.json",
            Language::Go => "go.mod",
        }
    }

    /// The language of the project in `dir`, by its marker file.
    ///
    /// # Errors
    /// When `dir` holds none of the markers, or more than one.
    pub fn of_project(dir: &Path) -> anyhow::Result<Language> {
        let found: Vec<Language> = Language::ALL
            .into_iter()
            .filter(|l| dir.join(l.marker()).is_file())
            .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => anyhow::bail!(
                "{} is not a plugin project: it has no Cargo.toml (Rust), package.json \
                 (JavaScript) or go.mod (Go); `symphony-host new` makes one",
                dir.display()
            ),
            _ => anyhow::bail!(
                "{} has more than one of Cargo.toml, package.json and go.mod: \
                 cannot tell which language to build",
                dir.display()
            ),
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Language {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "rust" | "rs" => Ok(Language::Rust),
            "js" | "javascript" => Ok(Language::Js),
            "go" | "golang" => Ok(Language::Go),
            _ => Err(format!("unknown language {s:?}: use rust, js or go")),
        }
    }
}

/// The WIT package and version (`symphony:plugin`, `0.1.0`), from [`WIT`].
pub fn wit_package() -> (&'static str, &'static str) {
    WIT.lines()
        .find_map(|l| l.trim().strip_prefix("package ")?.strip_suffix(';'))
        .and_then(|p| p.split_once('@'))
        .unwrap_or(("symphony:plugin", "0.1.0"))
}

/// The interfaces the `plugin` world imports, from [`WIT`]
/// (`symphony:plugin/log@0.1.0`, ...): what a JavaScript bundle keeps as
/// imports.
pub fn wit_imports() -> Vec<String> {
    let (package, version) = wit_package();
    WIT.lines()
        .filter_map(|l| l.trim().strip_prefix("import ")?.strip_suffix(';'))
        .map(|i| format!("{package}/{i}@{version}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_wit_names_its_package_and_imports() {
        assert_eq!(wit_package(), ("symphony:plugin", "0.1.0"));
        let imports = wit_imports();
        assert!(
            imports.contains(&"symphony:plugin/log@0.1.0".to_owned()),
            "{imports:?}"
        );
        assert!(
            imports.contains(&"symphony:plugin/trigger@0.1.0".to_owned()),
            "{imports:?}"
        );
        assert_eq!(imports.len(), 10, "{imports:?}");
    }

    #[test]
    fn languages_parse_and_unknown_ones_are_refused() {
        assert_eq!("JS".parse::<Language>(), Ok(Language::Js));
        assert_eq!("golang".parse::<Language>(), Ok(Language::Go));
        let err = "cobol".parse::<Language>().unwrap_err();
        assert!(err.contains("use rust, js or go"), "{err}");
    }
}
