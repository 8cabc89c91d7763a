#!/usr/bin/env bash
# Prints the workspace's Rust guest packages under each folder given
# (e.g. `plugins-example`, `tests/plugins`, `sdk`), one name per line:
# the workspace members in Cargo.toml are the one list of them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo metadata --no-deps --format-version 1 --locked --manifest-path "$root/Cargo.toml" \
    | python3 -c '
import json, os, sys
root, dirs = sys.argv[1], sys.argv[2:]
for p in json.load(sys.stdin)["packages"]:
    rel = os.path.relpath(os.path.dirname(p["manifest_path"]), root)
    if any(rel == d or rel.startswith(d + "/") for d in dirs):
        print(p["name"])
' "$root" "$@"
