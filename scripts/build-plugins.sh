#!/usr/bin/env bash
# Builds every plugin (examples and test fixtures) in every language to a
# WebAssembly component. Idempotent, and quick when nothing changed.
# Outputs:
#   plugins-example/plugins/<name>.wasm   (used by the example manifests)
#   target/plugins/<name>.wasm            (every plugin; used by the tests)
# `--rust` builds the Rust plugins only (no other toolchain needed).
#
# Every example, and every JavaScript and Go fixture, is a plugin project
# built by `symphony-host build` (which installs the Go and JavaScript
# toolchains on first use); the Rust test fixtures, workspace members, are
# built in one cargo call. The host binary is $SYMPHONY_HOST_BIN (the
# integration tests pass theirs), else the debug build, made here.
# Cargo builds the guests in their own target dir (target/wasm), so this can
# run while another cargo command holds the lock on target/ (the
# integration tests call it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash "$root/scripts/setup.sh" --wasm-target

rust_only=false
[ "${1:-}" = "--rust" ] && rust_only=true

host="${SYMPHONY_HOST_BIN:-}"
if [ -z "$host" ]; then
    cargo build --locked --quiet -p symphony-host
    host="$root/target/debug/symphony-host"
fi
export CARGO_TARGET_DIR="$root/target/wasm"
mkdir -p "$root/target/plugins" "$root/plugins-example/plugins"

# Builds project $1 to $2 (quietly: the host logs only what it installs).
build() {
    RUST_LOG=warn,symphony_host::author=info "$host" build "$1" --out "$2" >/dev/null
}

# The Rust examples: workspace members under plugins-example/ (Cargo.toml
# is their one list), each a plugin project.
mapfile -t examples < <(bash "$root/scripts/guests.sh" plugins-example)
for p in "${examples[@]}"; do
    build "$root/plugins-example/$p" "$root/plugins-example/plugins/$p.wasm"
    cp -p "$root/plugins-example/plugins/$p.wasm" "$root/target/plugins/$p.wasm"
done

# The Rust test fixtures under tests/plugins/, in one cargo call; `versioned`
# is built twice, below.
mapfile -t fixtures < <(bash "$root/scripts/guests.sh" tests/plugins | grep -vx versioned)
args=()
for p in "${fixtures[@]}"; do args+=(-p "$p"); done
cargo build --locked --quiet --profile plugin --target wasm32-wasip2 "${args[@]}"
out="$CARGO_TARGET_DIR/wasm32-wasip2/plugin"
for p in "${fixtures[@]}"; do
    cp -p "$out/$p.wasm" "$root/target/plugins/$p.wasm"
done

# The hot-reload test's plugin, in two versions.
for v in v1 v2; do
    features=()
    [ "$v" = v2 ] && features=(--features v2)
    cargo build --locked --quiet --profile plugin --target wasm32-wasip2 -p versioned "${features[@]}"
    cp -p "$out/versioned.wasm" "$root/target/plugins/versioned-$v.wasm"
done
if $rust_only; then
    echo "build-plugins: the Rust plugins are in target/plugins" >&2
    exit 0
fi

# True when $1 is missing or older than any file under the other paths.
stale() {
    local out="$1"; shift
    [ -f "$out" ] || return 0
    [ -n "$(find "$@" -newer "$out" -type f -not -path '*/dist/*' -print -quit)" ]
}
polyglot() { # project out.wasm [copy-to]
    local dir="$1" wasm="$2"
    if stale "$wasm" "$dir" "$root/sdk/js" "$root/sdk/go" "$root/wit"; then
        build "$dir" "$wasm"
        echo "build-plugins: built $wasm" >&2
    fi
}
polyglot "$root/plugins-example/welcome-js" "$root/plugins-example/plugins/welcome-js.wasm"
polyglot "$root/plugins-example/counter-go" "$root/plugins-example/plugins/counter-go.wasm"
polyglot "$root/tests/plugins/poly-js" "$root/target/plugins/poly-js.wasm"
polyglot "$root/tests/plugins/poly-go" "$root/target/plugins/poly-go.wasm"
# The Go SDK's documented example: built so the docs' code always compiles.
polyglot "$root/sdk/go/example" "$root/target/plugins/go-example.wasm"

echo "build-plugins: every plugin is in target/plugins and plugins-example/plugins" >&2
