#!/usr/bin/env bash
# Installs what a fresh machine lacks for building and testing symphony-host:
# the wasm32-wasip2 Rust target and redis-server. Idempotent; prints nothing
# and takes well under a second when everything is already there.
# `--wasm-target`: the Rust target only (what building plugins needs).
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
