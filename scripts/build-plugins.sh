#!/usr/bin/env bash
# Builds every Rust plugin (examples and test fixtures) to a WebAssembly
# component. Idempotent and quick when nothing changed (cargo's own
# incremental check). Outputs:
#   plugins-example/plugins/<name>.wasm   (used by plugins-example/manifest.toml)
#   target/plugins/<name>.wasm            (every plugin; used by the tests)
# It uses its own target dir (target/wasm) so it can run while another cargo
# command holds the lock on target/ (the integration tests call it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "build-plugins: installing the wasm32-wasip2 target" >&2
    rustup target add wasm32-wasip2 >&2
fi

examples=(reminder audit batcher)
fixtures=(recorder driver hostile)
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
echo "build-plugins: $(( ${#examples[@]} + ${#fixtures[@]} + 2 )) plugins in target/plugins" >&2
