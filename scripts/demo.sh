#!/usr/bin/env bash
# Sets everything up and runs the example plugins (plugins-example/manifest.toml):
# installs what is missing, builds the host and the plugins, finds a Redis
# (SYMPHONY_REDIS_URL, else 127.0.0.1:6379, else starts a private
# redis-server), starts the host and schedules a reminder so you see a
# trigger fire. Ctrl-C stops it.
#
#   scripts/demo.sh           run until Ctrl-C
#   scripts/demo.sh --smoke   always use a private redis-server and exit 0 once
#                             the reminder and its follow-up have run (CI uses this)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

smoke=false
[ "${1:-}" = "--smoke" ] && smoke=true

bash scripts/setup.sh --no-browser
echo "demo: building symphony-host and the plugins (the first build takes a few minutes)" >&2
cargo build --locked --quiet -p symphony-host
bash scripts/build-plugins.sh --rust
host="$root/target/debug/symphony-host"

work="$(mktemp -d)"
redis_pid=""
host_pid=""
cleanup() {
    [ -n "$host_pid" ] && kill "$host_pid" 2>/dev/null && wait "$host_pid" 2>/dev/null || true
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

url="${SYMPHONY_REDIS_URL:-}"
if [ -z "$url" ] && ! $smoke && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    url="redis://127.0.0.1:6379"
fi
if [ -z "$url" ]; then
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$work" --logfile "$work/redis.log" &
    redis_pid=$!
    for _ in $(seq 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.05
    done
    url="redis://127.0.0.1:$port"
    echo "demo: started a private redis-server on $url" >&2
else
    echo "demo: using the Redis at $url" >&2
fi
export SYMPHONY_REDIS_URL="$url"

log="$work/host.log"
if $smoke; then
    # A free port for the admin server: a smoke run must not need 9464.
    SYMPHONY_ADMIN_LISTEN=127.0.0.1:0 \
        "$host" --log-format json run plugins-example/manifest.toml 2>"$log" &
else
    "$host" run plugins-example/manifest.toml 2> >(tee "$log" >&2) &
fi
host_pid=$!

# Whether a line of the log matches every pattern given (in any order).
logged() {
    local lines
    lines="$(cat "$log" 2>/dev/null)"
    for p in "$@"; do
        lines="$(grep -F -- "$p" <<<"$lines")" || return 1
    done
}

wait_for() { # patterns..., seconds (the last argument)
    local secs="${*: -1}"
    local patterns=("${@:1:$#-1}")
    for _ in $(seq $(( secs * 20 ))); do
        logged "${patterns[@]}" && return 0
        kill -0 "$host_pid" 2>/dev/null || { cat "$log" >&2; echo "demo: the host exited" >&2; return 1; }
        sleep 0.05
    done
    cat "$log" >&2
    echo "demo: timed out waiting for a line with: ${patterns[*]}" >&2
    return 1
}

wait_for "listening for expiries" 60
"$host" trigger set acme send_reminder demo_user --ttl 1s
echo "demo: scheduled acme:EXPTRIGGER:send_reminder:demo_user; it fires in about 1 s and schedules a follow-up 2 s later" >&2

if $smoke; then
    wait_for '"event":"dispatch"' '"action":"send_reminder"' '"outcome":"ok"' 10
    wait_for '"event":"dispatch"' '"action":"followup_reminder"' '"outcome":"ok"' 10
    grep -F '"event":"dispatch"' "$log"
    kill -TERM "$host_pid"
    wait "$host_pid"
    host_pid=""
    echo "demo: ok" >&2
    exit 0
fi

echo "demo: the host runs until Ctrl-C. Try, in another shell:" >&2
echo "  curl -s http://127.0.0.1:9464/metrics | grep ^symphony_dispatches   # docs/admin.md" >&2
echo "  SYMPHONY_REDIS_URL=$url $host trigger set acme send_reminder someone --ttl 3s" >&2
echo "  redis-cli -u $url/8 SETEX acme:EXPTRIGGER:account_closed:someone 1 \"\"" >&2
wait "$host_pid"
