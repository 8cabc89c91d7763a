//! Compiled plugins on disk, mapped into memory rather than read into it.
//!
//! A plugin is compiled once per content and engine: the compiled component
//! (`Component::serialize`) is written to `{dir}/{sha256 of the wasm}-{engine}.cwasm`
//! and every later load maps that file (`Component::deserialize_file`). Its
//! machine code and data images then stay file-backed: pages are read in as
//! jobs touch them, shared between hosts on the machine, and dropped by the
//! kernel under memory pressure, instead of being decompressed onto the
//! heap (wasmtime's own cache stores compressed artifacts).
//!
//! Files are written to a temporary name and renamed into place, so a file
//! at its final name is complete and never written again; a reader maps a
//! whole file. Artifacts not used for [`PRUNE_AFTER`] are removed when a new
//! one is written.

use std::hash::{Hash as _, Hasher as _};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Artifacts unused for this long are removed when a new one is written.
pub const PRUNE_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

/// The extension of compiled artifacts (others in the directory are left alone).
const EXTENSION: &str = "cwasm";

/// A directory of compiled plugins for one engine configuration.
pub struct Artifacts {
    dir: PathBuf,
    /// Names the engine's configuration and wasmtime's version, so hosts
    /// built differently never map each other's artifacts.
    engine: String,
}

impl Artifacts {
    /// The artifacts of `engine` in `dir` (created if missing).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(dir: PathBuf, engine: &Engine) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create cache directory {}", dir.display()))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir,
            engine: format!("{:016x}", hasher.finish()),
        })
    }

    /// Where the artifact of the wasm whose SHA-256 is `sha256` lives.
    fn path_of(&self, sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256}-{}.{EXTENSION}", self.engine))
    }

    /// The compiled component for `bytes` (whose SHA-256 in hex is
    /// `sha256`): mapped from its artifact, after compiling and writing it
    /// when there is none (or it cannot be used).
    ///
    /// # Errors
    /// Compilation errors are returned as they are (the caller names the
    /// plugin); a cache that cannot be written is not an error: the
    /// component compiled in memory is returned, and a warning logged.
    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> wasmtime::Result<Component> {
        let path = self.path_of(sha256);
        if path.exists() {
            match map(engine, &path) {
                Ok(component) => {
                    // Its last use, for pruning (best effort).
                    let _ = std::fs::File::options()
                        .append(true)
                        .open(&path)
                        .and_then(|f| f.set_modified(SystemTime::now()));
                    return Ok(component);
                }
                Err(e) => tracing::warn!(
                    event = "artifact_unusable",
                    path = %path.display(),
                    error = %format!("{e:#}"),
                    "a compiled plugin in the cache cannot be used; compiling again"
                ),
            }
        }
        let component = Component::from_binary(engine, bytes)?;
        match self.write(&component, &path) {
            // Map what was written, so even the first load is file-backed.
            Ok(()) => Ok(map(engine, &path).unwrap_or(component)),
            Err(e) => {
                tracing::warn!(
                    event = "artifact_unwritten",
                    path = %path.display(),
                    error = %format!("{e:#}"),
                    "cannot write a compiled plugin to the cache; it is compiled again at the next start"
                );
                Ok(component)
            }
        }
    }

    /// Writes `component`'s artifact to `path` (through a temporary file
    /// renamed into place), then prunes unused ones.
    fn write(&self, component: &Component, path: &Path) -> anyhow::Result<()> {
        let serialized = component
            .serialize()
            .map_err(anyhow::Error::from)
            .context("cannot serialize the compiled component")?;
        let mut temp = tempfile::NamedTempFile::new_in(&self.dir)
            .with_context(|| format!("cannot create a file in {}", self.dir.display()))?;
        temp.write_all(&serialized)
            .and_then(|()| temp.as_file().sync_all())
            .context("cannot write the compiled component")?;
        temp.persist(path).with_context(|| {
            format!("cannot rename the compiled component to {}", path.display())
        })?;
        self.prune(path);
        Ok(())
    }

    /// Removes artifacts unused for [`PRUNE_AFTER`] (a mapped file stays
    /// valid for whoever maps it after it is unlinked).
    fn prune(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let path = entry.path();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| now.duration_since(m).unwrap_or_default() > PRUNE_AFTER);
            if old && path != keep && path.extension().is_some_and(|e| e == EXTENSION) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Maps the artifact at `path`.
#[allow(unsafe_code)]
fn map(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize_file` trusts the file to be the output of
    // `Component::serialize` (it checks wasmtime's version and the engine's
    // settings, not the code) and to stay unchanged while mapped. Only
    // `Artifacts::write` writes files under these names, in the host's own
    // cache directory: each is written whole under a temporary name, then
    // renamed into place, and never written again (a new version of a
    // plugin has another name). The cache directory is as trusted as the
    // host binary (`docs/security.md`).
    unsafe { Component::deserialize_file(engine, path) }
}

#[cfg(test)]
mod tests {
    use super::Artifacts;

    /// The first load writes the artifact; a later one maps it; an artifact
    /// that is not one (a torn write by an older build, a disk error) is
    /// compiled again and replaced, not an error.
    #[test]
    fn artifacts_are_written_mapped_and_replaced_when_unusable() {
        let engine = wasmtime::Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::new(dir.path().join("compiled"), &engine).unwrap();
        let wasm = wat::parse_str("(component (core module))").unwrap();
        artifacts.component(&engine, &wasm, "c0ffee").unwrap();
        let path = artifacts.path_of("c0ffee");
        let written = std::fs::read(&path).unwrap();
        assert!(written.len() > 100, "no artifact at {}", path.display());

        artifacts.component(&engine, &wasm, "c0ffee").unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            written,
            "a mapped artifact was rewritten"
        );

        std::fs::write(&path, b"not an artifact").unwrap();
        artifacts.component(&engine, &wasm, "c0ffee").unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            written,
            "the unusable artifact was not replaced"
        );
    }
}
