#!/usr/bin/env bash
# Builds every plugin (examples and test fixtures) in every language to a
# WebAssembly component, installing the Go and JavaScript toolchains a fresh
# machine lacks (scripts/polyglot-tools.sh). Idempotent, and quick when
# nothing changed. Outputs:
#   plugins-example/plugins/<name>.wasm   (used by the example manifests)
#   target/plugins/<name>.wasm            (every plugin; used by the tests)
# `--rust` builds the Rust plugins only (no other toolchain needed).
# It uses its own target dir (target/wasm) so it can run while another cargo
# command holds the lock on target/ (the integration tests call it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash "$root/scripts/setup.sh" --wasm-target

rust_only=false
[ "${1:-}" = "--rust" ] && rust_only=true

# The Rust plugins: the workspace members under plugins-example/ and
# tests/plugins/ (Cargo.toml is their one list); `versioned` is built twice,
# below.
mapfile -t examples < <(bash "$root/scripts/guests.sh" plugins-example)
mapfile -t fixtures < <(bash "$root/scripts/guests.sh" tests/plugins | grep -vx versioned)
args=()
for p in "${examples[@]}" "${fixtures[@]}"; do args+=(-p "$p"); done

cargo build --locked --quiet --profile plugin --target wasm32-wasip2 \
    --target-dir "$root/target/wasm" "${args[@]}"

out="$root/target/wasm/wasm32-wasip2/plugin"
mkdir -p "$root/target/plugins" "$root/plugins-example/plugins"
for p in "${examples[@]}" "${fixtures[@]}"; do
    cp -p "$out/$p.wasm" "$root/target/plugins/$p.wasm"
done
for p in "${examples[@]}"; do
    cp -p "$out/$p.wasm" "$root/plugins-example/plugins/$p.wasm"
done

# The hot-reload test's plugin, in two versions.
for v in v1 v2; do
    features=()
    [ "$v" = v2 ] && features=(--features v2)
    cargo build --locked --quiet --profile plugin --target wasm32-wasip2 \
        --target-dir "$root/target/wasm" -p versioned "${features[@]}"
    cp -p "$out/versioned.wasm" "$root/target/plugins/versioned-$v.wasm"
done
if $rust_only; then
    echo "build-plugins: the Rust plugins are in target/plugins" >&2
    exit 0
fi

eval "$(bash "$root/scripts/polyglot-tools.sh")"

# True when $1 is missing or older than any of the other files.
stale() {
    local out="$1"; shift
    [ -f "$out" ] || return 0
    for f in "$@"; do [ "$f" -nt "$out" ] && return 0; done
    return 1
}

# JavaScript: bundle the module with the SDK helpers, then componentize.
# The host's imports stay imports: every `import` of the WIT's world.
wit="$root/wit/symphony.wit"
read -r wit_pkg wit_version < <(sed -n 's/^package \([^@]*\)@\(.*\);$/\1 \2/p' "$wit")
externals=""
for i in $(sed -n 's/^ *import \([a-z-]*\);$/\1/p' "$wit"); do
    externals+="$wit_pkg/$i@$wit_version,"
done
build_js() { # source.js out.wasm
    local src="$1" out="$2"
    stale "$out" "$src" "$root/sdk/js/symphony.js" "$root/wit/symphony.wit" || return 0
    local tmp
    tmp="$(mktemp -d)"
    "$ROLLDOWN" "$src" -f esm -p neutral -o "$tmp/bundle.js" -e "${externals%,}" >/dev/null
    # componentize-js resolves paths inside its sandbox: run it from the bundle's dir.
    cp "$root/wit/symphony.wit" "$tmp/symphony.wit"
    (cd "$tmp" && "$COMPONENTIZE_JS" bundle.js --wit symphony.wit -n plugin \
        -d http -d fetch-event -o plugin.wasm >/dev/null)
    mv "$tmp/plugin.wasm" "$out"
    rm -rf "$tmp"
    echo "build-plugins: built $out" >&2
}
build_js "$root/tests/plugins/poly-js/poly.js" "$root/target/plugins/poly-js.wasm"
build_js "$root/plugins-example/welcome-js/welcome.js" "$root/plugins-example/plugins/welcome-js.wasm"

# Go: generate the bindings (wit-bindgen go), add the SDK package and the
# plugin's package (export_wit_world), build for wasip1 as a reactor, then
# embed the WIT and adapt WASI preview1 to make it a component. The Go
# runtime module of the bindings comes from the wit-bindgen-go crate, so no
# Go module proxy is needed.
build_go() { # plugin-dir out.wasm
    local dir="$1" out="$2"
    stale "$out" "$dir"/*.go "$root"/sdk/go/*.go "$root/wit/symphony.wit" || return 0
    local tmp
    tmp="$(mktemp -d)"
    "$WIT_BINDGEN" go "$root/wit" --world plugin --out-dir "$tmp" --quiet >"$tmp/bindgen.log" 2>&1 || { cat "$tmp/bindgen.log" >&2; exit 1; }
    printf 'module wit_component\n\ngo 1.25\n\nrequire go.bytecodealliance.org/pkg v0.4.0\n\nreplace go.bytecodealliance.org/pkg => %s\n' \
        "$WIT_BINDGEN_GO_PKG/src/pkg" > "$tmp/go.mod"
    mkdir -p "$tmp/symphony" "$tmp/export_wit_world"
    cp "$root"/sdk/go/*.go "$tmp/symphony/"
    cp "$dir"/*.go "$tmp/export_wit_world/"
    (cd "$tmp" && GOOS=wasip1 GOARCH=wasm GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local \
        "$GO" build -buildmode=c-shared -ldflags=-checklinkname=0 -o core.wasm .)
    "$WASM_TOOLS" component embed --world plugin "$root/wit" "$tmp/core.wasm" -o "$tmp/embedded.wasm"
    "$WASM_TOOLS" component new "$tmp/embedded.wasm" \
        --adapt "wasi_snapshot_preview1=$WASI_ADAPTER" -o "$out"
    rm -rf "$tmp"
    echo "build-plugins: built $out" >&2
}
build_go "$root/tests/plugins/poly-go" "$root/target/plugins/poly-go.wasm"
build_go "$root/plugins-example/counter-go" "$root/plugins-example/plugins/counter-go.wasm"
# The Go SDK's documented example: built so the docs' code always compiles.
build_go "$root/sdk/go/example" "$root/target/plugins/go-example.wasm"

echo "build-plugins: every plugin is in target/plugins and plugins-example/plugins" >&2
