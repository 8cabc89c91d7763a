#!/usr/bin/env bash
# Installs what a fresh machine lacks for building and testing symphony-host:
# the wasm32-wasip2 Rust target, redis-server, and for the dashboard's
# browser tests Chromium, ChromeDriver and playwright-core. Idempotent;
# prints nothing and takes well under a second when everything is there.
# `--wasm-target`: the Rust target only (what building plugins needs).
# `--no-browser`: everything but the browser tests' tools.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is missing; install Rust (https://rustup.rs) first" >&2
    exit 1
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 target" >&2
    rustup target add wasm32-wasip2 >&2
fi
[ "${1:-}" = "--wasm-target" ] && exit 0

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "setup: installing redis-server" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if command -v apt-get >/dev/null 2>&1; then
        $sudo apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >&2
    elif command -v brew >/dev/null 2>&1; then
        brew install redis >&2
    else
        echo "setup: install redis-server (7.0 or newer) with your package manager" >&2
        exit 1
    fi
fi

# The dashboard's browser tests: Debian's Chromium and ChromeDriver, and
# playwright-core (pinned in tests/browser/package-lock.json) to drive it.
# `--no-browser` skips this (the demo does not need it).
[ "${1:-}" = "--no-browser" ] && exit 0
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    echo "setup: installing chromium and chromium-driver (browser tests)" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if command -v apt-get >/dev/null 2>&1; then
        $sudo apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >&2
    else
        echo "setup: install Chromium and ChromeDriver (the browser tests use /usr/bin/chromium, or \$CHROMIUM)" >&2
        exit 1
    fi
fi
browser_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/browser"
want="$(sed -n 's/.*"playwright-core": "\([^"]*\)".*/\1/p' "$browser_dir/package.json")"
have=""
installed="$browser_dir/node_modules/playwright-core/package.json"
if [ -f "$installed" ]; then
    have="$(sed -n 's/.*"version": "\([^"]*\)".*/\1/p' "$installed" | head -1)"
fi
if [ "$want" != "$have" ]; then
    echo "setup: installing playwright-core $want (browser tests)" >&2
    (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
